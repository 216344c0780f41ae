"""Stop training at the first non-finite input or loss, naming the files of the batch, before any weight changes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["NonFiniteError", "NonFiniteGuard", "batch_files"]


class NonFiniteError(ValueError):
    """Training met NaN or infinite values; the message names the batch's files and what to do."""


def batch_files(batch: Any, key: str = "image") -> list[str]:
    """The source file of every item of a collated batch, from MONAI's metadata (empty when unknown)."""
    if not isinstance(batch, dict):
        return []
    meta = getattr(batch.get(key), "meta", None) or batch.get(f"{key}_meta_dict") or {}
    files = meta.get("filename_or_obj", []) if isinstance(meta, dict) else []
    return [str(f) for f in (files if isinstance(files, (list, tuple)) else [files])]


def _describe(files: list[str], limit: int = 5) -> str:
    if not files:
        return "a batch of unknown files"
    shown = ", ".join(f"'{f}'" for f in files[:limit])
    return shown + (f" and {len(files) - limit} more" if len(files) > limit else "")


class NonFiniteGuard:
    """Raise :class:`NonFiniteError` when a training batch holds non-finite images or gives a non-finite loss.

    Images are checked when the iteration starts, the loss right after it is computed (MONAI's
    ``IterationEvents.LOSS_COMPLETED``), before the backward pass and the optimiser step: no parameter ever becomes
    NaN, and the epoch's checkpoint is not written, so ``last.pt`` still holds the last good epoch.

    Args:
        image_key: the batch key of the images.
    """

    def __init__(self, image_key: str = "image") -> None:
        self.image_key = image_key

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events
        from monai.engines.utils import IterationEvents

        engine.add_event_handler(Events.ITERATION_STARTED, self.check_inputs)
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self.check_loss)

    def check_inputs(self, engine: Engine) -> None:
        batch = engine.state.batch
        images = batch.get(self.image_key) if isinstance(batch, dict) else None
        if not isinstance(images, torch.Tensor) or not images.is_floating_point():
            return
        finite = torch.isfinite(images.reshape(images.shape[0], -1)).all(dim=1)
        if bool(finite.all()):
            return
        files = batch_files(batch, self.image_key)
        bad = [f for f, ok in zip(files, finite.tolist()) if not ok] if len(files) == len(finite) else files
        raise NonFiniteError(
            f"Image(s) {_describe(bad)} hold NaN or infinite values (epoch {engine.state.epoch}): fix or remove them "
            "from the datalist (`monai-cilmp prepare --check` lists such images), then resume with --resume."
        )

    def check_loss(self, engine: Engine) -> None:
        from monai.utils import CommonKeys

        loss = engine.state.output.get(CommonKeys.LOSS) if isinstance(engine.state.output, dict) else None
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss.detach()).all()):
            raise NonFiniteError(
                f"The training loss became {float(loss.detach().float().sum())} at epoch {engine.state.epoch}, "
                f"iteration {engine.state.iteration}, on {_describe(batch_files(engine.state.batch, self.image_key))}; "
                "no weights were changed and checkpoints/last.pt holds the last good epoch: check those images or "
                "lower the learning rate, then resume with --resume."
            )
