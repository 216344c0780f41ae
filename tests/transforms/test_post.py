"""Post transforms of a run's logits: calibrated probabilities and conformal prediction sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_cilmp.engines import fit_calibration
from monai_cilmp.transforms import CalibratedProbabilities, CalibratedProbabilitiesd


def _calibration():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3)) * 1.5 + 3 * np.eye(3)[labels]
    return fit_calibration(logits, labels, alpha=0.2)


def test_without_a_calibration_it_is_the_softmax():
    logits = torch.tensor([2.0, -1.0, 0.5])
    torch.testing.assert_close(CalibratedProbabilities()(logits), torch.softmax(logits, -1))
    assert CalibratedProbabilities().with_set(logits)[1] is None
    out = CalibratedProbabilitiesd("pred")({"pred": logits})
    assert set(out) == {"pred"}


def test_the_runs_temperature_and_sets_are_applied_per_image():
    calibration = _calibration()
    assert calibration.temperature != pytest.approx(1.0)
    logits = np.array([[6.0, 0.2, -1.0], [0.1, 0.2, 0.15]], dtype=np.float32)
    out = [
        CalibratedProbabilitiesd("pred", calibration, set_key="members")({"pred": torch.as_tensor(z)}) for z in logits
    ]
    expected = calibration.probabilities(logits)
    np.testing.assert_allclose(np.stack([o["pred"].numpy() for o in out]), expected, atol=1e-6)
    sets = calibration.prediction_sets(expected)
    np.testing.assert_array_equal(np.stack([o["members"].numpy() for o in out]), sets)
    assert out[0]["pred"].dtype == torch.float32 and out[0]["members"].dtype == torch.bool
    assert sets[0].tolist() == [True, False, False]  # a confident image: its class alone
