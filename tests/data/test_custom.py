"""Datalists from the user's own data: folder per class, CSV files, existing MONAI datalists."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from monai_cilmp.data import datalist_from_csv, datalist_from_datalist, datalist_from_folder

from .conftest import class_tree, touch_images


def labels(datalist, split):
    names = datalist["class_names"]
    return Counter(names[item["label"]] for item in datalist[split])


def test_folder_per_class(tmp_path):
    root = class_tree(tmp_path / "xrays", {"normal": 10, "pneumonia": 20})
    touch_images(root / "pneumonia" / "nested", ["extra.jpg"])
    (root / "normal" / "notes.txt").write_text("not an image")
    (root / "normal" / ".hidden.png").write_bytes(b"")
    datalist = datalist_from_folder(root, val_fraction=0.1, test_fraction=0.2, seed=3)
    assert datalist["class_names"] == ["normal", "pneumonia"] and datalist["name"] == "xrays"
    assert labels(datalist, "training") == {"normal": 7, "pneumonia": 15}
    assert labels(datalist, "validation") == {"normal": 1, "pneumonia": 2}
    assert labels(datalist, "test") == {"normal": 2, "pneumonia": 4}
    images = [i["image"] for s in ("training", "validation", "test") for i in datalist[s]]
    assert str(root / "pneumonia" / "nested" / "extra.jpg") in images and len(images) == 31
    # given class names fix the label order and match folder names loosely
    ordered = datalist_from_folder(root, ["Pneumonia", "Normal"], seed=3)
    assert ordered["class_names"] == ["Pneumonia", "Normal"]
    assert labels(ordered, "training") == {"Normal": 7, "Pneumonia": 15}


def test_folder_with_split_folders(tmp_path):
    class_tree(tmp_path / "train", {"a": 10, "b": 10})
    class_tree(tmp_path / "test", {"a": 3, "b": 2})
    datalist = datalist_from_folder(tmp_path, val_fraction=0.2)
    assert labels(datalist, "test") == {"a": 3, "b": 2}  # the given test split is kept
    assert labels(datalist, "validation") == {"a": 2, "b": 2} and labels(datalist, "training") == {"a": 8, "b": 8}
    assert all("/test/" in i["image"] for i in datalist["test"])


def test_folder_errors(tmp_path):
    root = class_tree(tmp_path / "d", {"normal": 3, "covid": 3})
    (root / "empty").mkdir()
    with pytest.raises(ValueError) as e:
        datalist_from_folder(root)
    assert str(e.value) == f"Class 'empty' has no images in '{root}'."
    with pytest.raises(ValueError) as e:
        datalist_from_folder(root, ["normal", "pneumonia"])
    assert str(e.value) == f"Folder 'covid' in '{root}' is not one of the classes; valid classes: normal, pneumonia."
    with pytest.raises(FileNotFoundError, match="Image folder '.*nowhere' does not exist."):
        datalist_from_folder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="has no class folders"):
        datalist_from_folder(root / "covid")


def write_csv(path, text):
    path.write_text(text)
    return path


def test_csv_with_names_splits_and_relative_paths(tmp_path):
    touch_images(tmp_path / "img", [f"{i}.png" for i in range(12)])
    rows = "\n".join(f"img/{i}.png,{'Melanoma' if i % 3 else 'nevus'}" for i in range(12))
    datalist = datalist_from_csv(write_csv(tmp_path / "labels.csv", "path,diagnosis\n" + rows), test_fraction=0.25)
    assert datalist["class_names"] == ["Melanoma", "nevus"]
    assert sum(len(datalist[s]) for s in ("training", "validation", "test")) == 12
    assert labels(datalist, "test") == {"Melanoma": 2, "nevus": 1}
    assert datalist["training"][0]["image"].startswith(str(tmp_path / "img"))
    # a split column and a semicolon separator
    split_rows = "\n".join(
        f"img/{i}.png;{'melanoma' if i % 3 else 'nevus'};{'test' if i < 3 else 'train'}" for i in range(12)
    )
    table = write_csv(tmp_path / "split.csv", "image;label;split\n" + split_rows)
    given = datalist_from_csv(table, ["nevus", "melanoma"], val_fraction=0.0)
    assert [i["image"].rsplit("/", 1)[1] for i in given["test"]] == ["0.png", "1.png", "2.png"]
    assert given["validation"] == [] and labels(given, "training") == {"nevus": 3, "melanoma": 6}


def test_csv_errors(tmp_path):
    touch_images(tmp_path, ["a.png", "b.png"])
    table = write_csv(tmp_path / "t.csv", "file,diagnosis\na.png,normal\nb.png,pneumonai\n")
    with pytest.raises(ValueError) as e:
        datalist_from_csv(table, ["normal", "pneumonia"])
    assert str(e.value) == (
        f"Unknown label 'pneumonai' in line 3 of '{table}' (did you mean 'pneumonia'?); valid labels: normal, "
        "pneumonia."
    )
    with pytest.raises(ValueError) as e:
        datalist_from_csv(table, label_column="label")
    assert str(e.value) == f"'{table}' has no column 'label'; its columns are: file, diagnosis."
    no_label = write_csv(tmp_path / "n.csv", "image,comment\na.png,x\n")
    with pytest.raises(ValueError) as e:
        datalist_from_csv(no_label)
    assert str(e.value) == (
        f"'{no_label}' has no label column (one of: label, class, class_name, diagnosis, target); its columns are: "
        "image, comment."
    )
    empty_class = write_csv(tmp_path / "e.csv", "image,label\na.png,normal\nb.png,normal\n")
    with pytest.raises(ValueError) as e:
        datalist_from_csv(empty_class, ["normal", "covid"])
    assert str(e.value) == f"Class 'covid' has no images in '{empty_class}'."
    missing = write_csv(tmp_path / "m.csv", "image,label\na.png,x\nc.png,y\nd.png,y\n")
    with pytest.raises(FileNotFoundError) as e:
        datalist_from_csv(missing)
    assert str(e.value) == (
        f"2 image files listed in '{missing}' do not exist: '{tmp_path / 'c.png'}', '{tmp_path / 'd.png'}'."
    )
    blank = write_csv(tmp_path / "b.csv", "image,label\na.png,\n")
    with pytest.raises(ValueError, match="Line 2 of '.*b.csv' has an empty 'label'."):
        datalist_from_csv(blank)


def test_existing_monai_datalist(tmp_path):
    touch_images(tmp_path / "i", [f"{i}.png" for i in range(10)])
    data = {"training": [{"image": f"i/{i}.png", "label": "benign" if i < 5 else "malignant"} for i in range(10)]}
    (tmp_path / "d.json").write_text(json.dumps(data))
    datalist = datalist_from_datalist(tmp_path / "d.json", val_fraction=0.2, test_fraction=0.2)
    assert datalist["class_names"] == ["benign", "malignant"]
    assert labels(datalist, "test") == {"benign": 1, "malignant": 1}
    assert datalist["training"][0]["image"] == str(tmp_path / "i" / "0.png")
    ints = {"training": [{"image": f"i/{i}.png", "label": i % 2} for i in range(10)]}
    (tmp_path / "ints.json").write_text(json.dumps(ints))
    with pytest.raises(ValueError, match="has integer labels but no class names"):
        datalist_from_datalist(tmp_path / "ints.json")
    named = datalist_from_datalist(tmp_path / "ints.json", ["even", "odd"], val_fraction=0, test_fraction=0)
    assert labels(named, "training") == {"even": 5, "odd": 5}
    with pytest.raises(ValueError, match="is not a MONAI datalist"):
        datalist_from_datalist({"validation": []})
