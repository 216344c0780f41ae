"""What a training run reports while it runs: one concise line per epoch, and the learning rate in TensorBoard.

MONAI's ``StatsHandler`` and ``LrScheduleHandler(print_lr=True)`` each log their own lines (metrics, then "Current
learning rate") at every epoch; :class:`EpochSummary` replaces them with a single line per epoch, e.g.::

    epoch 3/100  loss 0.4121  lr 2.50e-03  val_accuracy 0.8125  val_loss 0.5012  (best 0.8125 @ 3)  12.3 s

and writes the learning rate used in that epoch to TensorBoard (``train/lr``) beside MONAI's loss and metric curves.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from ignite.handlers import ProgressBar

from monai_cilmp.engines.outputs import scores_and_labels
from monai_cilmp.metrics.collapse import learning_warnings

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["LOGGER_NAME", "EpochSummary", "LossProgressBar"]

LOGGER_NAME = "monai_cilmp.train"
"""The logger of the per-epoch lines (``logging.conf`` of the bundle shows it at INFO without decoration)."""


class EpochSummary:
    """Log one line per training epoch and the learning rate to TensorBoard.

    Attach it after the validation handler (it reads the evaluator's metrics of the epoch that just completed).

    Args:
        optimizer: the optimiser whose first parameter group's learning rate is reported.
        evaluator: the validation evaluator (``None``: no validation columns).
        summary_writer: a TensorBoard ``SummaryWriter`` (``None``: no TensorBoard).
        checkpoint_dir: where the run's checkpoints go (named once, when training completes).
        logger_name: the logger to write to.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        evaluator: Engine | None = None,
        summary_writer: Any | None = None,
        checkpoint_dir: Any | None = None,
        logger_name: str = LOGGER_NAME,
    ) -> None:
        self.optimizer, self.evaluator, self.writer = optimizer, evaluator, summary_writer
        self.checkpoint_dir = checkpoint_dir
        self.logger = logging.getLogger(logger_name)
        self._lr = math.nan
        self._loss_sum, self._steps, self._start = 0.0, 0, 0.0
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self.warnings: list[str] = []

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        if self.evaluator is not None:  # its predictions say whether the model learned anything (learning_warnings)
            self.evaluator.add_event_handler(Events.EPOCH_STARTED, self._reset_predictions)
            self.evaluator.add_event_handler(Events.ITERATION_COMPLETED, self._collect_predictions)
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def epoch_started(self, engine: Engine) -> None:
        # the scheduler steps at the end of an epoch: the rate read here is the one this epoch trains with
        self._lr = float(self.optimizer.param_groups[0]["lr"])
        self._loss_sum, self._steps, self._start = 0.0, 0, time.perf_counter()

    def iteration_completed(self, engine: Engine) -> None:
        loss = _batch_loss(engine.state.output)
        if loss:
            self._loss_sum += loss["loss"]
            self._steps += 1

    def _reset_predictions(self, evaluator: Engine) -> None:
        self._scores, self._labels = [], []

    def _collect_predictions(self, evaluator: Engine) -> None:

        try:
            scores, labels = scores_and_labels(evaluator.state.output)
        except (KeyError, TypeError, ValueError, IndexError):
            return  # an evaluator whose output holds no scores and labels: nothing to judge
        self._scores.append(torch.as_tensor(scores).detach().float().cpu().numpy())
        self._labels.append(torch.as_tensor(labels).detach().cpu().numpy().reshape(-1))

    def _learning_warnings(self, engine: Engine) -> list[str]:
        if not self._scores or self.evaluator is None or self.evaluator.state.epoch != engine.state.epoch:
            return []

        names = getattr(getattr(engine, "network", None), "class_names", None)
        return learning_warnings(np.concatenate(self._scores), np.concatenate(self._labels), names, "validation")

    def line(self, engine: Engine) -> str:
        """The text of the epoch that just completed."""
        parts = [f"epoch {engine.state.epoch}/{engine.state.max_epochs}"]
        if self._steps:
            parts.append(f"loss {self._loss_sum / self._steps:.4f}")
        parts.append(f"lr {self._lr:.2e}")
        if self.evaluator is not None and self.evaluator.state.epoch == engine.state.epoch:
            state = self.evaluator.state
            parts += [f"{k} {float(v):.4f}" for k, v in state.metrics.items() if isinstance(v, (int, float))]
            if getattr(state, "best_metric_epoch", -1) > 0:
                parts.append(f"(best {float(state.best_metric):.4f} @ {state.best_metric_epoch})")
        parts.append(f"{time.perf_counter() - self._start:.1f} s")
        if self.warnings:
            parts.append("WARNING: learned nothing so far (one class for every validation image or chance accuracy)")
        return "  ".join(parts)

    def epoch_completed(self, engine: Engine) -> None:
        self.warnings = self._learning_warnings(engine)
        self.logger.info(self.line(engine))
        if self.writer is not None:
            self.writer.add_scalar("train/lr", self._lr, engine.state.epoch)
            if self._steps:
                self.writer.add_scalar("train/epoch_loss", self._loss_sum / self._steps, engine.state.epoch)
            self.writer.flush()

    def completed(self, engine: Engine) -> None:
        if self.writer is not None:  # closed: its file and thread go (it reopens if the engine runs again)
            self.writer.close()
        for warning in self.warnings:  # of the last epoch validated
            self.logger.warning(f"WARNING: {warning}")
        if self.checkpoint_dir is not None:
            self.logger.info(f"training complete after {engine.state.epoch} epochs; run saved in {self.checkpoint_dir}")


def _batch_loss(output: Any) -> dict[str, float]:
    loss = output.get("loss") if isinstance(output, dict) else None
    if loss is None and isinstance(output, list) and output and isinstance(output[0], dict):
        loss = output[0].get("loss")
    return {} if loss is None else {"loss": float(loss)}


class LossProgressBar(ProgressBar):
    """Ignite's ``ProgressBar`` showing the batch loss, attachable from a config's handler list (``attach(engine)``).

    When standard error is not a terminal (a log file, a pipe, a batch job) a bar would write a line per update
    there; the progress is then logged as plain lines instead, at each quarter of an epoch (the epoch's own line
    comes from :class:`EpochSummary`), e.g. ``epoch 3/100  50/200 iterations  loss 0.4121``.

    Args:
        plain: plain lines instead of a bar (``None``: when standard error is not a terminal).
        logger_name: the logger of the plain lines.
        kwargs: ``ProgressBar``'s (e.g. ``persist``).
    """

    def __init__(self, plain: bool | None = None, logger_name: str = LOGGER_NAME, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plain = plain
        self.logger = logging.getLogger(logger_name)

    def attach(self, engine: Engine, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        plain = self.plain if self.plain is not None else not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
        if plain:
            from ignite.engine import Events

            engine.add_event_handler(Events.ITERATION_COMPLETED, self._plain_line)
            return
        kwargs.setdefault("output_transform", _batch_loss)
        super().attach(engine, *args, **kwargs)

    def _plain_line(self, engine: Engine) -> None:
        length = engine.state.epoch_length or 0
        step = (engine.state.iteration - 1) % length + 1 if length else engine.state.iteration
        quarter = max(1, length // 4)
        if length < 4 or step % quarter or step >= length:
            return  # a quarter of a longer epoch; the epoch's end has its own line
        loss = _batch_loss(engine.state.output)
        text = f"  loss {loss['loss']:.4f}" if loss else ""
        self.logger.info(f"epoch {engine.state.epoch}/{engine.state.max_epochs}  {step}/{length} iterations{text}")
