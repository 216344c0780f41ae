"""Small image trees for the data tests (tiny valid PNG/JPEG files; prepare never opens them unless asked)."""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

import numpy as np


@cache
def image_bytes(fmt: str = "PNG", size: int = 8, seed: int = 0) -> bytes:
    from PIL import Image

    array = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt)
    return buffer.getvalue()


def touch_images(folder: Path, names, fmt: str = "PNG") -> list[Path]:
    """Write a tiny valid image under each of ``names`` in ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image_bytes("JPEG" if name.lower().endswith((".jpg", ".jpeg")) else fmt))
        paths.append(path)
    return paths


def class_tree(root: Path, counts: dict[str, int], ext: str = ".png") -> Path:
    """``root/<class>/<i><ext>`` with ``counts[class]`` images each."""
    for name, n in counts.items():
        touch_images(root / name, [f"{i:04d}{ext}" for i in range(n)])
    return root


def only_these_files(folder: Path) -> list[str]:
    """Names in ``folder`` (to check that a failed write left no file, temporary or final)."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
