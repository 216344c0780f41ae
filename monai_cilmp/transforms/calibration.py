"""Post-processing of a run's class logits: its calibrated probabilities and conformal prediction sets.

These are the post transforms of the bundle's ``inference.json``: a network's ``pred`` (logits ``(C,)`` of one
decollated image) becomes ``softmax(logits / T)`` with the run's temperature ``T``, and, when the run has a conformal
calibration (``calibration.json``, written by ``evaluate``), its prediction set becomes a ``(C,)`` boolean item.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, Protocol

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

__all__ = [
    "CalibratedProbabilities",
    "CalibratedProbabilitiesD",
    "CalibratedProbabilitiesDict",
    "CalibratedProbabilitiesd",
]


class _Calibration(Protocol):
    """What :class:`~monai_cilmp.engines.RunCalibration` offers (``None`` stands for plain softmax)."""

    def probabilities(self, logits: Any) -> np.ndarray: ...

    def prediction_sets(self, probabilities: Any) -> np.ndarray | None: ...


class CalibratedProbabilities(Transform):
    """Class logits ``(C,)`` (or ``(N, C)``) to calibrated probabilities, float32, on the input's device.

    Args:
        calibration: a :class:`~monai_cilmp.engines.RunCalibration` (its temperature), or ``None`` for the plain
            softmax.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, calibration: _Calibration | None = None) -> None:
        self.calibration = calibration

    def __call__(self, logits: NdarrayOrTensor) -> torch.Tensor:
        scores = torch.as_tensor(logits).detach().float()
        if self.calibration is None:
            return torch.softmax(scores, dim=-1)
        probabilities = self.calibration.probabilities(scores.cpu().numpy())
        return torch.as_tensor(probabilities, dtype=torch.float32, device=scores.device)

    def prediction_set(self, probabilities: NdarrayOrTensor) -> torch.Tensor | None:
        """The conformal prediction set of calibrated ``probabilities`` ``(C,)`` as a ``(C,)`` boolean tensor, or
        ``None`` when the calibration has no conformal fit."""
        if self.calibration is None:
            return None
        row = torch.as_tensor(probabilities).detach().cpu().double().numpy()
        sets = self.calibration.prediction_sets(row.reshape(1, -1) if row.ndim == 1 else row)
        if sets is None:
            return None
        return torch.as_tensor(np.asarray(sets, dtype=bool).reshape(row.shape))


class CalibratedProbabilitiesd(MapTransform):
    """Dictionary version of :class:`CalibratedProbabilities`; also stores the conformal prediction set.

    Args:
        keys: the logits (usually ``"pred"``), replaced by the calibrated probabilities.
        calibration: see :class:`CalibratedProbabilities`.
        set_key: where each key's prediction set goes (a ``(C,)`` boolean tensor), when the calibration has a
            conformal fit; with several keys, ``"<key>_<set_key>"``.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    backend = CalibratedProbabilities.backend

    def __init__(
        self,
        keys: KeysCollection,
        calibration: _Calibration | None = None,
        set_key: str = "prediction_set",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = CalibratedProbabilities(calibration)
        self.set_key = set_key

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, Any]:
        d = dict(data)
        several = len(self.keys) > 1
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
            members = self.transform.prediction_set(d[key])
            if members is not None:
                d[f"{key}_{self.set_key}" if several else self.set_key] = members
        return d


CalibratedProbabilitiesD = CalibratedProbabilitiesDict = CalibratedProbabilitiesd
