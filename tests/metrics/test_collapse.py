"""learning_warnings: a model that learned nothing, and a calibration that cannot be trusted, say so."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from monai_cilmp.metrics import learning_warnings
from monai_cilmp.metrics.collapse import MIN_CALIBRATION_IMAGES
from monai_cilmp.metrics.temperature import TEMPERATURE_BOUNDS

NAMES = ["normal", "pneumonia"]


def _healthy(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(n) % 2
    logits = np.stack([1.0 - 2.0 * labels, 2.0 * labels - 1.0], axis=1)
    logits[::5] *= -1  # 80 % right: a model that learned, though not perfectly
    return logits, labels


def test_a_model_that_learned_is_not_flagged():
    logits, labels = _healthy()
    assert learning_warnings(logits, labels, NAMES, temperature=1.3, n_calibration=MIN_CALIBRATION_IMAGES) == []
    assert learning_warnings(logits) == []  # unlabelled images with confident scores


def test_one_class_for_everything_names_the_class_and_what_to_do():
    labels = np.arange(8) % 2
    logits = np.tile([[0.3, -0.2]], (8, 1))
    (warning,) = learning_warnings(logits, labels, NAMES, "validation")
    assert "predicts 'normal' for all 8 validation images" in warning and "at chance (1/2 = 0.500)" in warning
    assert "What to do:" in warning and "--epochs" in warning


def test_chance_accuracy_without_one_class():
    labels = np.array([0, 0, 1, 1] * 5)
    logits = np.array([[1.0, 0.0], [0.0, 1.0]] * 10)  # right half the time, in each class
    (warning,) = learning_warnings(logits, labels, NAMES)
    assert "balanced accuracy 0.500 is at chance" in warning and "predicts" not in warning


def test_uniform_probabilities_need_no_labels():
    probabilities = np.full((5, 2), 0.5) + np.array([0.004, -0.004])
    (warning,) = learning_warnings(probabilities, None, NAMES, "predicted")
    assert "every predicted image gets about 0.50 for each class" in warning


@pytest.mark.parametrize("temperature", TEMPERATURE_BOUNDS)
def test_a_temperature_at_its_bound_and_too_few_calibration_images(temperature):
    warnings = learning_warnings(temperature=temperature, n_calibration=8, fitted_on="validation")
    assert len(warnings) == 2
    assert "sits at its bound" in warnings[0] and "What to do" in warnings[0]
    assert f"only 8 validation images; at least {MIN_CALIBRATION_IMAGES} are needed" in warnings[1]
    assert learning_warnings(temperature=2.0, n_calibration=MIN_CALIBRATION_IMAGES) == []


def test_evaluate_report_carries_the_warnings(tmp_path):
    from monai_cilmp.engines import format_trust_summary, headline_metrics, write_evaluation_report

    labels = np.arange(8) % 2
    logits = np.tile([[0.3, -0.2]], (8, 1))
    validation = (np.tile([[0.3, -0.2]], (8, 1)), labels)
    report = write_evaluation_report(logits, labels, NAMES, tmp_path, validation=validation)
    assert len(report["warnings"]) == 3  # collapsed, T at its bound, 8 calibration images
    assert json.loads((tmp_path / "test_metrics.json").read_text())["warnings"] == report["warnings"]
    summary = format_trust_summary(report)
    assert summary.count("WARNING: ") == 3 and "predicts 'normal' for all 8 test images" in summary
    assert "warnings" not in headline_metrics(report)


def test_the_epoch_line_says_when_validation_collapsed(caplog):
    from ignite.engine import Engine, Events

    from monai_cilmp.engines.progress import LOGGER_NAME, EpochSummary

    def validate(engine, batch):
        return [{"pred": torch.tensor([2.0, -1.0]), "label": torch.tensor(label)} for label in batch]

    evaluator = Engine(validate)
    trainer = Engine(lambda engine, batch: {"loss": 0.7})
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)

    def validate_epoch(trainer):  # as MONAI's ValidationHandler: the evaluator's epoch is the trainer's
        evaluator.run([[0, 1], [1, 0]])
        evaluator.state.epoch = trainer.state.epoch

    trainer.add_event_handler(Events.EPOCH_COMPLETED, validate_epoch)
    EpochSummary(optimizer, evaluator).attach(trainer)
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        trainer.run([0, 1], max_epochs=2)
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]
    assert sum("epoch " in line and "WARNING: learned nothing so far" in line for line in lines) == 2
    assert any(line.startswith("WARNING: The model learned nothing usable") for line in lines)


def test_compare_report_lists_the_cells_that_learned_nothing():
    from monai_cilmp.compare.report import warnings_section

    records = [
        {"method": "coop", "shots": 1, "seed": 1, "warnings": ["The model learned nothing usable: x."]},
        {"method": "cilmp", "shots": 1, "seed": 1, "warnings": []},
    ]
    section = warnings_section(records)
    assert "1 of 2 cells learned nothing usable" in section and "- coop, 1-shot, seed 1: The model" in section
    assert warnings_section(records[1:]) == ""
