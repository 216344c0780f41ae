"""``monai-cilmp prepare``: folder, csv, datalist, dataset downloads, fewshot and base-novel, and their errors."""

from __future__ import annotations

import json
import time

import pytest

from monai_cilmp.cli import main

from .conftest import class_tree, image_bytes, only_these_files, touch_images


def test_prepare_is_listed(capsys):
    assert main([]) == 0
    assert "prepare" in capsys.readouterr().out


def test_folder_writes_and_reports(tmp_path, capsys):
    root = class_tree(tmp_path / "tree", {"normal": 10, "pneumonia": 10})
    out = tmp_path / "lists" / "mine.json"
    code = main(["prepare", "folder", str(root), "--out", str(out), "--seed", "1", "--check", "--preset", "cxr"])
    assert code == 0
    datalist = json.loads(out.read_text())
    assert datalist["preset"] == "radiography" and len(datalist["training"]) == 14
    printed = capsys.readouterr().out
    assert f"Wrote {out}: 2 classes, 20 images" in printed
    assert "training: 14 images (normal 7, pneumonia 7)" in printed and "test: 4 images" in printed


def test_check_reports_every_unreadable_image_and_writes_nothing(tmp_path, capsys):
    root = class_tree(tmp_path / "tree", {"normal": 5, "covid": 5})
    (root / "covid" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "normal" / "empty.jpg").write_bytes(b"")
    (root / "normal" / "cut.png").write_bytes(image_bytes()[:40])
    out = tmp_path / "lists" / "mine.json"
    code = main(["prepare", "folder", str(root), "--out", str(out), "--check"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"monai-cilmp prepare: error: 3 of 13 images in '{root}' cannot be used:\n")
    for name in ("covid/broken.png", "normal/empty.jpg", "normal/cut.png"):
        assert f"Cannot read '{root / name}': the file is corrupt or not a valid" in err
    assert only_these_files(out.parent) == []
    # without --check nothing is opened, and the datalist is written
    assert main(["prepare", "folder", str(root), "--out", str(out)]) == 0


def test_folder_of_two_thousand_images_takes_seconds(tmp_path, capsys):
    root = tmp_path / "many"
    data = image_bytes()
    for name in ("normal", "pneumonia"):
        (root / name).mkdir(parents=True)
        for i in range(1000):
            (root / name / f"{i:05d}.png").write_bytes(data)
    out = tmp_path / "many.json"
    start = time.perf_counter()
    assert main(["prepare", "folder", str(root), "--out", str(out)]) == 0
    elapsed = time.perf_counter() - start
    assert elapsed < 5, f"prepare folder took {elapsed:.1f} s for 2000 images"
    datalist = json.loads(out.read_text())
    assert sum(len(datalist[s]) for s in ("training", "validation", "test")) == 2000


def test_csv_errors_write_nothing(tmp_path, capsys):
    touch_images(tmp_path, ["a.png", "b.png"])
    table = tmp_path / "labels.csv"
    table.write_text("path,finding\na.png,normal\nb.png,covid\n")
    out = tmp_path / "lists" / "mine.json"
    assert main(["prepare", "csv", str(table), "--out", str(out), "--label-column", "label"]) == 2
    assert capsys.readouterr().err == (
        f"monai-cilmp prepare: error: '{table}' has no column 'label'; its columns are: path, finding.\n"
    )
    code = main(["prepare", "csv", str(table), "--out", str(out), "--label-column", "finding", "--classes", "normal"])
    assert code == 2
    assert capsys.readouterr().err == (
        f"monai-cilmp prepare: error: Unknown label 'covid' in line 3 of '{table}'; valid labels: normal.\n"
    )
    assert only_these_files(out.parent) == []
    code = main(["prepare", "csv", str(table), "--out", str(out), "--label-column", "finding", "--test-fraction", "0"])
    assert code == 0 and json.loads(out.read_text())["class_names"] == ["covid", "normal"]


def test_fewshot_and_base_novel(tmp_path, capsys):
    root = class_tree(tmp_path / "tree", {"a": 30, "b": 30, "c": 12, "d": 12})
    full = tmp_path / "full.json"
    assert main(["prepare", "folder", str(root), "--out", str(full)]) == 0
    few = tmp_path / "few.json"
    assert main(["prepare", "fewshot", str(full), "--shots", "8", "--seed", "2", "--out", str(few)]) == 0
    datalist = json.loads(few.read_text())
    assert datalist["few_shot"]["shots"] == 8 and len(datalist["training"]) == 32
    capsys.readouterr()
    too_many = tmp_path / "too_many.json"
    assert main(["prepare", "fewshot", str(full), "--shots", "16", "--out", str(too_many)]) == 2
    assert capsys.readouterr().err == (
        f"monai-cilmp prepare: error: Class 'c' has only 9 training images in '{full}', fewer than the 16 shots "
        "asked for.\n"
    )
    assert not too_many.exists()
    novel = tmp_path / "novel.json"
    assert main(["prepare", "base-novel", str(full), "--subset", "novel", "--out", str(novel)]) == 0
    assert json.loads(novel.read_text())["class_names"] == ["c", "d"]


def test_dataset_download(tmp_path, capsys):
    raw = tmp_path / "aptos2019"
    touch_images(raw / "train_images", [f"{i}.png" for i in range(10)])
    (raw / "train.csv").write_text("id_code,diagnosis\n" + "\n".join(f"{i},{i % 5}" for i in range(10)))
    out = tmp_path / "aptos.json"
    assert main(["prepare", "aptos", "--raw", str(raw), "--out", str(out), "--test-fraction", "0.5"]) == 0
    assert json.loads(out.read_text())["name"] == "aptos2019"
    assert "test: 5 images (no diabetic retinopathy 1," in capsys.readouterr().out
    assert main(["prepare", "kvasir", "--raw", str(raw), "--out", str(tmp_path / "k.json")]) == 2
    assert "does not look like the Kvasir v2 download" in capsys.readouterr().err


def test_unknown_preset_and_dataset(tmp_path, capsys):
    root = class_tree(tmp_path / "tree", {"a": 3, "b": 3})
    assert main(["prepare", "folder", str(root), "--out", str(tmp_path / "x.json"), "--preset", "xrya"]) == 2
    assert "did you mean" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prepare", "kvasirr", "--raw", str(root), "--out", str(tmp_path / "x.json")])
