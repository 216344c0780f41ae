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
# four classes for base-to-novel (two base, two novel): colour channel and square or bar
CLASSES4 = [*CLASSES, "flat green bar", "round blue bar"]


def make_tiny_data(root: Path, per_class: int = 12, classes=CLASSES, keep_order: bool = False) -> dict[str, str]:
    """Classes of 48 px images that differ in colour (and shape); returns the datalist, knowledge and descriptions
    paths. The datalist lists the classes sorted by name (as ``prepare folder``), or in the given order with
    ``keep_order``."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(classes):
        folder = root / "images" / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 60, (48, 48, 3), dtype=np.uint8)
            rows = slice(12, 36) if label < 2 else slice(20, 28)
            image[rows, 12:36, (2, 0, 1, 2)[label]] = 220
            Image.fromarray(image).save(folder / f"{i}.png")
    datalist = datalist_from_folder(
        root / "images",
        list(classes) if keep_order else None,
        val_fraction=0.2,
        test_fraction=0.25,
        seed=0,
        preset="dermoscopy",
    )
    paths = {
        "datalist": str(root / "datalist.json"),
        "knowledge": str(root / "knowledge.safetensors"),
        "descriptions": str(root / "descriptions.json"),
    }
    write_datalist(datalist, paths["datalist"])
    random_bank(classes, lengths=(6, 9, 5, 7)[: len(classes)], dim=16).save(paths["knowledge"])
    descriptions = {}
    for name in classes:
        shape, colour, kind = name.split() if len(name.split()) == 3 else ("", "", name)
        descriptions[name] = {
            "description": f"a {shape} {kind}, {colour}" if colour else f"a {name}",
            "attributes": {"colour": colour or "grey", "shape": shape or "round"},
        }
    Path(paths["descriptions"]).write_text(json.dumps({"classes": descriptions}))
    return paths


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, str]:
    return make_tiny_data(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture(scope="session")
def tiny_data4(tmp_path_factory) -> dict[str, str]:
    return make_tiny_data(tmp_path_factory.mktemp("tiny_data4"), per_class=8, classes=CLASSES4)
