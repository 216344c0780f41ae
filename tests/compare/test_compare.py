"""monai-cilmp compare: every method's cell runs through the engine, resume, the report files."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from monai_cilmp.cli import main
from monai_cilmp.compare import (
    CELL_FILE,
    FULL,
    Cell,
    backbone_label,
    base_recipe,
    parse_shots,
    run_comparison,
)
from monai_cilmp.networks.nets import get_method, list_methods

TINY = {"backbone": "CILMP-Tiny", "pretrained": "none", "offline": True, "device": "cpu"}
LABEL = "CILMP-Tiny (random)"  # the backbone column and cell folder of TINY


def recipe(**kw):
    return base_recipe(**{"max_epochs": 1, "batch_size": 4, "lr": 0.01, "warmup_epochs": 0, "gpa_std": 1.0, **kw})


def compare(tiny_data, out, methods, shots=(2,), seeds=(1,), **kw):
    torch.manual_seed(0)
    return run_comparison(
        tiny_data["datalist"],
        methods,
        shots,
        seeds,
        out,
        knowledge=tiny_data["knowledge"],
        descriptions=tiny_data["descriptions"],
        recipe=kw.pop("recipe", recipe()),
        log=kw.pop("log", lambda line: None),
        **TINY,
        **kw,
    )


@pytest.fixture(scope="module")
def all_methods(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("all_methods")
    return out, compare(tiny_data, out, list_methods())


def test_every_method_runs_a_cell_and_trains_only_its_own_parameters(all_methods):
    out, result = all_methods
    assert result["ran"] == len(list_methods()) and result["skipped"] == 0
    for record in result["records"]:
        spec = get_method(record["method"])
        assert Cell(spec.name, 2, 1, LABEL).record_path(out).is_file()
        assert 0.0 <= record["metrics"]["accuracy"] <= 1.0
        assert record["trained"] == spec.needs_training
        if spec.needs_training:
            assert record["train_seconds"] > 0 and record["n_train"] == 4
            # Tip-Adapter trains nothing: its cache is built from the training features by the same trainer
            assert (record["trainable_parameters"] > 0) == (spec.name != "tip-adapter")
            for key, value in spec.recipe_overrides.items():
                assert record["recipe"][key] == value
        else:
            assert record["trainable_parameters"] == 0 and record["train_seconds"] == 0


def test_report_files_have_a_row_per_method_and_shots(all_methods):
    out, result = all_methods
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["method"] for r in rows] == list_methods()
    assert {r["shots"] for r in rows} == {"2"} and {r["n_seeds"] for r in rows} == {"1"}
    text = (out / "results.md").read_text()
    for name in list_methods():
        assert f"| {name} |" in text
    assert (out / "accuracy_vs_shots.png").read_bytes()[:4] == b"\x89PNG"
    assert result["files"]["plot"] == out / "accuracy_vs_shots.png"


def test_rerun_skips_finished_cells_and_recomputes_a_deleted_one(tiny_data, tmp_path):
    methods = ["zero-shot-name", "linear-probe"]
    first = compare(tiny_data, tmp_path, methods, shots=(2, "all"), seeds=(1, 2))
    assert first["ran"] == 8
    zero_shot = [r for r in first["records"] if r["method"] == "zero-shot-name"]
    assert all(r["metrics"] == zero_shot[0]["metrics"] for r in zero_shot)  # evaluated once: no shots, no seed
    assert zero_shot[1]["same_as"] == "2/1"
    probe = [r for r in first["records"] if r["method"] == "linear-probe"]
    assert [r["n_train"] for r in probe] == [4, 4, 14, 14]

    lines: list[str] = []
    again = compare(tiny_data, tmp_path, methods, shots=(2, "all"), seeds=(1, 2), log=lines.append)
    assert again["ran"] == 0 and again["skipped"] == 8
    assert any("8 cells are done already" in line for line in lines)
    assert [r["metrics"] for r in again["records"]] == [r["metrics"] for r in first["records"]]

    deleted = Cell("linear-probe", FULL, 2, LABEL).record_path(tmp_path)
    assert deleted.parent.name == "seed2" and deleted.parent.parent.name == "full"
    before = json.loads(deleted.read_text())
    deleted.unlink()
    third = compare(tiny_data, tmp_path, methods, shots=(2, "all"), seeds=(1, 2))
    assert third["ran"] == 1 and deleted.is_file()
    assert json.loads(deleted.read_text())["metrics"] == before["metrics"]  # same seed, same result
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [(r["method"], r["shots"], r["n_seeds"]) for r in rows] == [
        (m, k, "2") for m in methods for k in ("2", "all")
    ]


def test_a_folder_with_other_settings_is_refused(tiny_data, tmp_path):
    compare(tiny_data, tmp_path, ["zero-shot-name"])
    with pytest.raises(ValueError, match="other settings"):
        compare(tiny_data, tmp_path, ["zero-shot-name"], recipe=recipe(lr=0.5))


def test_checks_before_any_work(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="fewer than the 50 shots"):
        compare(tiny_data, tmp_path, ["coop"], shots=(2, 50))
    with pytest.raises(ValueError, match="knowledge bank"):
        run_comparison(tiny_data["datalist"], ["cilmp"], [2], [1], tmp_path, **TINY)
    with pytest.raises(ValueError, match="coop"):
        compare(tiny_data, tmp_path, ["cooop"])
    assert not (tmp_path / "cells").exists()


def test_parse_shots():
    assert parse_shots(["1", "4", "all", 0, "4"]) == [1, 4, FULL]
    with pytest.raises(ValueError):
        parse_shots(["-1"])
    with pytest.raises(ValueError):
        parse_shots(["many"])


def test_command_line(tiny_data, tmp_path, capsys):
    argv = ["compare", "--datalist", tiny_data["datalist"], "--methods", "zero-shot-name", "linear-probe"]
    argv += ["--shots", "2", "--seeds", "1", "--out", str(tmp_path), "--backbone", "CILMP-Tiny", "--pretrained"]
    argv += ["none", "--offline", "--epochs", "1", "--batch-size", "4", "--lr-probe", "0.5", "--device", "cpu"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 methods x 1 shot settings (2-shot) x 1 seeds = 2 cells" in printed and "results.md" in printed
    record = json.loads(Cell("linear-probe", 2, 1, LABEL).record_path(tmp_path).read_text())
    assert record["recipe"]["lr"] == 0.5 and record["recipe"]["max_epochs"] == 1
    assert main(argv) == 0
    assert "done already, skipped" in capsys.readouterr().out
    assert CELL_FILE == "metrics.json"


def test_command_line_takes_a_hub_backbone_of_the_bert_family(tiny_data, tmp_path, capsys, monkeypatch):
    """``--backbone hf-hub:...`` of a BiomedCLIP-shaped model (timm trunk, BERT text tower), from the offline cache."""
    import open_clip
    from huggingface_hub import constants

    from monai_cilmp.networks import load_backbone
    from monai_cilmp.networks.backbones import TINY_BERT_BACKBONE
    from tests.networks.test_backbones import TINY_VOCABULARY, fake_hub_repo, save_weights

    torch.manual_seed(0)
    source = load_backbone(TINY_BERT_BACKBONE, None, offline=True)
    cache = tmp_path / "hf-cache"
    fake_hub_repo(
        cache,
        "someone/tiny-biomed-clip",
        {
            "open_clip_config.json": json.dumps({"model_cfg": open_clip.get_model_config(TINY_BERT_BACKBONE)}),
            "open_clip_model.safetensors": save_weights(source.model, tmp_path / "w.safetensors").read_bytes(),
            "vocab.txt": TINY_VOCABULARY / "vocab.txt",
        },
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    out = tmp_path / "out"
    argv = ["compare", "--datalist", tiny_data["datalist"], "--methods", "zero-shot-template", "coop", "cocoop"]
    argv += ["--shots", "2", "--seeds", "1", "--out", str(out), "--backbone", "hf-hub:someone/tiny-biomed-clip"]
    argv += ["--offline", "--epochs", "1", "--batch-size", "4", "--device", "cpu"]
    assert main(argv) == 0
    for method in ("zero-shot-template", "coop", "cocoop"):
        label = backbone_label("hf-hub:someone/tiny-biomed-clip", None)
        record = json.loads(Cell(method, 2, 1, label).record_path(out).read_text())
        assert 0.0 <= record["metrics"]["accuracy"] <= 1.0
    assert "results.md" in capsys.readouterr().out


def test_accuracy_plot_spans_zero_to_one_with_a_chance_line():
    from monai_cilmp.compare.report import accuracy_figure

    rows = [
        {"method": m, "shots": k, "accuracy_mean": a, "accuracy_std": 0.02}
        for m, k, a in [("coop", 1, 0.41), ("coop", 4, 0.62), ("zero-shot-name", 1, 0.33)]
    ]
    ax = accuracy_figure(rows, [1, 4], n_classes=3, title="toy: test split, n=30").axes[0]
    assert ax.get_ylim() == (0.0, 1.0) and ax.get_title() == "toy: test split, n=30"
    chance = [line for line in ax.get_lines() if line.get_label() == "chance (1/3)"]
    assert len(chance) == 1 and list(chance[0].get_ydata()) == [1 / 3, 1 / 3]


def test_readme_compare_offline_fails_fast_and_leaves_nothing(tiny_data, tmp_path, monkeypatch, capsys):
    """The README's compare command (default backbone ViT-B-16/openai) on a machine without a network: one sentence
    within seconds, and no comparison.json left behind."""
    import socket
    import time

    from monai_cilmp.cli import main
    from monai_cilmp.networks import backbone_weights

    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backbone_weights._reachable.cache_clear()
    out = tmp_path / "cmp"
    start = time.monotonic()
    code = main(
        ["compare", "--datalist", tiny_data["datalist"], "--knowledge", tiny_data["knowledge"], "--methods"]
        + ["zero-shot-name", "linear-probe", "cilmp", "--shots", "1", "--seeds", "1", "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert code == 2 and time.monotonic() - start < 60
    assert err.count("\n") == 1 and "vit_base_patch16_clip_224.openai" in err and "download" in err
    assert not out.exists()
