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
        probabilities, _ = self.with_set(logits)
        return probabilities

    def with_set(self, logits: NdarrayOrTensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The calibrated probabilities and the conformal prediction set (a boolean tensor of the same shape, or
        ``None`` without a conformal fit). The set is taken from the float64 probabilities, before they are cast to
        float32, as :func:`~monai_cilmp.engines.predict_calibrated` does: a score at a threshold falls on the same
        side."""
        scores = torch.as_tensor(logits).detach().float()
        if self.calibration is None:
            return torch.softmax(scores, dim=-1), None
        z = scores.cpu().numpy()
        probabilities = self.calibration.probabilities(z.reshape(1, -1) if z.ndim == 1 else z)
        sets = self.calibration.prediction_sets(probabilities)
        out = torch.as_tensor(probabilities.reshape(z.shape), dtype=torch.float32, device=scores.device)
        return out, None if sets is None else torch.as_tensor(np.asarray(sets, dtype=bool).reshape(z.shape))


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
            d[key], members = self.transform.with_set(d[key])
            if members is not None:
                d[f"{key}_{self.set_key}" if several else self.set_key] = members
        return d


CalibratedProbabilitiesD = CalibratedProbabilitiesDict = CalibratedProbabilitiesd
