"""The demo overlay of the CILMP bundle and ``monai-cilmp demo``: offline, end to end, and it learns."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from monai.bundle import run

from monai_cilmp.cli import main
from monai_cilmp.demo import MANIFEST_FILE, prepare_demo

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "cilmp"
CONFIGS = BUNDLE / "configs"
SMALL = ["--images-per-class", "5", "--pretrain-steps", "3", "--epochs", "1"]


def test_prepare_demo_reuses_a_folder_made_alike_and_remakes_otherwise(tmp_path, capsys):
    paths = prepare_demo(tmp_path, images_per_class=3, pretrain_steps=2)
    assert all(Path(p).is_file() for p in paths.values())
    stamp = Path(paths["backbone"]).stat().st_mtime_ns
    assert prepare_demo(tmp_path, images_per_class=3, pretrain_steps=2) == paths
    assert "reusing" in capsys.readouterr().out
    assert Path(paths["backbone"]).stat().st_mtime_ns == stamp
    prepare_demo(tmp_path, images_per_class=3, pretrain_steps=3)
    assert Path(paths["backbone"]).stat().st_mtime_ns != stamp
    assert json.loads((tmp_path / MANIFEST_FILE).read_text())["settings"]["pretrain_steps"] == 3


def test_an_interrupted_preparation_is_remade(tmp_path):
    paths = prepare_demo(tmp_path, images_per_class=3, pretrain_steps=2)
    (tmp_path / MANIFEST_FILE).unlink()  # what a kill before the manifest is written leaves
    stamp = Path(paths["knowledge"]).stat().st_mtime_ns
    prepare_demo(tmp_path, images_per_class=3, pretrain_steps=2)
    assert Path(paths["knowledge"]).stat().st_mtime_ns != stamp


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), *SMALL]) == 0
    return out


def test_demo_command_writes_everything_it_reports(small_demo, capsys):
    summary = json.loads((small_demo / "run" / "demo_summary.json").read_text())
    assert set(summary) >= {"accuracy", "chance", "zero_shot_names", "zero_shot_descriptions", "files"}
    assert summary["chance"] == 0.25
    # issue 14: calibration before/after temperature scaling and conformal sets on the test split
    assert 0 <= summary["ece_before_scaling"] <= 1 and 0 <= summary["ece_after_scaling"] <= 1
    assert summary["temperature"] > 0 and 0 <= summary["conformal_coverage"] <= 1
    assert 0 <= summary["conformal_mean_set_size"] <= 4
    for key in ("checkpoint", "metrics", "confusion_png", "confusion_csv", "predictions"):
        assert Path(summary["files"][key]).is_file(), key
    assert (small_demo / "run" / "tensorboard").is_dir()


def test_evaluate_and_predict_run_on_the_demo_result(small_demo, tmp_path, capsys):
    assert main(["evaluate", "--run", str(small_demo / "run"), "--split", "validation"]) == 0
    assert (small_demo / "run" / "validation_metrics.json").is_file()
    image = next((small_demo / "data" / "images").rglob("*.png"))
    out = tmp_path / "predictions.jsonl"
    assert main(["predict", "--run", str(small_demo / "run"), str(image), "--out", str(out)]) == 0
    probabilities = json.loads(out.read_text().splitlines()[0])["probabilities"]
    assert len(probabilities) == 4 and sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)


def test_the_bundle_runs_the_demo_with_monai_bundle_run(tmp_path):
    run(
        run_id="run",
        init_id="initialize",
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "demo.json")],
        logging_file=str(CONFIGS / "logging.conf"),
        bundle_root=str(tmp_path),
        **{"demo#images_per_class": 4, "demo#pretrain_steps": 2, "recipe#max_epochs": 1},
    )
    assert (tmp_path / "data" / "demo" / MANIFEST_FILE).is_file()
    assert (tmp_path / "runs" / "demo" / "checkpoints" / "final.pt").is_file()
    assert (tmp_path / "runs" / "demo" / "test_predictions.csv").is_file()
    (tmp_path / "runs" / "demo" / "test_metrics.json").unlink()
    # the documented way to evaluate the demo's result again (evaluate.json's imports replace the others)
    run(
        run_id="run",
        init_id="initialize",
        config_file=[str(CONFIGS / name) for name in ("train.json", "demo.json", "evaluate.json")],
        logging_file=str(CONFIGS / "logging.conf"),
        bundle_root=str(tmp_path),
    )
    assert (tmp_path / "runs" / "demo" / "test_metrics.json").is_file()


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory):
    """The README's main job with its default settings, run once for the tests below."""
    out = tmp_path_factory.mktemp("default_demo")
    assert main(["demo", "--out", str(out)]) == 0
    return out


def test_the_default_demo_learns(default_demo):
    """CILMP clearly beats chance and zero-shot CLIP on the same backbone."""
    summary = json.loads((default_demo / "run" / "demo_summary.json").read_text())
    best_zero_shot = max(summary["zero_shot_names"], summary["zero_shot_descriptions"])
    assert summary["accuracy"] >= 0.75  # chance is 0.25
    assert summary["accuracy"] >= best_zero_shot + 0.05


def test_compare_on_the_demo_data(default_demo, tmp_path):
    """Issue 6's check: five methods x 2 shot settings x 2 seeds in CI time; learned methods beat bare names."""
    data = default_demo / "data"
    out = tmp_path / "compare"
    methods = ["zero-shot-name", "zero-shot-attributes", "linear-probe", "coop", "cilmp"]
    args = ["compare", "--datalist", str(data / "datalist.json"), "--methods", *methods, "--shots", "4", "16"]
    args += ["--seeds", "1", "2", "--out", str(out), "--knowledge", str(data / "knowledge.safetensors")]
    args += ["--descriptions", str(data / "descriptions.json"), "--backbone", "CILMP-Tiny", "--offline"]
    args += ["--pretrained", str(data / "backbone" / "cilmp-tiny-synthetic.safetensors")]
    args += ["--epochs", "10", "--batch-size", "16", "--lr", "0.05", "--warmup-epochs", "0"]
    assert main(args) == 0
    with open(out / "results.csv", newline="") as f:
        rows = {(r["method"], r["shots"]): r for r in csv.DictReader(f)}
    assert set(rows) == {(m, s) for m in methods for s in ("4", "16")}
    assert (out / "results.md").is_file() and (out / "accuracy_vs_shots.png").stat().st_size > 0
    params = {m: int(rows[(m, "16")]["trainable_parameters"]) for m in methods}
    assert params["zero-shot-name"] == 0 and 0 < params["linear-probe"] < params["coop"] < params["cilmp"]
    bare = float(rows[("zero-shot-name", "16")]["accuracy_mean"])
    for method in ("linear-probe", "coop", "cilmp"):
        assert float(rows[(method, "16")]["accuracy_mean"]) > bare, method


def test_a_runs_named_backbone_survives_the_demo_made_again_with_other_settings(tmp_path, monkeypatch):
    """Issue 21: ``--pretrained synthetic`` names the demo's tiny CLIP; preparing the demo again with other settings
    makes other weights under the name, but never rewrites the file a run was trained on: the run still verifies and
    is rebuilt on its own weights, while a new run gets the new ones."""
    from safetensors.torch import load_file

    from monai_cilmp.engines import load_run
    from monai_cilmp.networks.backbones import project_pretrained_file, project_weights_dir

    monkeypatch.setenv("MONAI_CILMP_HOME", str(tmp_path / "home"))
    paths = prepare_demo(tmp_path / "demo", images_per_class=3, pretrain_steps=1)
    first = project_pretrained_file("CILMP-Tiny", "synthetic")
    first_bytes = first.read_bytes()
    args = ["train", "--datalist", paths["datalist"], "--knowledge", paths["knowledge"], "--out", str(tmp_path / "run")]
    args += ["--backbone", "CILMP-Tiny", "--pretrained", "synthetic", "--offline", "--epochs", "1"]
    assert main([*args, "--batch-size", "4", "--workers", "0"]) == 0
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())
    assert recorded["pretrained"] == "synthetic" and recorded["pretrained_file"] == str(first)

    prepare_demo(tmp_path / "other", images_per_class=3, pretrain_steps=2, seed=1)  # other settings, other weights
    second = project_pretrained_file("CILMP-Tiny", "synthetic")
    assert second != first and second.read_bytes() != first_bytes
    assert first.read_bytes() == first_bytes  # the run's file is never rewritten
    assert sorted(p.name for p in project_weights_dir().glob("*.safetensors")) == sorted([first.name, second.name])

    trained = load_run(tmp_path / "run")  # verifies the recorded hash
    tensors = list(trained.build_network().state_dict().values())
    for weights, expected in ((load_file(str(first)), True), (load_file(str(second)), False)):
        for key in ("visual.conv1.weight", "positional_embedding"):  # frozen tensors the towers hold as they are
            assert any(t.shape == weights[key].shape and torch.equal(t, weights[key]) for t in tensors) == expected
    assert main(["evaluate", "--run", str(tmp_path / "run")]) == 0
