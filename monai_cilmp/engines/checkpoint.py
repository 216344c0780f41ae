"""Training checkpoints: trainable state, optimiser, scheduler, GPA and engine state, written atomically."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from monai_cilmp.utils.files import atomic_write

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["TrainingCheckpoint", "atomic_torch_save", "load_checkpoint"]

CHECKPOINT_VERSION = 1


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`~monai_cilmp.utils.atomic_write`: a crash never leaves a broken checkpoint.

    The checkpoint is serialised in memory and written with plain file I/O, so that a full disk is reported as
    such (PyTorch's own writer reports it as an obscure "unexpected pos" error).
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())

    return atomic_write(path, write)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :class:`TrainingCheckpoint` (tensors and plain containers only).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a monai-cilmp checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint '{path}' does not exist: train first or point to a run's checkpoint.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"'{path}' is not a readable checkpoint ({e}); it may be from another tool.") from e
    if not isinstance(state, dict) or "network" not in state:
        raise ValueError(f"'{path}' is not a monai-cilmp checkpoint (no 'network' entry).")
    return state


class TrainingCheckpoint:
    """Everything a run needs to continue, but not the frozen backbone: what the run's checkpoint handlers write.

    ``<dir>/last.pt`` holds the network's trainable state, the optimiser, the scheduler, the GPA aggregate, the
    engine's epoch/iteration and its fp16 loss scaler (written after every epoch by
    :class:`~monai_cilmp.handlers.RunCheckpointSaver`, which also writes ``<dir>/final.pt`` when training completes,
    after GPA has installed its aggregate). With validation, ``<dir>/best.pt`` holds the epoch with the best
    validation accuracy so far (the prompts of that epoch, before any aggregation; written by
    :class:`~monai_cilmp.handlers.BestCheckpointSaver`); every checkpoint records that best (``"best"``: metric and
    epoch) so that a resumed run only replaces ``best.pt`` by a better epoch. Random streams need no saving: the
    trainer reseeds them at every epoch start from the run's seed and the epoch number.

    ``model_file`` (the model-zoo ``models/model.pt``) is a plain state dict of the trained parameters only: the best
    validation epoch's, or the final ones for a run without validation. The frozen backbone is rebuilt from the run's
    recorded weights, so ``network.load_state_dict(state, strict=False)`` (or MONAI's ``CheckpointLoader`` with
    ``strict=False``, ``ckpt_export``) completes a network built from the bundle's ``network_def``.

    Args:
        directory: where checkpoints go.
        network: a network with ``trainable_state_dict`` / ``load_trainable_state_dict`` (e.g. CILMP).
        optimizer: the optimiser (``None`` for a network with nothing to train).
        scheduler: the learning-rate scheduler, if any.
        gpa: the :class:`~monai_cilmp.handlers.GaussianPromptAggregation` handler, if any (the trainer hands over the
            one in its handlers when this is ``None``).
        metadata: JSON-able facts stored with every checkpoint (class names, backbone, hyper-parameters, ...).
        model_file: where the plain state dict of the best (or final) trained parameters goes (``None``: nowhere).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        network: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        scheduler: Any | None = None,
        gpa: Any | None = None,
        metadata: dict[str, Any] | None = None,
        model_file: str | os.PathLike | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.network, self.optimizer, self.scheduler, self.gpa = network, optimizer, scheduler, gpa
        self.metadata = dict(metadata or {})
        self.model_file = Path(model_file) if model_file is not None else None
        self.best: dict[str, Any] | None = None

    @property
    def last_path(self) -> Path:
        return self.directory / "last.pt"

    @property
    def final_path(self) -> Path:
        return self.directory / "final.pt"

    @property
    def best_path(self) -> Path:
        return self.directory / "best.pt"

    def state(self, engine: Engine | None) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "network": self.network.trainable_state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "gpa": None if self.gpa is None else self.gpa.state_dict(),
            "engine": None
            if engine is None
            else {
                "epoch": engine.state.epoch,
                "iteration": engine.state.iteration,
                "max_epochs": engine.state.max_epochs,
            },
            # fp16 loss scaling: its scale and growth tracker decide which of the next steps are skipped
            "scaler": None if getattr(engine, "scaler", None) is None else engine.scaler.state_dict(),
            "metadata": self.metadata,
            "best": self.best,
        }

    def save_last(self, engine: Engine) -> Path:
        return atomic_torch_save(self.state(engine), self.last_path)

    def save_best(self, epoch: int, metric: float) -> Path:
        """Record ``metric`` as the best validation result (at training ``epoch``), write ``best.pt`` and the
        model file."""
        self.best = {"metric": float(metric), "epoch": int(epoch)}
        state = self.state(None)
        state["engine"] = {"epoch": int(epoch)}
        path = atomic_torch_save(state, self.best_path)
        self.save_model(state["network"])
        return path

    def save_final(self, engine: Engine) -> Path | None:
        if engine.state.epoch < engine.state.max_epochs:
            return None  # terminated early: last.pt is what resume needs
        state = self.state(engine)
        path = atomic_torch_save(state, self.final_path)
        if self.best is None:  # no validation chose an epoch: the model file is the final state
            self.save_model(state["network"])
        return path

    def save_model(self, trainable: dict[str, torch.Tensor] | None = None) -> Path | None:
        """Write the plain state dict of the trained parameters to ``model_file`` (when there is one)."""
        if self.model_file is None:
            return None
        return atomic_torch_save(
            trainable if trainable is not None else self.network.trainable_state_dict(), self.model_file
        )

    def restore(self, engine: Engine, path: str | os.PathLike | None = None) -> int:
        """Load ``path`` (default ``last.pt``) into the network, optimiser, scheduler, GPA and ``engine`` (its position
        and, under fp16 autocast, its loss scaler).

        Returns:
            the epoch the run continues after.
        """
        state = load_checkpoint(path or self.last_path)
        self.network.load_trainable_state_dict(state["network"])
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
            if isinstance(self.scheduler, torch.optim.lr_scheduler.LambdaLR) and self.optimizer is not None:
                # the next epoch's rate from this run's schedule: an extended run (more epochs) continues on the cosine
                # of its new length, not on the rate the shorter schedule had stored (the same value otherwise)
                epoch = self.scheduler.last_epoch
                rates = [base * fn(epoch) for base, fn in zip(self.scheduler.base_lrs, self.scheduler.lr_lambdas)]
                for group, rate in zip(self.optimizer.param_groups, rates):
                    group["lr"] = rate
                self.scheduler._last_lr = rates
        if self.gpa is not None and state.get("gpa") is not None:
            self.gpa.load_state_dict(state["gpa"])
        self.best = state.get("best")
        if getattr(engine, "scaler", None) is not None and state.get("scaler"):
            engine.scaler.load_state_dict(state["scaler"])
        if state.get("engine"):
            engine.state.epoch = int(state["engine"]["epoch"])
            engine.state.iteration = int(state["engine"]["iteration"])
        return engine.state.epoch
