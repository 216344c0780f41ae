"""The synthetic demo set: deterministic bytes, a valid balanced datalist, descriptions the knowledge step reads."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from monai_cilmp.data import SPLITS, load_datalist
from monai_cilmp.demo import SYNTHETIC_CLASSES, make_synthetic_dataset
from monai_cilmp.demo.synthetic import render_class
from monai_cilmp.knowledge import KnowledgeBank, extract_knowledge, load_description_file
from tests.demo.conftest import N_PER_CLASS


def _image_bytes(root: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*.png"))}


def test_the_same_seed_gives_the_same_bytes(demo_set, tmp_path):
    again = make_synthetic_dataset(tmp_path / "again", n_per_class=N_PER_CLASS, seed=0)
    first, second = _image_bytes(demo_set["images"]), _image_bytes(again["images"])
    assert len(first) == 4 * N_PER_CLASS and first == second
    assert Path(demo_set["descriptions"]).read_bytes() == Path(again["descriptions"]).read_bytes()
    strip = {demo_set["root"]: "", again["root"]: ""}
    lists = []
    for info in (demo_set, again):
        text = Path(info["datalist"]).read_text()
        for root, empty in strip.items():
            text = text.replace(root, empty)
        lists.append(text)
    assert lists[0] == lists[1]


def test_another_seed_gives_other_images():
    spec = SYNTHETIC_CLASSES[0]
    a, b = render_class(spec, 3, 32, seed=0), render_class(spec, 3, 32, seed=1)
    assert a.shape == (3, 32, 32, 3) and a.dtype == np.uint8
    assert not np.array_equal(a, b)
    assert np.array_equal(a, render_class(spec, 3, 32, seed=0))


def test_datalist_is_valid_and_balanced(demo_set):
    datalist = load_datalist(demo_set["datalist"])
    names = [c.name for c in SYNTHETIC_CLASSES]
    assert datalist["class_names"] == names == demo_set["class_names"]
    assert datalist["preset"] == "dermoscopy" and datalist["name"] == "synthetic-dermoscopy"
    seen = set()
    for split in SPLITS:
        counts = Counter(item["label"] for item in datalist[split])
        assert sorted(counts) == [0, 1, 2, 3] and len(set(counts.values())) == 1, (split, counts)
        assert demo_set["counts"][split] == len(datalist[split])
        for item in datalist[split]:
            path = Path(item["image"])
            assert path.is_file() and path.parent.name == names[item["label"]].replace(" ", "_")
            seen.add(path)
    assert len(seen) == 4 * N_PER_CLASS  # every image in exactly one split


def test_images_are_rgb_pngs_of_the_asked_size(demo_set):
    from PIL import Image

    image = Image.open(next(Path(demo_set["images"]).rglob("*.png")))
    assert image.mode == "RGB" and image.size == (96, 96)


def test_classes_look_as_described():
    """The descriptions' colour words hold in the pixels: red vascular lesions, the darkest melanomas."""
    means = {}
    for spec in SYNTHETIC_CLASSES:
        images = render_class(spec, 12, 48, seed=3, acquisition=0).astype(float) / 255
        centre = images[:, 18:30, 18:30].reshape(12, -1, 3)  # the lesion always covers the centre
        means[spec.name] = np.median(centre, axis=1).mean(axis=0)
    red_excess = {name: m[0] - m[1:].mean() for name, m in means.items()}
    assert max(red_excess, key=red_excess.get) == "vascular lesion"
    assert min(means, key=lambda name: means[name].sum()) == "melanoma"
    assert means["seborrhoeic keratosis"].sum() > means["melanocytic naevus"].sum()  # light tan vs brown


def test_too_few_images_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least 3"):
        make_synthetic_dataset(tmp_path, n_per_class=2)


def test_descriptions_file_builds_a_knowledge_bank(demo_set, tmp_path):
    descriptions = load_description_file(demo_set["descriptions"])
    assert list(descriptions) == demo_set["class_names"]
    for spec in SYNTHETIC_CLASSES:
        assert descriptions[spec.name].text == spec.description and descriptions[spec.name].attributes
    bank = extract_knowledge(descriptions=descriptions, offline=True, device="cpu", dtype="fp32", max_length=24)
    assert bank.class_names == demo_set["class_names"] and bank.dim == 384
    assert all(1 <= n <= 24 for n in bank.lengths)
    bank.save(tmp_path / "kb.safetensors")
    assert KnowledgeBank.load(tmp_path / "kb.safetensors").class_names == bank.class_names


def test_descriptions_file_works_with_the_cli(demo_set, tmp_path, capsys):
    from monai_cilmp.cli import main

    out = tmp_path / "kb.safetensors"
    assert main(["knowledge", "extract", "--descriptions", demo_set["descriptions"], "--out", str(out)]) == 0
    assert KnowledgeBank.load(out).class_names == demo_set["class_names"]
