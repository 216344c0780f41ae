"""Published split files (CoOp / BiomedCoOp format) as datalists, their path checks, and Dassl's few-shot draw."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from monai_cilmp.cli import main
from monai_cilmp.data import (
    datalist_from_split_file,
    few_shot_datalist,
    get_dataset,
    load_datalist,
    prepare_dataset,
    safe_join,
)

from .conftest import class_tree, only_these_files, touch_images

# BiomedCoOp's BUSI: its class folders and names, in its label order (not ours: normal, malignant, benign)
BUSI = [("benign_tumor", "benign tumor"), ("malignant_tumor", "malignant tumor"), ("normal_scan", "normal scan")]


def biomedcoop_tree(root: Path, per_class=(9, 7, 5), name: str = "BUSI", classes=BUSI) -> Path:
    """``<root>/<name>/<name>/<class folder>/*.png`` and ``<root>/<name>/split_<name>.json`` as BiomedCoOp ships them.

    The split interleaves labels in an order of first appearance that is not 0, 1, 2 (as in several of
    BiomedCoOp's files) and is not sorted by path, so that a reader that sorts or regroups would not reproduce it.
    """
    rng = random.Random(0)
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    for label, ((folder, class_name), n) in enumerate(zip(classes, per_class)):
        names = [f"{folder}/{class_name.split()[0]} ({i}).png" for i in range(n)]
        touch_images(root / name / name, names)
        for i, relative in enumerate(names):
            key = "test" if i % 3 == 2 else "val" if i % 4 == 1 else "train"
            split[key].append([relative, label, class_name])
    for key in split:
        rng.shuffle(split[key])
    split["train"].sort(key=lambda entry: entry[1] != 1)  # label 1 appears first
    (root / name / f"split_{name}.json").write_text(json.dumps(split, indent=4))
    return root / name / f"split_{name}.json"


def as_file_lists(datalist: dict, images: Path) -> dict[str, list]:
    """The datalist's splits back in the split file's form."""
    names = datalist["class_names"]
    keys = {"train": "training", "val": "validation", "test": "test"}
    return {
        key: [[Path(i["image"]).relative_to(images).as_posix(), i["label"], names[i["label"]]] for i in datalist[split]]
        for key, split in keys.items()
    }


def test_a_split_file_gives_its_train_val_test_lists_exactly(tmp_path):
    split_file = biomedcoop_tree(tmp_path)
    published = json.loads(split_file.read_text())
    datalist = datalist_from_split_file(split_file)  # images: <dir>/BUSI next to split_BUSI.json
    assert datalist["class_names"] == ["benign tumor", "malignant tumor", "normal scan"]
    assert as_file_lists(datalist, tmp_path / "BUSI" / "BUSI") == published
    assert datalist["split_file"]["file"] == "split_BUSI.json" and len(datalist["split_file"]["sha256"]) == 64

    # with the dataset: the registry's spelling of the classes, the file's label order (so base/novel is the papers')
    named = datalist_from_split_file(split_file, tmp_path / "BUSI" / "BUSI", dataset="busi")
    assert named["class_names"] == ["benign", "malignant", "normal"] and named["preset"] == "ultrasound"
    assert [[i["image"], i["label"]] for i in named["training"]] == [
        [i["image"], i["label"]] for i in datalist["training"]
    ]


def test_prepare_reads_biomedcoops_archive_with_its_split_file(tmp_path):
    split_file = biomedcoop_tree(tmp_path / "raw")
    out = tmp_path / "out" / "busi.json"
    datalist = prepare_dataset("busi", tmp_path / "raw", out)
    assert json.loads(out.read_text()) == datalist
    assert as_file_lists(datalist, tmp_path / "raw" / "BUSI" / "BUSI") == {
        key: [[p, label, ["benign", "malignant", "normal"][label]] for p, label, _ in entries]
        for key, entries in json.loads(split_file.read_text()).items()
    }
    assert load_datalist(out)["test"] == datalist["test"]


def test_command_line_imports_a_split_file(tmp_path, capsys):
    split_file = biomedcoop_tree(tmp_path)
    out = tmp_path / "busi.json"
    assert main(["prepare", "split-file", str(split_file), "--dataset", "busi", "--out", str(out)]) == 0
    assert "Wrote" in capsys.readouterr().out
    assert load_datalist(out)["class_names"] == ["benign", "malignant", "normal"]


@pytest.mark.parametrize(
    "bad",
    ["/etc/passwd", "../outside.png", "benign_tumor/../../outside.png", "C:\\data\\x.png", "..\\x.png", "", 7],
)
def test_paths_that_leave_the_dataset_folder_are_refused(tmp_path, bad):
    split_file = biomedcoop_tree(tmp_path)
    split = json.loads(split_file.read_text())
    split["test"][0][0] = bad
    split_file.write_text(json.dumps(split))
    with pytest.raises(ValueError) as e:
        datalist_from_split_file(split_file)
    assert "entry 0 of 'test'" in str(e.value) or "Entry 0 of 'test'" in str(e.value)
    with pytest.raises(ValueError):
        safe_join(tmp_path, bad, "here")


def test_a_path_is_only_ever_a_file_name(tmp_path):
    """A path that looks like a MONAI config expression stays a file below the dataset folder."""
    split_file = biomedcoop_tree(tmp_path)
    touch_images(tmp_path / "BUSI" / "BUSI", ["$import os.png"])
    split = json.loads(split_file.read_text())
    split["test"].append(["$import os.png", 0, "benign tumor"])
    split_file.write_text(json.dumps(split))
    datalist = datalist_from_split_file(split_file)
    assert datalist["test"][-1]["image"] == str(tmp_path / "BUSI" / "BUSI" / "$import os.png")


def test_malformed_files_and_mismatches_are_one_sentence(tmp_path):
    split_file = biomedcoop_tree(tmp_path)
    split = json.loads(split_file.read_text())
    split["train"][0] = [split["train"][0][0], 1, "benign tumor"]  # label 1 is "malignant tumor" elsewhere
    split_file.write_text(json.dumps(split))
    with pytest.raises(ValueError, match="is called both"):
        datalist_from_split_file(split_file)
    split_file.write_text(json.dumps({"train": [["a.png", "0", "x"]], "test": []}))
    with pytest.raises(ValueError, match=r"Entry 0 of 'train' .* must be \[relative image path, label, class name\]"):
        datalist_from_split_file(split_file)
    biomedcoop_tree(tmp_path / "again")
    with pytest.raises(ValueError, match="Class 'benign tumor' .* is not a class of dataset 'kvasir'"):
        datalist_from_split_file(tmp_path / "again" / "BUSI" / "split_BUSI.json", dataset="kvasir")
    (tmp_path / "again" / "BUSI" / "BUSI" / "normal_scan" / "normal (0).png").unlink()
    out = tmp_path / "out" / "x.json"
    with pytest.raises(FileNotFoundError, match="1 image file listed in split file .* does not exist"):
        prepare_dataset("busi", tmp_path / "again", out)
    assert only_these_files(out.parent) == []


def dassl_reading(train: list, val: list, shots: int, seed: int) -> tuple[list, list]:
    """What Dassl's few-shot code does after ``set_random_seed(seed)`` (written from reading it)."""
    random.seed(seed)
    out = []
    for data, k in ((train, shots), (val, min(shots, 4))):
        tracker: dict[int, list] = {}
        for item in data:
            tracker.setdefault(item[1], []).append(item)
        picked = []
        for items in tracker.values():
            picked.extend(random.sample(items, k) if len(items) >= k else items)
        out.append(picked)
    return out[0], out[1]


@pytest.mark.parametrize("shots", [1, 2, 4])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_dassl_sampler_reproduces_the_published_seeds_subsets(tmp_path, shots, seed):
    split_file = biomedcoop_tree(tmp_path, per_class=(30, 24, 18))
    published = json.loads(split_file.read_text())
    train, val = dassl_reading(published["train"], published["val"], shots, seed)
    few = few_shot_datalist(datalist_from_split_file(split_file), shots, seed, sampler="dassl")
    images = tmp_path / "BUSI" / "BUSI"
    lists = as_file_lists(few, images)
    assert lists["train"] == train and lists["val"] == val and lists["test"] == published["test"]
    assert few["few_shot"] == {"shots": shots, "seed": seed, "val_shots": min(shots, 4), "sampler": "dassl"}


def test_fewshot_command_with_the_dassl_sampler(tmp_path):
    split_file = biomedcoop_tree(tmp_path, per_class=(30, 24, 18))
    full, few = tmp_path / "busi.json", tmp_path / "busi_4shot_seed2.json"
    assert main(["prepare", "split-file", str(split_file), "--out", str(full)]) == 0
    argv = ["prepare", "fewshot", str(full), "--shots", "4", "--seed", "2", "--sampler", "dassl", "--out", str(few)]
    assert main(argv) == 0
    published = json.loads(split_file.read_text())
    train, _ = dassl_reading(published["train"], published["val"], 4, 2)
    assert as_file_lists(load_datalist(few), tmp_path / "BUSI" / "BUSI")["train"] == train


def test_every_dataset_of_both_papers_is_one_entry():
    biomedcoop = ["btmri", "busi", "chmnist", "covid-19", "ctkidney", "dermamnist", "kneexray", "kvasir"]
    biomedcoop += ["lungcolon", "octmnist", "retina"]
    specs = {get_dataset(name).name: get_dataset(name) for name in biomedcoop}
    assert len(specs) == 11 and all("biomedcoop" in s.papers for s in specs.values())
    for spec in specs.values():
        assert spec.layouts[0].kind == "split-file", spec.name
        assert spec.curated_descriptions == (spec.name in ("busi", "dermamnist", "kvasir")), spec.name


def test_a_coop_split_file_with_its_image_folder(tmp_path):
    """CoOp's files (``split_zhou_<Name>.json``) hold paths relative to a folder given with ``images``."""
    images = tmp_path / "oxford_pets" / "images"
    touch_images(images, [f"{breed}_{i}.jpg" for breed in ("abyssinian", "beagle") for i in range(3)])
    split = {
        "train": [["beagle_0.jpg", 1, "beagle"], ["abyssinian_0.jpg", 0, "abyssinian"], ["beagle_1.jpg", 1, "beagle"]],
        "val": [["abyssinian_1.jpg", 0, "abyssinian"]],
        "test": [["beagle_2.jpg", 1, "beagle"], ["abyssinian_2.jpg", 0, "abyssinian"]],
    }
    split_file = tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json"
    split_file.write_text(json.dumps(split))
    datalist = datalist_from_split_file(split_file, images)
    assert datalist["class_names"] == ["abyssinian", "beagle"] and datalist["name"] == "zhou_OxfordPets"
    assert as_file_lists(datalist, images) == split
    with pytest.raises(FileNotFoundError, match="6 image files listed in split file"):
        datalist_from_split_file(split_file)  # the default folder (the file's own) does not hold them


def test_datalists_from_relative_paths_load_from_any_directory(tmp_path, monkeypatch):
    """Issue 21: ``prepare split-file`` (and every other writer) given relative paths, with ``--out`` in another
    folder, writes image paths that ``load_datalist`` finds from any working directory (they are written absolute)."""
    biomedcoop_tree(tmp_path / "data")
    class_tree(tmp_path / "data" / "tree", {"normal": 6, "pneumonia": 6})
    monkeypatch.chdir(tmp_path)
    commands = {
        "split.json": ["split-file", "data/BUSI/split_BUSI.json", "--dataset", "busi"],
        "folder.json": ["folder", "data/tree"],
    }
    for name, command in commands.items():
        assert main(["prepare", *command, "--out", f"lists/elsewhere/{name}"]) == 0
    for cwd in (tmp_path, tmp_path / "lists", tmp_path / "data" / "BUSI", Path("/")):
        monkeypatch.chdir(cwd)
        for name in commands:
            path = tmp_path / "lists" / "elsewhere" / name
            written = json.loads(path.read_text())
            assert all(Path(i["image"]).is_absolute() for s in ("training", "validation", "test") for i in written[s])
            datalist = load_datalist(path)  # checks that every image exists
            assert all(str(tmp_path) in i["image"] for i in datalist["training"])
