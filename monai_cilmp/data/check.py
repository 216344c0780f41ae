"""Open every image of a datalist once, before training, and report all the unreadable ones together."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from monai_cilmp.transforms.readers import LoadMedicalImage

from .datalist import SPLITS

__all__ = ["check_images", "raise_for_unreadable"]


def check_images(datalist: Mapping[str, Any], num_workers: int = 2) -> list[str]:
    """Read every image of every split with the readers the presets use; return one message per failure.

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
            loader(path)
        except Exception as e:  # every failure is reported, whatever its kind
            return str(e) if isinstance(e, (ValueError, FileNotFoundError)) else f"Cannot read '{path}': {e}."
        return None

    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        results = list(pool.map(read, paths))
    return [message for message in results if message]


def raise_for_unreadable(datalist: Mapping[str, Any], source: str, num_workers: int = 2) -> None:
    """Raise one error listing every image of ``datalist`` that cannot be read.

    Raises:
        ValueError: ``"N of M images in SOURCE cannot be read:"`` followed by one line per image.
    """
    failures = check_images(datalist, num_workers)
    if failures:
        total = len({str(item["image"]) for split in SPLITS for item in datalist.get(split, [])})
        lines = "\n".join(f"  {message}" for message in failures)
        raise ValueError(f"{len(failures)} of {total} images in {source} cannot be read:\n{lines}")
