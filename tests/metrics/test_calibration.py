"""Calibration errors, Brier score and NLL against hand computations and torchmetrics; the reliability diagram."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monai_cilmp.metrics import (
    brier_score,
    calibration_errors,
    calibration_metrics,
    negative_log_likelihood,
    reliability_bins,
    save_reliability_diagram,
)

# five two-class predictions: top-class confidence and whether the top class is right
CONFIDENCE = [0.9, 0.8, 0.6, 0.95, 0.55]
CORRECT = [1, 0, 1, 1, 0]


def hand_data():
    probs = np.array([[c, 1 - c] for c in CONFIDENCE])
    labels = np.array([0 if ok else 1 for ok in CORRECT])
    return labels, probs


def test_ece_and_mce_match_hand_computation():
    labels, probs = hand_data()
    # 2 equal-width bins: everything in (0.5, 1]; accuracy 3/5, mean confidence 3.8/5
    assert calibration_errors(labels, probs, n_bins=2) == pytest.approx((0.16, 0.16))
    # 4 bins: (0.5, 0.75] holds 0.6 (right) and 0.55 (wrong); (0.75, 1] holds 0.9, 0.8 (wrong), 0.95
    low_gap, high_gap = abs(0.5 - 0.575), abs(2 / 3 - (0.9 + 0.8 + 0.95) / 3)
    ece, mce = calibration_errors(labels, probs, n_bins=4)
    assert ece == pytest.approx(2 / 5 * low_gap + 3 / 5 * high_gap)
    assert mce == pytest.approx(high_gap)
    # 2 equal-mass bins: the 3 least confident (0.55 wrong, 0.6 right, 0.8 wrong) and the 2 most confident (right)
    ece_adaptive, _ = calibration_errors(labels, probs, n_bins=2, binning="adaptive")
    assert ece_adaptive == pytest.approx(3 / 5 * abs(1 / 3 - 0.65) + 2 / 5 * abs(1.0 - 0.925))


def test_bins_are_closed_on_the_right():
    labels = np.array([0, 0, 0])
    probs = np.array([[0.5, 0.5], [0.75, 0.25], [1.0, 0.0]])
    bins = reliability_bins(labels, probs, n_bins=4)
    # 0.5 belongs to (0.25, 0.5], 0.75 to (0.5, 0.75], 1.0 to (0.75, 1]
    assert bins["count"].tolist() == [0, 1, 1, 1]
    assert np.isnan(bins["accuracy"][0]) and bins["accuracy"][1:].tolist() == [1.0, 1.0, 1.0]


def test_brier_and_nll_match_hand_computation():
    labels, probs = hand_data()
    p_true = [c if ok else 1 - c for c, ok in zip(CONFIDENCE, CORRECT)]
    # two classes: (p_y - 1)^2 + (1 - p_y - 0)^2 = 2 (1 - p_y)^2
    assert brier_score(labels, probs) == pytest.approx(np.mean([2 * (1 - p) ** 2 for p in p_true]))
    assert brier_score(labels, probs) == pytest.approx(0.446)
    assert negative_log_likelihood(labels, probs) == pytest.approx(-np.mean([math.log(p) for p in p_true]))
    # a certain, wrong prediction costs a large but finite NLL
    assert math.isfinite(negative_log_likelihood([1], [[1.0, 0.0]]))


def test_perfect_predictions_score_zero():
    labels = np.array([0, 1, 2])
    probs = np.eye(3)
    m = calibration_metrics(labels, probs)
    assert m["ece"] == m["ece_adaptive"] == m["mce"] == m["brier"] == 0.0
    assert m["nll"] == pytest.approx(0.0) and m["accuracy"] == 1.0


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match="shape"):
        calibration_errors([0, 1], [[0.5, 0.5]])
    with pytest.raises(ValueError, match="Labels must lie"):
        brier_score([2], [[0.5, 0.5]])
    with pytest.raises(ValueError, match="empty"):
        calibration_metrics(np.zeros(0, dtype=int), np.zeros((0, 2)))


@pytest.mark.parametrize("n_bins", [5, 15])
def test_matches_torchmetrics(n_bins):
    torch = pytest.importorskip("torch")
    classification = pytest.importorskip("torchmetrics.classification")
    rng = np.random.default_rng(n_bins)
    probs = rng.dirichlet(np.full(4, 0.7), size=400)
    labels = np.array([rng.choice(4, p=p) if rng.random() < 0.6 else rng.integers(4) for p in probs])
    ece, mce = calibration_errors(labels, probs, n_bins=n_bins)
    preds, target = torch.as_tensor(probs), torch.as_tensor(labels)
    reference_ece = classification.MulticlassCalibrationError(num_classes=4, n_bins=n_bins, norm="l1")
    reference_mce = classification.MulticlassCalibrationError(num_classes=4, n_bins=n_bins, norm="max")
    assert ece == pytest.approx(float(reference_ece(preds, target)), abs=1e-6)  # torchmetrics works in float32
    assert mce == pytest.approx(float(reference_mce(preds, target)), abs=1e-6)  # torchmetrics works in float32


def test_reliability_diagram_is_a_png(tmp_path):
    labels, probs = hand_data()
    path = save_reliability_diagram(
        labels,
        {"before": probs, "after": probs**0.5 / (probs**0.5).sum(1, keepdims=True)},
        tmp_path / "r.png",
        n_bins=5,
        title="t",
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.png"]  # nothing half-written left behind
