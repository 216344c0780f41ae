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

    The check runs once per iteration, after the backward pass has been queued and before the optimiser step
    (MONAI's ``IterationEvents.BACKWARD_COMPLETED``): no parameter ever becomes NaN, and the epoch's checkpoint is
    not written, so ``last.pt`` still holds the last good epoch.

    On a GPU, reading a device value back waits for the device to finish the work queued so far. Checking the loss
    right after the forward pass (before the backward is queued) would leave the GPU idle while the host queues the
    whole backward pass; checked after it, the host waits only while the GPU runs work that is already queued, and
    one such wait per iteration is all the guard costs. Images still on the host are checked when the iteration
    starts (no device involved); images already on the device (a device-resident cache) are checked on the device
    and read back together with the loss, in the same single wait.

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
        if images.device.type != "cpu":  # read back with the loss, in check_loss's single wait
            self._pending_images = finite
            return
        if not bool(finite.all()):
            self._raise_images(engine, finite)

    def _raise_images(self, engine: Engine, finite: torch.Tensor) -> None:
        batch = engine.state.batch
        files = batch_files(batch, self.image_key)
        bad = [f for f, ok in zip(files, finite.tolist()) if not ok] if len(files) == len(finite) else files
        raise NonFiniteError(
            f"Image(s) {_describe(bad)} hold NaN or infinite values (epoch {engine.state.epoch}): fix or remove them "
            "from the datalist (`monai-cilmp prepare --check` lists such images), then resume with --resume."
        )

    def check_loss(self, engine: Engine) -> None:
        from monai.utils import CommonKeys

        loss = engine.state.output.get(CommonKeys.LOSS) if isinstance(engine.state.output, dict) else None
        images, self._pending_images = self._pending_images, None
        checks = [] if images is None else [images.all()]
        if isinstance(loss, torch.Tensor):
            checks.append(torch.isfinite(loss.detach()).all())
        if not checks:
            return
        ok = checks[0] if len(checks) == 1 else torch.stack([c.to(checks[-1].device) for c in checks]).all()
        if bool(ok):  # the iteration's one host-device synchronisation
            return
        if images is not None and not bool(images.all()):
            self._raise_images(engine, images)
        raise NonFiniteError(
            f"The training loss became {float(loss.detach().float().sum())} at epoch {engine.state.epoch}, "
            f"iteration {engine.state.iteration}, on {_describe(batch_files(engine.state.batch, self.image_key))}; "
            "no weights were changed and checkpoints/last.pt holds the last good epoch: check those images or "
            "lower the learning rate, then resume with --resume."
        )
