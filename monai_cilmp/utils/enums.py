"""String enumerations that need no heavy import (MONAI's ``StrEnum`` pulls in torch, and command-line ``--help``
must answer at once)."""

from __future__ import annotations

from enum import Enum

__all__ = ["StrEnum"]


class StrEnum(str, Enum):
    """An ``Enum`` of strings whose ``str()`` is its value, like ``monai.utils.StrEnum`` (``look_up_option`` takes
    either)."""

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return self.value
