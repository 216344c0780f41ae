"""One concise line per epoch, and the learning rate, validation loss and epoch loss in TensorBoard."""

from __future__ import annotations

import logging

import pytest

from monai_cilmp.engines import create_trainer
from monai_cilmp.engines.progress import LOGGER_NAME
from tests.engines.test_trainer import loaders, make_net, recipe


def _scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_one_line_per_epoch_and_tensorboard_curves(tmp_path, caplog):
    train, val = loaders()
    trainer = create_trainer(make_net(), train, tmp_path, recipe(max_epochs=2), val_loader=val, device="cpu")
    with caplog.at_level(logging.INFO):
        trainer.run()
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]
    assert len(lines) == 3 and lines[0].startswith("epoch 1/2  loss ") and "lr 1.00e-02" in lines[0]
    assert "val_accuracy" in lines[1] and "val_loss" in lines[1] and lines[2].startswith("training complete")
    assert not [r for r in caplog.records if "Current learning rate" in r.getMessage()]
    scalars = _scalars(tmp_path / "tensorboard")
    assert [v for _, v in scalars["train/lr"]] == pytest.approx([0.01, 0.05])  # warm-up, then the cosine start
    assert {"val_accuracy", "val_loss", "train_loss", "train/epoch_loss"} <= set(scalars)
    assert [step for step, _ in scalars["val_loss"]] == [1, 2]
