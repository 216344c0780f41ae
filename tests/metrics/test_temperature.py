"""Temperature scaling: fitted on validation logits, it repairs an over-confident model's probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from monai_cilmp.metrics import calibration_metrics, fit_temperature, softmax, temperature_nll


def toy(scale, n=3000, n_classes=4, seed=0):
    """Labels drawn from softmax(z) (a calibrated model's logits z); the toy model outputs ``scale * z``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, size=(n, n_classes))
    p = softmax(z)
    labels = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return scale * z, labels


def test_temperature_scaling_repairs_an_over_confident_model():
    logits, labels = toy(scale=4.0)
    val, test = slice(0, 1500), slice(1500, None)
    t = fit_temperature(logits[val], labels[val])
    assert t == pytest.approx(4.0, rel=0.15)  # the over-confidence it undoes
    before = calibration_metrics(labels[test], softmax(logits[test]))
    after = calibration_metrics(labels[test], softmax(logits[test], t))
    assert after["nll"] < 0.8 * before["nll"]
    assert after["ece"] < 0.5 * before["ece"]
    assert after["accuracy"] == before["accuracy"]  # the predicted class never changes
    # T is the NLL's minimiser on the data it was fitted to
    nll = temperature_nll(logits[val], labels[val], t)
    assert nll <= min(temperature_nll(logits[val], labels[val], t * f) for f in (0.9, 1.1))


def test_under_confident_model_gets_a_temperature_below_one():
    logits, labels = toy(scale=0.4, seed=1)
    assert fit_temperature(logits, labels) == pytest.approx(0.4, rel=0.15)


def test_softmax_is_stable_and_nll_matches_its_log():
    logits = np.array([[1000.0, 0.0], [0.0, 1.0]])
    p = softmax(logits)
    assert np.isfinite(p).all() and np.allclose(p.sum(1), 1)
    assert temperature_nll(np.array([[0.0, 1.0]]), [1], 2.0) == pytest.approx(-np.log(softmax([[0.0, 0.5]])[0, 1]))


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match="needs logits"):
        fit_temperature(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="non-finite"):
        fit_temperature(np.array([[np.nan, 0.0]]), [0])
