"""The demo overlay of the CILMP bundle and ``monai-cilmp demo``: offline, end to end, and it learns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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


def test_the_default_demo_learns(tmp_path):
    """The README's main job with its default settings: CILMP clearly beats chance and zero-shot CLIP."""
    assert main(["demo", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "run" / "demo_summary.json").read_text())
    best_zero_shot = max(summary["zero_shot_names"], summary["zero_shot_descriptions"])
    assert summary["accuracy"] >= 0.75  # chance is 0.25
    assert summary["accuracy"] >= best_zero_shot + 0.05
