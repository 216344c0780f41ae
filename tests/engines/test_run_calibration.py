"""A run's calibration: fitted on validation outputs, stored atomically, applied by evaluate_split and predictions."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset

from monai_cilmp.engines import (
    CALIBRATION_FILE,
    RunCalibration,
    evaluate_split,
    fit_calibration,
    load_calibration,
    predict,
    predict_calibrated,
    predict_logits,
    save_calibration,
)
from tests.engines.test_trainer import CLASSES, make_net, toy_data


def test_fit_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 3)) * 5
    labels = rng.integers(0, 3, 200)
    cal = fit_calibration(logits, labels, alpha=0.2, method="aps", class_conditional=True)
    assert cal.temperature > 1  # random labels: the sharp logits must be softened
    assert cal.details["nll_after"] < cal.details["nll_before"]
    assert cal.conformal.class_conditional and len(cal.conformal.thresholds) == 3
    path = save_calibration(cal, tmp_path)
    assert path.name == CALIBRATION_FILE and [p.name for p in tmp_path.iterdir()] == [CALIBRATION_FILE]
    again = load_calibration(tmp_path)
    assert again.temperature == pytest.approx(cal.temperature) and again.conformal == cal.conformal
    np.testing.assert_array_equal(
        again.prediction_sets(again.probabilities(logits)), cal.prediction_sets(cal.probabilities(logits))
    )
    assert load_calibration(tmp_path / "elsewhere") is None


def test_malformed_calibration_is_explained(tmp_path):
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({"temperature": -1}))
    with pytest.raises(ValueError, match="Calibration file .* is malformed"):
        load_calibration(tmp_path)
    with pytest.raises(ValueError, match="unlabelled"):
        fit_calibration(np.zeros((2, 2)), [0, -1])


def test_logits_match_predicted_probabilities():
    net = make_net().eval()
    loader = DataLoader(Dataset(toy_data(6)), batch_size=4, num_workers=0)
    logits, labels = predict_logits(net, loader, device="cpu")
    probs, labels2 = predict(net, loader, device="cpu")
    np.testing.assert_allclose(torch.softmax(torch.as_tensor(logits), -1).numpy(), probs, atol=1e-6)
    np.testing.assert_array_equal(labels, labels2)


def test_evaluate_split_fits_on_validation_and_applies_everywhere(tmp_path):
    net = make_net().eval()
    test = DataLoader(Dataset(toy_data(12, seed=2)), batch_size=4, num_workers=0)
    val = DataLoader(Dataset(toy_data(20, seed=1)), batch_size=4, num_workers=0)
    metrics = evaluate_split(net, test, CLASSES, tmp_path, calibration_loader=val, alpha=0.2, device="cpu")
    cal = load_calibration(tmp_path)
    # fitted on the validation split, not the test split
    val_logits, val_labels = predict_logits(net, val, device="cpu")
    assert cal.temperature == pytest.approx(fit_calibration(val_logits, val_labels).temperature)
    assert cal.n == 20 and cal.fitted_on == "validation"
    c = metrics["calibration"]
    assert c["temperature"] == pytest.approx(cal.temperature)
    assert set(c["before"]) >= {"ece", "ece_adaptive", "mce", "brier", "nll"} and "after" in c
    conformal = metrics["conformal"]
    assert conformal["alpha"] == 0.2 and 0 <= conformal["coverage"] <= 1
    assert set(conformal["per_class"]) == set(CLASSES) and len(conformal["curve"]["alpha"]) > 10
    for key in ("reliability", "conformal_png", "calibration", "metrics", "predictions"):
        assert (tmp_path / metrics["files"][key].split("/")[-1]).is_file(), key
    saved = json.loads((tmp_path / "test_metrics.json").read_text())
    assert saved["calibration"]["after"]["nll"] == pytest.approx(c["after"]["nll"])
    with open(tmp_path / "test_predictions.csv") as f:
        rows = list(csv.DictReader(f))
    probs, _, sets = predict_calibrated(net, test, "cpu", tmp_path)
    assert float(rows[0][f"p({CLASSES[0]})"]) == pytest.approx(probs[0, 0], abs=1e-6)
    assert rows[0]["prediction_set"] == "|".join(n for n, s in zip(CLASSES, sets[0]) if s)
    # a later evaluation without a validation loader applies the stored calibration
    again = evaluate_split(net, test, CLASSES, tmp_path / "again", calibration=tmp_path, device="cpu")
    assert again["calibration"]["after"] == pytest.approx(c["after"])
    assert again["conformal"]["coverage"] == conformal["coverage"] and "curve" not in again["conformal"]


def test_evaluate_split_without_calibration_is_as_before(tmp_path):
    net = make_net().eval()
    test = DataLoader(Dataset(toy_data(8, seed=2)), batch_size=4, num_workers=0)
    metrics = evaluate_split(net, test, CLASSES, tmp_path, device="cpu")
    assert "after" not in metrics["calibration"] and "conformal" not in metrics
    assert not (tmp_path / CALIBRATION_FILE).exists()
    assert "prediction_set" not in (tmp_path / "test_predictions.csv").read_text().splitlines()[0]
    # fitting on the evaluated split itself is refused silently: nothing is fitted
    evaluate_split(net, test, CLASSES, tmp_path, split="validation", calibration_loader=test, device="cpu")
    assert not (tmp_path / CALIBRATION_FILE).exists()


def test_run_calibration_identity():
    cal = RunCalibration()
    logits = np.array([[2.0, 0.0]])
    assert cal.probabilities(logits)[0] == pytest.approx(np.exp([2.0, 0.0]) / np.exp([2.0, 0.0]).sum())
    assert cal.prediction_sets(logits) is None
