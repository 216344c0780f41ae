"""Small utilities shared across the package."""

from __future__ import annotations

from .memory import release_cpu_memory

__all__ = ["release_cpu_memory"]
