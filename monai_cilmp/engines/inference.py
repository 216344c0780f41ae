"""Predicting a list of image files where some may be unreadable: the bad ones are reported, the rest predicted."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from monai_cilmp.data import IMAGE_EXTENSIONS
from monai_cilmp.data.custom import _ignored, list_images
from monai_cilmp.engines.distributed import ShardSampler, rank_and_world_size
from monai_cilmp.engines.run_setup import amp_options
from monai_cilmp.transforms.readers import reader_error

__all__ = ["ImagePredictions", "inference_images", "predict_images"]

LOGGER = logging.getLogger(__name__)


class _ItemsOrErrors(torch.utils.data.Dataset):
    """``(index, image tensor or None, error or None)`` of each file: a file that fails is an error, not a crash."""

    def __init__(self, paths: Sequence[str], transform: Callable[[dict], dict], key: str) -> None:
        self.paths, self.transform, self.key = list(paths), transform, key

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        path = self.paths[index]
        try:
            image = torch.as_tensor(self.transform({self.key: path})[self.key]).float()
        except Exception as e:  # any failure of this one file is reported, and the others go on
            cause = reader_error(e) or e  # the reader's sentence, not MONAI's "applying transform <...>" wrapper
            message = " ".join(str(cause).split()) or type(cause).__name__
            return index, None, message if path in message else f"'{path}': {message}"
        if not bool(torch.isfinite(image).all()):
            return index, None, f"'{path}' holds NaN or infinite values: fix or remove it."
        return index, image.as_subclass(torch.Tensor), None


def _collate(batch: list[tuple[int, torch.Tensor | None, str | None]]) -> dict[str, Any]:
    good = [(i, image) for i, image, _ in batch if image is not None]
    return {
        "index": [i for i, _ in good],
        "image": torch.stack([image for _, image in good]) if good else None,
        "errors": {i: error for i, _, error in batch if error is not None},
    }


class ImagePredictions(dict):
    """``{path: probabilities (C,)}`` of the images predicted, in input order, with ``errors``: ``{path: sentence}``
    of the files that could not be predicted, and ``sets``: ``{path: (C,) bool}`` conformal prediction sets (``None``
    without a conformal calibration)."""

    errors: dict[str, str]
    sets: dict[str, np.ndarray] | None


@torch.no_grad()
def predict_images(
    network: nn.Module,
    paths: Sequence[str],
    transform: Callable[[dict], dict],
    device: torch.device | str | None = None,
    batch_size: int = 16,
    num_workers: int = 0,
    key: str = "image",
    calibration: Any = None,
) -> ImagePredictions:
    """Class probabilities of every readable image of ``paths``; one sentence per file that is not.

    Args:
        network: the classifier (logits ``(B, C)``).
        paths: image files.
        transform: the dictionary transform that loads and preprocesses ``{key: path}``.
        device: where to run (default: the network's).
        batch_size: images per forward pass.
        num_workers: data loading processes.
        key: the item key of the image.
        calibration: a :class:`~monai_cilmp.engines.RunCalibration` (its temperature and conformal sets), or
            ``None`` for plain softmax probabilities.

    Under ``torch.distributed`` every rank predicts its share of ``paths``
    (:class:`~monai_cilmp.engines.distributed.ShardSampler`: no image twice) and every rank returns the whole result,
    gathered in input order: the same as one process up to the float rounding of other batch compositions.

    Returns:
        the predictions (see :class:`ImagePredictions`).
    """

    device = torch.device(device) if device is not None else next(network.parameters()).device
    use_amp, amp_kwargs = amp_options(device, None)
    items = _ItemsOrErrors(paths, transform, key)
    world_size = rank_and_world_size()[1]
    loader = torch.utils.data.DataLoader(
        items,
        batch_size=batch_size,
        sampler=ShardSampler(items) if world_size > 1 else None,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
    )
    network.eval()
    probabilities: dict[int, np.ndarray] = {}
    sets: dict[int, np.ndarray] = {}
    errors: dict[int, str] = {}
    for batch in loader:
        errors.update(batch["errors"])
        if batch["image"] is None:
            continue
        images = batch["image"].to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=use_amp, **amp_kwargs):
            logits = network(images)
        logits = logits.float().cpu()
        probs = calibration.probabilities(logits.numpy()) if calibration else torch.softmax(logits, -1).numpy()
        members = calibration.prediction_sets(probs) if calibration else None
        for i, (row, index) in enumerate(zip(probs, batch["index"])):
            if np.isfinite(row).all():
                probabilities[index] = row
                if members is not None:
                    sets[index] = members[i]
            else:
                errors[index] = f"'{paths[index]}' gave non-finite class scores; the image may be corrupt."
    if world_size > 1:  # every rank's share, keyed by input position: merged, then put in input order below
        shares: list[Any] = [None] * world_size
        torch.distributed.all_gather_object(shares, (probabilities, sets, errors))
        for share_probabilities, share_sets, share_errors in shares:
            probabilities.update(share_probabilities)
            sets.update(share_sets)
            errors.update(share_errors)
    out = ImagePredictions((paths[i], probabilities[i]) for i in sorted(probabilities))
    out.errors = {paths[i]: errors[i] for i in sorted(errors)}
    out.sets = {paths[i]: sets[i] for i in sorted(sets)} if sets else None
    return out


def inference_images(input_dir: str | os.PathLike, shown: int = 5) -> list[str]:
    """The image files under ``input_dir`` (recursively, by extension, hidden files left out), sorted; the other files
    are skipped with a note in the log naming a few of them.

    Raises:
        FileNotFoundError: ``input_dir`` is not a folder.
        ValueError: it holds no image.
    """

    folder = Path(input_dir)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"The input folder '{folder}' does not exist: set input_dir to a folder of images to predict."
        )
    images = list_images(folder)
    chosen = set(images)
    others = sorted(
        os.path.abspath(p)
        for p in folder.rglob("*")
        if p.is_file()
        and os.path.abspath(p) not in chosen
        and not any(_ignored(part) for part in p.relative_to(folder).parts)
    )
    if not images:
        found = f"only {len(others)} other files" if others else "nothing"
        raise ValueError(
            f"The input folder '{folder}' holds no images ({found}; images end in {', '.join(IMAGE_EXTENSIONS)}): "
            "put images there or set input_dir to another folder."
        )
    if others:
        names = ", ".join(os.path.basename(p) for p in others[:shown]) + (", ..." if len(others) > shown else "")
        LOGGER.warning("Skipped %d files of '%s' that are not images (%s).", len(others), folder, names)
    return images
