"""Leaving out library log messages that say nothing true about our own calls (e.g. MONAI's warning about trusting a
config, for the configs this package ships)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["drop_log_messages"]


class _DropPrefixes(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


@contextmanager
def drop_log_messages(logger: str, *prefixes: str) -> Iterator[None]:
    """Within the block, records of ``logger`` (``""``: the root logger) whose message starts with one of
    ``prefixes`` are dropped; every other record goes through."""
    target = logging.getLogger(logger or None)
    dropping = _DropPrefixes(tuple(prefixes))
    target.addFilter(dropping)
    try:
        yield
    finally:
        target.removeFilter(dropping)
