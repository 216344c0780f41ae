"""A run's calibration: the temperature and the conformal thresholds fitted on its validation split.

Both live in ``<run>/calibration.json``, written by ``evaluate`` (:func:`~monai_cilmp.engines.evaluate_split` with a
validation loader) and read by everything that turns a run's logits into probabilities for users: ``evaluate``,
``predict``, the bundle's ``inference.json`` and the MONAI Label app. A run without the file gives plain softmax
probabilities and no prediction sets, as before.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monai_cilmp.metrics.conformal import SplitConformal
from monai_cilmp.metrics.temperature import fit_temperature, softmax, temperature_nll
from monai_cilmp.utils.files import read_json, write_json

__all__ = ["CALIBRATION_FILE", "RunCalibration", "fit_calibration", "load_calibration", "save_calibration"]

CALIBRATION_FILE = "calibration.json"
_FORMAT_VERSION = 1


@dataclass
class RunCalibration:
    """What turns a run's logits into calibrated probabilities and prediction sets.

    Attributes:
        temperature: the logits are divided by it before the softmax (1: no scaling).
        conformal: the fitted split-conformal predictor, or ``None``.
        fitted_on: the split both were fitted on (always the validation split for runs of this package).
        n: number of calibration images.
        details: facts about the fit (validation NLL before/after, ...), JSON-serialisable.
    """

    temperature: float = 1.0
    conformal: SplitConformal | None = None
    fitted_on: str = "validation"
    n: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def probabilities(self, logits: Any) -> np.ndarray:
        """``softmax(logits / temperature)`` ``(N, C)``, float64."""
        return softmax(logits, self.temperature)

    def prediction_sets(self, probabilities: Any) -> np.ndarray | None:
        """``(N, C)`` boolean set membership of calibrated ``probabilities``, or ``None`` without a conformal fit."""
        return self.conformal.predict_sets(probabilities) if self.conformal is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": _FORMAT_VERSION,
            "temperature": float(self.temperature),
            "fitted_on": self.fitted_on,
            "n": int(self.n),
            "conformal": self.conformal.to_dict() if self.conformal is not None else None,
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> RunCalibration:
        """Rebuild from :meth:`to_dict`.

        Raises:
            ValueError: a key is missing or of the wrong type, naming the key.
        """
        if not isinstance(state, Mapping):
            raise ValueError("it holds no JSON object")
        temperature = state.get("temperature")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"'temperature' must be a positive number, not {temperature!r}")
        if not np.isfinite(temperature):
            raise ValueError(f"'temperature' must be finite, not {temperature!r}")
        n = state.get("n", 0)
        if isinstance(n, bool) or not isinstance(n, int):
            raise ValueError(f"'n' must be a whole number, not {n!r}")
        conformal = state.get("conformal")
        if conformal is not None and not isinstance(conformal, Mapping):
            raise ValueError(f"'conformal' must be a JSON object or null, not {conformal!r}")
        try:
            predictor = SplitConformal.from_dict(conformal) if conformal else None
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"'conformal' is not a fitted conformal predictor ({type(e).__name__}: {e})") from None
        details = state.get("details") or {}
        if not isinstance(details, Mapping):
            raise ValueError(f"'details' must be a JSON object, not {details!r}")
        return cls(
            temperature=float(temperature),
            conformal=predictor,
            fitted_on=str(state.get("fitted_on", "validation")),
            n=n,
            details=dict(details),
        )


def fit_calibration(
    logits: Any,
    labels: Any,
    alpha: float = 0.1,
    method: str = "lac",
    class_conditional: bool = False,
    temperature_scaling: bool = True,
    fitted_on: str = "validation",
    **conformal: Any,
) -> RunCalibration:
    """Fit the temperature, then the conformal thresholds on the temperature-scaled probabilities.

    Args:
        logits: validation logits ``(n, C)``.
        labels: validation labels ``(n,)``.
        alpha: conformal error rate.
        method: conformal score, ``"lac"``, ``"aps"`` or ``"raps"``.
        class_conditional: one conformal threshold per class.
        temperature_scaling: fit a temperature (else ``T = 1``).
        fitted_on: name of the split, recorded.
        conformal: further :class:`~monai_cilmp.metrics.SplitConformal` keywords (``lam``, ``k_reg``).
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=int).reshape(-1)
    if (y < 0).any():
        raise ValueError(f"The {fitted_on} split has unlabelled images; calibration needs labels for all of them.")
    temperature = fit_temperature(z, y) if temperature_scaling else 1.0
    predictor = SplitConformal(alpha=alpha, method=method, class_conditional=class_conditional, **conformal)
    predictor.fit(softmax(z, temperature), y)
    details = {"nll_before": temperature_nll(z, y, 1.0), "nll_after": temperature_nll(z, y, temperature)}
    return RunCalibration(temperature, predictor, fitted_on, int(y.size), details)


def save_calibration(calibration: RunCalibration, run_dir: str | os.PathLike) -> Path:
    """Write ``<run_dir>/calibration.json`` atomically; returns its path."""
    return write_json(Path(run_dir) / CALIBRATION_FILE, calibration.to_dict())


def load_calibration(run_dir: str | os.PathLike) -> RunCalibration | None:
    """The calibration stored in a run folder, or ``None`` when it has none.

    Raises:
        ValueError: the file exists but is not a calibration written by this package (one sentence naming it).
    """
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    state = read_json(path, "Calibration file")
    try:
        return RunCalibration.from_dict(state)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        problem = str(e)
    # raised outside the handler, so that this sentence (file, key, what to do) is the one shown
    raise ValueError(
        f"Calibration file '{path}' is malformed ({problem}): delete it and run `monai-cilmp evaluate --run "
        f"{Path(run_dir)}` again to refit it."
    )
