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
    # the epochs' lines, without the quarter-epoch progress lines (stderr is not a terminal) or learning warnings
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]
    lines = [line for line in lines if " iterations" not in line and not line.startswith("WARNING")]
    assert len(lines) == 3 and lines[0].startswith("epoch 1/2  loss ") and "lr 1.00e-02" in lines[0]
    assert "val_accuracy" in lines[1] and "val_loss" in lines[1] and lines[2].startswith("training complete")
    assert not [r for r in caplog.records if "Current learning rate" in r.getMessage()]
    scalars = _scalars(tmp_path / "tensorboard")
    assert [v for _, v in scalars["train/lr"]] == pytest.approx([0.01, 0.05])  # warm-up, then the cosine start
    assert {"val_accuracy", "val_loss", "train_loss", "train/epoch_loss"} <= set(scalars)
    assert [step for step, _ in scalars["val_loss"]] == [1, 2]


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(caplog, capsys):
    import logging

    from ignite.engine import Engine

    from monai_cilmp.engines.progress import LOGGER_NAME, LossProgressBar

    engine = Engine(lambda e, batch: {"loss": 0.5})
    LossProgressBar(persist=False).attach(engine)  # pytest captures stderr: not a terminal
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        engine.run(list(range(8)), max_epochs=2)
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]
    assert lines == [f"epoch {e}/2  {i}/8 iterations  loss 0.5000" for e in (1, 2) for i in (2, 4, 6)]
    assert "\r" not in capsys.readouterr().err  # no bar
