"""Split-conformal prediction sets: hand-computed scores and quantiles, coverage over many random splits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monai_cilmp.metrics import (
    SplitConformal,
    conformal_quantile,
    conformal_scores,
    coverage_curve,
    save_coverage_plot,
    set_coverage,
)


def test_finite_sample_quantile():
    scores = np.arange(1, 11) / 10  # 0.1 .. 1.0, n = 10
    assert conformal_quantile(scores, 0.1) == 1.0  # rank ceil(11 * 0.9) = 10
    assert conformal_quantile(scores, 0.2) == 0.9  # rank ceil(8.8) = 9
    assert conformal_quantile(scores, 0.05) == math.inf  # rank 11 > n: every class is in every set
    # (99 + 1) * 0.9 is 90.00000000000001 in floating point: the rank is still 90
    assert conformal_quantile(np.arange(1, 100), 0.1) == 90
    with pytest.raises(ValueError, match="alpha"):
        conformal_quantile(scores, 1.0)


def test_scores_by_hand():
    p = np.array([[0.2, 0.7, 0.1]])
    assert conformal_scores(p, method="lac") == pytest.approx(np.array([[0.8, 0.3, 0.9]]))
    # APS: mass of the classes ranked at or above y (ranking 1, 0, 2)
    assert conformal_scores(p, method="aps") == pytest.approx(np.array([[0.9, 0.7, 1.0]]))
    # RAPS adds lam * max(0, rank - k_reg): ranks 2, 1, 3
    assert conformal_scores(p, method="raps", lam=0.1, k_reg=1) == pytest.approx(np.array([[1.0, 0.7, 1.2]]))
    assert conformal_scores(p, [2], method="aps") == pytest.approx([1.0])


def test_sets_by_hand_and_round_trip():
    predictor = SplitConformal(alpha=0.25, method="lac").fit(
        np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]]), [0, 0, 1, 0]
    )
    # true-class scores 0.1, 0.4, 0.3, 0.8; rank ceil(5 * 0.75) = 4 -> q = 0.8
    assert predictor.thresholds == [0.8, 0.8]
    sets = predictor.predict_sets(np.array([[0.95, 0.05], [0.5, 0.5], [0.1, 0.9]]))
    assert sets.tolist() == [[True, False], [True, True], [False, True]]
    again = SplitConformal.from_dict(predictor.to_dict())
    assert again == predictor
    with pytest.raises(ValueError, match="method|ConformalScore|lac"):
        SplitConformal(method="nope")


def synthetic(rng, n, n_classes=6):
    """A fairly good, imperfect model: labels drawn from its own (peaked) probabilities."""
    p = rng.dirichlet(np.full(n_classes, 0.3), size=n)
    labels = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return p, labels


@pytest.mark.parametrize("method, class_conditional", [("lac", False), ("aps", False), ("raps", False), ("lac", True)])
def test_coverage_over_random_splits(method, class_conditional):
    """Mean coverage over random calibration/test splits lies in [1 - alpha, 1 - alpha + 1 / (n + 1)] (up to the
    Monte-Carlo error of the mean), and the sets are informative (smaller than all classes)."""
    rng = np.random.default_rng(0)
    alpha, n_cal, n_test, n_classes, repeats = 0.1, 300, 600, 6, 150
    probs, labels = synthetic(rng, 60_000, n_classes)
    coverages, sizes, per_class = [], [], []
    for _ in range(repeats):
        index = rng.choice(len(labels), n_cal + n_test, replace=False)
        cal, test = index[:n_cal], index[n_cal:]
        predictor = SplitConformal(alpha=alpha, method=method, class_conditional=class_conditional)
        result = set_coverage(predictor.fit(probs[cal], labels[cal]).predict_sets(probs[test]), labels[test])
        coverages.append(result["coverage"])
        sizes.append(result["mean_set_size"])
        per_class.append([v["coverage"] for v in result["per_class"].values()])
    mean, se = np.mean(coverages), np.std(coverages, ddof=1) / np.sqrt(repeats)
    n_eff = n_cal / n_classes if class_conditional else n_cal
    assert 1 - alpha - 3 * se <= mean <= 1 - alpha + 1 / (n_eff + 1) + 3 * se
    assert np.mean(sizes) < n_classes - 1
    if class_conditional:  # the guarantee holds for every class
        assert (np.nanmean(per_class, axis=0) >= 1 - alpha - 0.02).all()


def test_coverage_bookkeeping_and_curve(tmp_path):
    sets = np.array([[True, False], [True, True], [False, False]])
    result = set_coverage(sets, [0, 1, 0], ["a", "b"])
    assert result["coverage"] == pytest.approx(2 / 3)
    assert result["mean_set_size"] == 1.0 and result["empty"] == pytest.approx(1 / 3)
    assert result["per_class"]["a"] == {"coverage": 0.5, "mean_set_size": 0.5, "n": 2}
    rng = np.random.default_rng(1)
    p, y = synthetic(rng, 800, 4)
    curve = coverage_curve(p[:400], y[:400], p[400:], y[400:], alphas=[0.05, 0.2, 0.4], method="aps")
    assert curve["alpha"] == [0.05, 0.2, 0.4]
    assert curve["coverage"] == sorted(curve["coverage"], reverse=True)  # more error allowed, less coverage
    assert curve["mean_set_size"] == sorted(curve["mean_set_size"], reverse=True)
    path = save_coverage_plot(curve, tmp_path / "c.png", n_classes=4, chosen_alpha=0.2)
    assert path.read_bytes()[:4] == b"\x89PNG"
