"""Networks: CILMP and (later) the baselines it is compared with."""

from __future__ import annotations

from .cilmp import CILMP

__all__ = ["CILMP"]
