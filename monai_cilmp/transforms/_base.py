"""The shared body of this package's dictionary transforms."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import NdarrayOrTensor
from monai.transforms import MapTransform

__all__ = ["KeysTransform"]


class KeysTransform(MapTransform):
    """Apply the array transform ``self.transform`` to every key."""

    transform: Any

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d
