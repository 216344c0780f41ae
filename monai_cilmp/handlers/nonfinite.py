"""Stop training at the first non-finite input or loss, naming the files of the batch, before any weight changes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from monai_cilmp.engines.distributed import any_rank, rank_and_world_size

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

    The check runs once per iteration, after the backward pass has been queued and before the optimiser step
    (MONAI's ``IterationEvents.BACKWARD_COMPLETED``): no parameter ever becomes NaN, and the epoch's checkpoint is
    not written, so ``last.pt`` still holds the last good epoch.

    On a GPU, reading a device value back waits for the device to finish the work queued so far. Checking the loss
    right after the forward pass (before the backward is queued) would leave the GPU idle while the host queues the
    whole backward pass; checked after it, the host waits only while the GPU runs work that is already queued, and
    one such wait per iteration is all the guard costs. Images still on the host are checked when the iteration
    starts (no device involved); images already on the device (a device-resident cache) are checked on the device
    and read back together with the loss, in the same single wait.

    Under ``torch.distributed`` the decision is the ranks' together: every rank checks its own shard, the ranks agree
    in one all-reduce of a flag (on the device, in the same single wait) and, when any rank found a non-finite value,
    every rank raises the same sentence (the first such rank's, naming its files). A rank that raised alone would
    leave the others waiting for it in DDP's next gradient all-reduce. Images on the host are then checked with the
    loss as well (after the backward pass, which DDP needs every rank to run; still before any weight changes).

    Args:
        image_key: the batch key of the images.
    """

    def __init__(self, image_key: str = "image") -> None:
        self.image_key = image_key
        self._pending_images: torch.Tensor | None = None

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events
        from monai.engines.utils import IterationEvents

        engine.add_event_handler(Events.ITERATION_STARTED, self.check_inputs)
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self.check_loss)

    def check_inputs(self, engine: Engine) -> None:
        self._pending_images = None
        batch = engine.state.batch
        images = batch.get(self.image_key) if isinstance(batch, dict) else None
        if not isinstance(images, torch.Tensor) or not images.is_floating_point():
            return
        finite = torch.isfinite(images.reshape(images.shape[0], -1)).all(dim=1)
        # on the device, or with other ranks to agree with: read back with the loss, in check_loss's single wait
        if images.device.type != "cpu" or rank_and_world_size()[1] > 1:
            self._pending_images = finite
            return
        if not bool(finite.all()):
            raise NonFiniteError(self._images_message(engine, finite))

    def _images_message(self, engine: Engine, finite: torch.Tensor) -> str:
        batch = engine.state.batch
        files = batch_files(batch, self.image_key)
        bad = [f for f, ok in zip(files, finite.tolist()) if not ok] if len(files) == len(finite) else files
        return (
            f"Image(s) {_describe(bad)} hold NaN or infinite values (epoch {engine.state.epoch}): fix or remove them "
            "from the datalist (`monai-cilmp prepare --check` lists such images), then resume with --resume."
        )

    def _loss_message(self, engine: Engine, loss: Any) -> str:
        value = float(loss.detach().float().sum()) if isinstance(loss, torch.Tensor) else float("nan")
        return (
            f"The training loss became {value} at epoch {engine.state.epoch}, "
            f"iteration {engine.state.iteration}, on {_describe(batch_files(engine.state.batch, self.image_key))}; "
            "no weights were changed and checkpoints/last.pt holds the last good epoch: check those images or "
            "lower the learning rate, then resume with --resume."
        )

    def check_loss(self, engine: Engine) -> None:
        from monai.utils import CommonKeys

        loss = engine.state.output.get(CommonKeys.LOSS) if isinstance(engine.state.output, dict) else None
        images, self._pending_images = self._pending_images, None
        checks = [] if images is None else [images.all()]
        if isinstance(loss, torch.Tensor):
            checks.append(torch.isfinite(loss.detach()).all())
        distributed = rank_and_world_size()[1] > 1
        if not checks and not distributed:
            return
        ok = torch.stack([c.to(checks[-1].device) for c in checks]).all() if checks else torch.tensor(True)
        if distributed:  # one flag for all ranks; still the iteration's one host-device synchronisation
            if not any_rank(~ok):
                return
        elif bool(ok):  # the iteration's one host-device synchronisation
            return
        message = None
        if images is not None and not bool(images.all()):
            message = self._images_message(engine, images)
        elif not bool(ok):
            message = self._loss_message(engine, loss)
        if distributed:  # every rank raises the same sentence: the first rank's that found something
            messages: list[Any] = [None] * rank_and_world_size()[1]
            torch.distributed.all_gather_object(messages, message)
            message = next(m for m in messages if m is not None)
        raise NonFiniteError(message)
