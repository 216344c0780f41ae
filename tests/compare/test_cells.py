"""The base-to-novel protocol of a comparison cell: train on the base classes, score base and novel classes."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from monai_cilmp.compare import Cell, class_specific_parameters, harmonic_mean, run_comparison
from monai_cilmp.data import load_datalist, subsample_classes, write_datalist
from monai_cilmp.networks.nets import build_method

from .test_compare import LABEL, TINY, recipe

METHODS = ["zero-shot-name", "linear-probe", "coop", "coop-csc", "cilmp"]


@pytest.fixture(scope="module")
def base_to_novel(tiny_data4, tmp_path_factory):
    out = tmp_path_factory.mktemp("b2n")
    torch.manual_seed(0)  # the random tiny backbone
    result = run_comparison(
        tiny_data4["datalist"],
        METHODS,
        [2],
        [1],
        out,
        knowledge=tiny_data4["knowledge"],
        descriptions=tiny_data4["descriptions"],
        recipe=recipe(),
        protocol="base-to-novel",
        log=lambda line: None,
        **TINY,
    )
    return out, {r["method"]: r for r in result["records"]}


def test_base_to_novel_trains_on_the_base_half_and_scores_both(base_to_novel, tiny_data4):
    out, records = base_to_novel
    names = load_datalist(tiny_data4["datalist"])["class_names"]  # the folder names, sorted
    for method, record in records.items():
        assert record["protocol"] == "base-to-novel" and record["backbone"] == LABEL
        assert record["base_class_names"] == names[:2] and record["novel_class_names"] == names[2:]  # ceil(4 / 2)
        assert record["metrics"] == record["base"] and record["base"]["n"] == 4  # base test images only
        if record["trained"]:
            assert record["n_train"] == 4  # 2 shots x 2 base classes
        directory = Cell(method, 2, 1, LABEL).directory(out)
        assert (directory / "test_base_metrics.json").is_file()
        if method in ("linear-probe", "coop-csc"):  # per-class trained parameters: no novel score
            assert record["novel"] is None and record["harmonic_mean"] is None
            assert "cannot score unseen classes" in record["novel_classes"]
            assert not (directory / "test_novel_metrics.json").exists()
        else:
            assert record["novel"]["n"] == 4 and 0 <= record["novel"]["accuracy"] <= 1
            assert record["harmonic_mean"] == pytest.approx(
                harmonic_mean(record["base"]["accuracy"], record["novel"]["accuracy"])
            )
            predictions = list(csv.DictReader((directory / "test_novel_predictions.csv").open()))
            assert len(predictions) == 4


def test_novel_score_of_zero_shot_equals_its_score_on_the_novel_classes_alone(base_to_novel, tiny_data4, tmp_path):
    out, records = base_to_novel
    novel = subsample_classes(load_datalist(tiny_data4["datalist"]), "novel")
    write_datalist(novel, tmp_path / "novel.json")
    torch.manual_seed(0)  # the same random tiny backbone as the base-to-novel run
    alone = run_comparison(
        tmp_path / "novel.json", ["zero-shot-name"], [2], [1], tmp_path / "cmp", log=lambda line: None, **TINY
    )
    assert alone["records"][0]["metrics"]["accuracy"] == records["zero-shot-name"]["novel"]["accuracy"]
    ours = Cell("zero-shot-name", 2, 1, LABEL).directory(out) / "test_novel_predictions.csv"
    theirs = Cell("zero-shot-name", 2, 1, LABEL).directory(tmp_path / "cmp") / "test_predictions.csv"
    assert ours.read_text() == theirs.read_text()  # same images, same probabilities over the novel classes


def test_report_has_base_novel_and_hm_with_na_for_per_class_methods(base_to_novel):
    out, records = base_to_novel
    rows = {r["method"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert list(rows) == METHODS
    assert rows["linear-probe"]["novel_accuracy_mean"] == "" and rows["linear-probe"]["harmonic_mean"] == ""
    assert float(rows["coop"]["harmonic_mean"]) == pytest.approx(records["coop"]["harmonic_mean"])
    assert rows["coop"]["backbone"] == LABEL
    text = (out / "results.md").read_text()
    assert "| backbone | method | shots | base | novel | HM |" in text
    coop_csc = next(line for line in text.splitlines() if line.startswith(f"| {LABEL} | coop-csc | 2-shot |"))
    assert coop_csc.endswith("| n/a | n/a |")
    assert (out / "hm_vs_shots.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "base_novel.png").read_bytes()[:4] == b"\x89PNG" and "(base_novel.png)" in text
    assert json.loads((out / "comparison.json").read_text())["protocol"] == "base-to-novel"


def test_class_specific_parameters_tell_which_methods_transfer(tiny_backbone):
    backbone = tiny_backbone
    two, three = ["a", "b"], ["a", "b", "c"]
    expected = {
        "coop": [],
        "cocoop": [],
        "kgcoop": [],
        "coop-csc": ["ctx"],
        "linear-probe": ["head.bias", "head.weight"],
    }
    for method, specific in expected.items():
        found = class_specific_parameters(build_method(method, two, backbone), build_method(method, three, backbone))
        assert found == specific, (method, found)


def test_base_to_novel_needs_four_classes(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="at least 4 classes"):
        run_comparison(tiny_data["datalist"], ["coop"], [2], [1], tmp_path, protocol="base-to-novel", **TINY)


def test_command_line_base_to_novel(tiny_data4, tmp_path, capsys):
    from monai_cilmp.cli import main

    argv = ["compare", "--datalist", tiny_data4["datalist"], "--methods", "zero-shot-name", "--shots", "2"]
    argv += ["--seeds", "1", "--out", str(tmp_path), "--backbone", "CILMP-Tiny", "--pretrained", "none", "--offline"]
    argv += ["--device", "cpu", "--protocol", "base-to-novel"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "base-to-novel: 2 base classes" in printed and ", HM " in printed
    assert "| backbone | method | shots | base | novel | HM |" in (tmp_path / "results.md").read_text()


def test_a_dataset_without_curated_descriptions_gets_generic_ones(tmp_path):
    from monai_cilmp.data import get_dataset

    from .conftest import make_tiny_data

    spec = get_dataset("btmri")
    assert not spec.curated_descriptions
    # in the dataset's own class order, as `prepare` writes it for a registered dataset (labels index that order)
    data = make_tiny_data(tmp_path, per_class=4, classes=list(spec.class_names), keep_order=True)
    lines: list[str] = []
    torch.manual_seed(0)
    result = run_comparison(
        data["datalist"],
        ["zero-shot-attributes"],
        [1],
        [1],
        tmp_path / "cmp",
        dataset="btmri",
        log=lines.append,
        **TINY,
    )
    assert any("'btmri' has no curated class descriptions yet" in line for line in lines)
    assert 0 <= result["records"][0]["metrics"]["accuracy"] <= 1


@pytest.mark.parametrize("protocol", ["few-shot", "base-to-novel"])
def test_dassl_sampler_trains_on_dassls_subsets(tiny_data4, tmp_path, protocol):
    from monai_cilmp.data import few_shot_datalist

    torch.manual_seed(0)
    result = run_comparison(
        tiny_data4["datalist"],
        ["coop"],
        [2],
        [3],
        tmp_path,
        recipe=recipe(max_epochs=1),
        protocol=protocol,
        sampler="dassl",
        log=lambda line: None,
        **TINY,
    )
    drawn = few_shot_datalist(load_datalist(tiny_data4["datalist"]), 2, 3, sampler="dassl")["training"]
    expected = [i["image"] for i in drawn if protocol == "few-shot" or i["label"] < 2]  # Dassl: draw all, keep base
    assert result["records"][0]["train_images"] == expected and result["records"][0]["sampler"] == "dassl"
