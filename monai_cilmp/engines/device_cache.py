"""A device-resident cache of preprocessed training images, augmented on the device (few-shot training).

A few-shot training set is small (16 shots of a few classes: a few hundred images) and read every epoch; decoding
and resizing the same files again each epoch on the host can then cost more than the training step itself. Here the
deterministic head of the training pipeline (loading, intensity preset, resizing: everything before the first random
transform) runs once, its output is kept on the training device (MONAI's ``CacheDataset`` with ``ToDeviced`` as the
last cached step), and only the random tail (augmentation, crop, normalisation) runs per item, on that device, with
MONAI's transforms (their torch backends run on a GPU). The loader is then a plain in-process one (``num_workers=0``:
device tensors cannot cross process boundaries).

The items are what the uncached pipeline gives for the same random state (tested on the CPU); the trainer's per-epoch
reseeding (:func:`~monai_cilmp.engines.reseed`) reaches the random tail as before, so resumed runs replay the same
augmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["device_cached_dataset", "device_cached_loader", "split_at_first_random"]


def split_at_first_random(transform: Any) -> tuple[list, list]:
    """The transforms of a ``Compose`` before its first random (or non-MONAI) transform, and the rest.

    This is where ``CacheDataset`` stops caching: the head is deterministic, the tail runs per item.
    """
    from monai.transforms import Compose, RandomizableTrait, Transform

    steps = list(transform.transforms) if isinstance(transform, Compose) else [transform]
    for i, step in enumerate(steps):
        if isinstance(step, RandomizableTrait) or not isinstance(step, Transform):
            return steps[:i], steps[i:]
    return steps, []


def device_cached_dataset(
    data: Sequence[dict],
    transform: Any,
    device: torch.device | str,
    keys: Sequence[str] = ("image",),
    cache_num_workers: int = 0,
):
    """A ``CacheDataset`` whose cached items (the deterministic head of ``transform``) live on ``device``.

    Args:
        data: the datalist items (``{"image": path, "label": ...}``).
        transform: the full training pipeline (e.g. a preset's ``train_transforms``).
        device: where the cache and the random tail live (the training device).
        keys: the keys moved to the device (the labels stay where they are; the engine moves them).
        cache_num_workers: processes that fill the cache (the head runs once per item).

    Returns:
        a ``monai.data.CacheDataset`` (its ``transform`` is the whole pipeline, so the trainer's reseeding reaches it).
    """
    from monai.data import CacheDataset
    from monai.transforms import Compose, ToDeviced

    head, tail = split_at_first_random(transform)
    pipeline = Compose([*head, ToDeviced(keys=list(keys), device=torch.device(device)), *tail])
    return CacheDataset(data, transform=pipeline, cache_rate=1.0, num_workers=int(cache_num_workers), progress=False)


def device_cached_loader(
    data: Sequence[dict],
    transform: Any,
    device: torch.device | str,
    batch_size: int,
    shuffle: bool = True,
    keys: Sequence[str] = ("image",),
    cache_num_workers: int = 0,
):
    """A loader over :func:`device_cached_dataset` (in-process, since its tensors live on the device).

    Args:
        data: the datalist items.
        transform: the full training pipeline.
        device: the training device.
        batch_size: items per batch.
        shuffle: reshuffle every epoch (from torch's global random state, which the trainer reseeds per epoch).
        keys: the keys cached on the device.
        cache_num_workers: processes that fill the cache.
    """
    from monai.data import DataLoader

    dataset = device_cached_dataset(data, transform, device, keys, cache_num_workers)
    return DataLoader(dataset, batch_size=int(batch_size), shuffle=shuffle, num_workers=0)
