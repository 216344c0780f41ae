"""Open every image of a datalist once, before training, and report all the unusable ones together: files that
cannot be read, and images that would poison or break training (NaN or infinite values, a single intensity, a few
pixels, more dimensions than an image or a volume: the rule of :mod:`monai_cilmp.transforms.checks`)."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from monai_cilmp.transforms.checks import MIN_IMAGE_SIDE, image_problem
from monai_cilmp.transforms.readers import LoadMedicalImage

from .datalist import SPLITS

__all__ = ["MIN_IMAGE_SIDE", "check_images", "image_problem", "raise_for_unreadable"]


def check_images(datalist: Mapping[str, Any], num_workers: int = 2) -> list[str]:
    """Read every image of every split with the readers the presets use; return one message per unusable image
    (the rule of :func:`monai_cilmp.transforms.checks.image_problem`, which the readers apply to every image, so
    ``train``, ``evaluate``, ``predict`` and the MONAI Label app refuse the same images with the same sentence).

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
            loader(path)  # the loader applies the bad-image rule itself
        except Exception as e:  # every failure is reported, whatever its kind
            return str(e) if isinstance(e, (ValueError, FileNotFoundError)) else f"Cannot read '{path}': {e}."
        return None

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
