"""Open every image of a datalist once, before training, and report all the unusable ones together: files that
cannot be read, and images that would poison or break training (NaN or infinite values, a single intensity, a few
pixels, more dimensions than an image or a volume)."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from monai_cilmp.transforms.readers import LoadMedicalImage

from .datalist import SPLITS

__all__ = ["MIN_IMAGE_SIDE", "check_images", "image_problem", "raise_for_unreadable"]

#: images with a side shorter than this many pixels are degenerate (a 1x1 file is no image to learn from)
MIN_IMAGE_SIDE = 8


def image_problem(array: np.ndarray, path: str) -> str | None:
    """Why a loaded image (channels last, as read) cannot be used, in one sentence naming ``path``; ``None`` if fine.

    Accepted: 2-D images, 2-D images with a last axis of 3 or 4 colour channels, and 3-D volumes or multi-frame
    files (the presets take a slice).
    """
    shape = "x".join(str(s) for s in array.shape)
    if array.ndim < 2 or array.ndim > 3:
        return (
            f"'{path}' has {array.ndim} dimensions ({shape}): only 2-D images and 3-D volumes are supported; "
            "extract one image or volume from it."
        )
    if min(array.shape[:2]) < MIN_IMAGE_SIDE:
        return f"'{path}' is a degenerate image of {shape} pixels (each side needs {MIN_IMAGE_SIDE} or more)."
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        return f"'{path}' holds NaN or infinite values: fix or remove it; it would turn training into NaN."
    if array.size and array.min() == array.max():
        return f"'{path}' has a single intensity value ({array.flat[0]}) everywhere: it is empty or blank."
    return None


def check_images(datalist: Mapping[str, Any], num_workers: int = 2) -> list[str]:
    """Read every image of every split with the readers the presets use; return one message per unusable image
    (see :func:`image_problem`).

    Args:
        datalist: a datalist.
        num_workers: reading threads (decoders release the GIL, so reading overlaps with decoding).

    Returns:
        the failures' one-sentence messages (each naming its file), in datalist order; empty when all read.
    """
    paths = list(dict.fromkeys(str(item["image"]) for split in SPLITS for item in datalist.get(split, [])))

    def read(path: str) -> str | None:
        # one loader per read: MONAI's NIfTI reader keeps the file name between read() and get_data()
        loader = LoadMedicalImage(image_only=True, dtype=None, ensure_channel_first=False)
        try:
            image = loader(path)
        except Exception as e:  # every failure is reported, whatever its kind
            return str(e) if isinstance(e, (ValueError, FileNotFoundError)) else f"Cannot read '{path}': {e}."
        return image_problem(np.asarray(image), path)

    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        results = list(pool.map(read, paths))
    return [message for message in results if message]


def raise_for_unreadable(datalist: Mapping[str, Any], source: str, num_workers: int = 2) -> None:
    """Raise one error listing every image of ``datalist`` that cannot be read.

    Raises:
        ValueError: ``"N of M images in SOURCE cannot be used:"`` followed by one line per image.
    """
    failures = check_images(datalist, num_workers)
    if failures:
        total = len({str(item["image"]) for split in SPLITS for item in datalist.get(split, [])})
        lines = "\n".join(f"  {message}" for message in failures)
        raise ValueError(f"{len(failures)} of {total} images in {source} cannot be used:\n{lines}")
