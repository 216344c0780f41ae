"""Small helpers shared across the package."""

from __future__ import annotations

from .files import atomic_write, read_json, write_json

__all__ = ["atomic_write", "read_json", "write_json"]
