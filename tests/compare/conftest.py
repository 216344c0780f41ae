"""A tiny labelled image set, knowledge bank and descriptions file for comparisons (offline, seconds to make)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_cilmp.data import datalist_from_folder, write_datalist
from tests.conftest import random_bank

CLASSES = ["flat blue lesion", "round red lesion"]


def make_tiny_data(root: Path, per_class: int = 12) -> dict[str, str]:
    """Two classes of 48 px images that differ in colour; returns the datalist, knowledge and descriptions paths."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        folder = root / "images" / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 60, (48, 48, 3), dtype=np.uint8)
            image[12:36, 12:36, 2 if label == 0 else 0] = 220
            Image.fromarray(image).save(folder / f"{i}.png")
    datalist = datalist_from_folder(root / "images", val_fraction=0.2, test_fraction=0.25, seed=0, preset="dermoscopy")
    paths = {
        "datalist": str(root / "datalist.json"),
        "knowledge": str(root / "knowledge.safetensors"),
        "descriptions": str(root / "descriptions.json"),
    }
    write_datalist(datalist, paths["datalist"])
    random_bank(CLASSES, lengths=(6, 9), dim=16).save(paths["knowledge"])
    descriptions = {
        "flat blue lesion": {"description": "a flat lesion, blue", "attributes": {"colour": "blue", "shape": "flat"}},
        "round red lesion": {"description": "a round lesion, red", "attributes": {"colour": "red", "shape": "round"}},
    }
    Path(paths["descriptions"]).write_text(json.dumps({"classes": descriptions}))
    return paths


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, str]:
    return make_tiny_data(tmp_path_factory.mktemp("tiny_data"))
