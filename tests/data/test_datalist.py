"""The datalist format: splitting, validating, atomic writing, reading (also with MONAI's own reader)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from monai.data import load_decathlon_datalist

from monai_cilmp.data import (
    load_datalist,
    make_datalist,
    stratified_split,
    summarize_datalist,
    validate_datalist,
    write_datalist,
)
from monai_cilmp.data.datalist import match_label

from .conftest import only_these_files

CLASSES = ["normal", "pneumonia", "covid"]


def items(counts=(50, 30, 7)):
    return [(f"/data/{label}/{i:03d}.png", label) for label, n in enumerate(counts) for i in range(n)]


def test_stratified_split_is_stratified_seeded_and_disjoint():
    splits = stratified_split(items(), val_fraction=0.1, test_fraction=0.2, seed=0)
    counts = {split: Counter(label for _, label in v) for split, v in splits.items()}
    assert counts["test"] == {0: 10, 1: 6, 2: 1} and counts["validation"] == {0: 5, 1: 3, 2: 1}
    assert counts["training"] == {0: 35, 1: 21, 2: 5}
    paths = [p for v in splits.values() for p, _ in v]
    assert len(paths) == len(set(paths)) == 87
    assert stratified_split(list(reversed(items())), 0.1, 0.2, seed=0) == splits  # input order does not matter
    assert stratified_split(items(), 0.1, 0.2, seed=1) != splits
    # adding a class leaves the other classes' splits as they were
    more = stratified_split(items((50, 30, 7, 12)), 0.1, 0.2, seed=0)
    assert [x for x in more["test"] if x[1] < 3] == splits["test"]


def test_stratified_split_keeps_a_training_image_per_class():
    splits = stratified_split([("a.png", 0), ("b.png", 1), ("c.png", 1)], val_fraction=0.4, test_fraction=0.5)
    assert Counter(label for _, label in splits["training"]) == {0: 1, 1: 1}
    with pytest.raises(ValueError, match="must be in \\[0, 1\\) and sum to less than 1"):
        stratified_split(items(), 0.5, 0.5)


def test_validation_messages():
    with pytest.raises(ValueError) as e:
        make_datalist({"training": [("a.png", 0), ("b.png", 1)]}, CLASSES, source="'mine'")
    assert str(e.value) == "Class 'covid' has no images in the training split of 'mine'."
    with pytest.raises(ValueError, match="has label 3, out of range for 3 classes"):
        make_datalist({"training": [("a.png", 3)]}, CLASSES)
    with pytest.raises(ValueError, match="repeats class name"):
        validate_datalist({"class_names": ["a", "a"], "training": []})
    with pytest.raises(ValueError) as e:
        match_label("pneumonai", CLASSES, "line 3 of 'labels.csv'")
    assert str(e.value) == (
        "Unknown label 'pneumonai' in line 3 of 'labels.csv' (did you mean 'pneumonia'?); "
        "valid labels: normal, pneumonia, covid."
    )
    assert (
        match_label("Normal", CLASSES, "x") == 0 and match_label("dyed_lifted-Polyps", ["dyed lifted polyps"], "x") == 0
    )


def test_write_is_atomic_and_reads_back(tmp_path):
    datalist = make_datalist(stratified_split(items(), 0.1, 0.2), CLASSES, name="toy", preset="xray")
    assert datalist["preset"] == "radiography"  # the preset's name, not the alias
    out = write_datalist(datalist, tmp_path / "sub" / "toy.json")
    assert only_these_files(out.parent) == ["toy.json"]
    assert json.loads(out.read_text()) == datalist
    assert "training: 61 images (normal 35, pneumonia 21, covid 5)" in summarize_datalist(datalist)

    # a failure while writing leaves the previous file untouched and no temporary file behind
    broken = dict(datalist, note=object())
    with pytest.raises(TypeError):
        write_datalist(broken, out)
    assert only_these_files(out.parent) == ["toy.json"] and json.loads(out.read_text()) == datalist
    with pytest.raises(ValueError):
        write_datalist(dict(datalist, class_names=["only one"]), tmp_path / "new.json")
    assert not (tmp_path / "new.json").exists()


def test_relative_paths_resolve_against_the_datalist_folder(tmp_path):
    (tmp_path / "imgs").mkdir()
    data = {
        "class_names": ["a", "b"],
        "training": [{"image": "imgs/1.png", "label": 0}, {"image": "/abs/2.png", "label": 1}],
    }
    path = tmp_path / "list.json"
    path.write_text(json.dumps(data))
    with pytest.raises(FileNotFoundError, match=r"2 image files listed in datalist '.*list.json' do not exist"):
        load_datalist(path)
    loaded = load_datalist(path, check_files=False)
    assert loaded["training"][0]["image"] == str(tmp_path / "imgs" / "1.png")
    assert loaded["training"][1]["image"] == "/abs/2.png" and loaded["validation"] == [] == loaded["test"]
    # MONAI's own reader agrees
    monai_items = load_decathlon_datalist(str(path), is_segmentation=False, data_list_key="training")
    assert [i["image"] for i in monai_items] == [i["image"] for i in loaded["training"]]
    with pytest.raises(FileNotFoundError, match="Datalist '.*missing.json' does not exist."):
        load_datalist(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_datalist(tmp_path / "bad.json")
