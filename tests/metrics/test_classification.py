"""Metrics against scikit-learn on fixed inputs, and their files."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from monai_cilmp.metrics import classification_metrics, save_confusion_matrix, save_metrics, summarise_seeds

LABELS = [0, 0, 1, 1, 2, 2, 2, 1]
PROBS = [
    [0.7, 0.2, 0.1],
    [0.3, 0.6, 0.1],
    [0.1, 0.8, 0.1],
    [0.2, 0.3, 0.5],
    [0.1, 0.1, 0.8],
    [0.2, 0.2, 0.6],
    [0.6, 0.1, 0.3],
    [0.3, 0.4, 0.3],
]
NAMES = ["normal", "benign", "malignant"]


def test_metrics_match_scikit_learn():
    m = classification_metrics(LABELS, PROBS, NAMES)
    pred = np.argmax(PROBS, axis=1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(LABELS, pred)) == pytest.approx(5 / 8)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(LABELS, pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(LABELS, pred, average="macro"))
    assert m["macro_auc"] == pytest.approx(skm.roc_auc_score(LABELS, PROBS, multi_class="ovr", average="macro"))
    assert m["kappa"] == pytest.approx(skm.cohen_kappa_score(LABELS, pred))
    assert m["per_class"]["benign"]["recall"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"] == skm.confusion_matrix(LABELS, pred).tolist()


def test_ordinal_kappa_is_quadratic():
    m = classification_metrics(LABELS, PROBS, NAMES, ordinal=True)
    pred = np.argmax(PROBS, axis=1)
    assert m["kappa"] == pytest.approx(skm.cohen_kappa_score(LABELS, pred, weights="quadratic"))
    assert m["kappa_weights"] == "quadratic"


def test_absent_class_gives_nan_auc_and_null_in_json(tmp_path):
    m = classification_metrics([0, 0, 1], [[0.9, 0.1, 0], [0.6, 0.4, 0], [0.2, 0.8, 0]], NAMES)
    assert math.isnan(m["macro_auc"])
    path = save_metrics(m, tmp_path / "metrics.json")
    assert json.loads(path.read_text())["macro_auc"] is None


def test_shape_errors_are_explained():
    with pytest.raises(ValueError, match=r"Expected probabilities of shape \(8, 2\)"):
        classification_metrics(LABELS, PROBS, NAMES[:2])


def test_confusion_matrix_files(tmp_path):
    m = classification_metrics(LABELS, PROBS, NAMES)
    csv_path, png_path = save_confusion_matrix(m["confusion_matrix"], NAMES, tmp_path / "confusion")
    rows = list(csv.reader(csv_path.open()))
    assert rows[0] == ["true \\ predicted", *NAMES]
    assert [int(v) for v in rows[2][1:]] == m["confusion_matrix"][1]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion.csv", "confusion.png"]


def test_summary_over_seeds():
    s = summarise_seeds([{"accuracy": 0.8, "n": 10}, {"accuracy": 0.9, "n": 10}, {"accuracy": 0.7, "n": 10}])
    assert list(s) == ["accuracy"]
    assert s["accuracy"]["mean"] == pytest.approx(0.8) and s["accuracy"]["std"] == pytest.approx(0.1)
    assert s["accuracy"]["text"] == "80.00 ± 10.00"


def test_confusion_figure_title_and_tensorboard_log(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from monai_cilmp.metrics.classification import confusion_figure, figure_title, log_metrics_to_tensorboard

    metrics = classification_metrics([0, 1, 1, 0], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]], ["a", "b"])
    title = figure_title("test", metrics)
    assert title == "test split, n=4, accuracy 75.0%"
    assert confusion_figure(metrics["confusion_matrix"], ["a", "b"], title).axes[0].get_title() == title
    log_metrics_to_tensorboard(metrics, tmp_path, "test", step=3)
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    assert (
        events.Scalars("test/accuracy")[0].value == pytest.approx(0.75) and events.Scalars("test/accuracy")[0].step == 3
    )
    assert "test/kappa" in events.Tags()["scalars"] and events.Images("test/confusion_matrix")
