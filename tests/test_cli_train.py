"""monai-cilmp train / evaluate / predict on a tiny offline setup, and their one-sentence errors."""

from __future__ import annotations

import json

import pytest

from monai_cilmp.cli import main
from tests.bundle.test_cilmp_bundle import CLASSES, _tiny_dataset
from tests.conftest import random_bank


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    _tiny_dataset(root)
    data = root / "data" / "toy"
    args = ["train", "--datalist", str(data / "datalist.json"), "--knowledge", str(data / "knowledge.safetensors")]
    args += ["--out", str(root / "run"), "--backbone", "CILMP-Tiny", "--pretrained", "none", "--offline"]
    args += ["--epochs", "1", "--batch-size", "4", "--workers", "0", "--lr", "0.05"]
    assert main(args) == 0
    return root


def test_train_evaluate_predict(trained, capsys):
    run = trained / "run"
    assert (run / "checkpoints" / "final.pt").is_file() and not (run / ".lock").exists()  # no lock left behind
    assert main(["evaluate", "--run", str(run), "--alpha", "0.2", "--conformal", "aps"]) == 0
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["n"] == 4 and set(metrics["per_class"]) == set(CLASSES)
    # the temperature and the conformal sets are fitted on the validation split and stored in the run
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["fitted_on"] == "validation" and calibration["conformal"]["method"] == "aps"
    assert metrics["conformal"]["alpha"] == 0.2 and "after" in metrics["calibration"]
    assert (run / "test_reliability.png").is_file() and (run / "test_conformal.png").is_file()
    printed = capsys.readouterr().out
    assert "Conformal APS sets at alpha = 0.2" in printed
    # 4 validation images: evaluate's summary says the calibration cannot be trusted, and so do predict and explain
    assert "WARNING: The calibration was fitted on only 4 validation images; at least 50" in printed
    assert main(["predict", "--run", str(run), str(trained / "data" / "toy" / "inference")]) == 0
    printed, err = capsys.readouterr()
    assert "WARNING: The calibration was fitted on only 4 validation images" in err
    # earlier in-process runs configured the bundle's logging (INFO to stdout); predict's own output is JSON lines
    lines = [json.loads(line) for line in printed.splitlines() if line.startswith("{")]
    assert len(lines) == 3 and all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in lines)
    assert all(set(r["prediction_set"]) <= set(CLASSES) for r in lines)
    out = trained / "predictions.jsonl"
    assert main(["predict", "--run", str(run), str(trained / "data" / "toy" / "inference"), "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 3


def test_resume_continues_a_run(trained):
    data = trained / "data" / "toy"
    args = ["train", "--datalist", str(data / "datalist.json"), "--knowledge", str(data / "knowledge.safetensors")]
    args += ["--out", str(trained / "run"), "--backbone", "CILMP-Tiny", "--pretrained", "none", "--offline"]
    args += ["--epochs", "2", "--batch-size", "4", "--workers", "0", "--lr", "0.05", "--resume"]
    assert main(args) == 0
    from monai_cilmp.engines import load_checkpoint

    assert load_checkpoint(trained / "run" / "checkpoints" / "final.pt")["engine"]["epoch"] == 2


def test_errors_are_one_sentence(trained, tmp_path, capsys):
    data = trained / "data" / "toy"
    base = ["train", "--out", str(tmp_path / "run"), "--backbone", "CILMP-Tiny", "--pretrained", "none"]
    assert main([*base, "--datalist", str(tmp_path / "no.json"), "--knowledge", str(data / "knowledge.safetensors")])
    assert "Datalist" in capsys.readouterr().err
    wrong = random_bank(["melanoma", "nevus"], lengths=(3, 4), dim=8).save(tmp_path / "wrong.safetensors")
    assert main([*base, "--datalist", str(data / "datalist.json"), "--knowledge", str(wrong)]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "unexpected ['melanoma', 'nevus']" in err and err.count("\n") == 1
    assert main(["predict", "--run", str(trained / "run"), str(tmp_path / "nothing.png")]) == 2
    assert "neither an image file nor a folder" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(tmp_path)]) == 2
    assert "has no final checkpoint (training did not finish" in capsys.readouterr().err


@pytest.mark.parametrize("backbone, extra", [("CILMP-Tiny-BERT", []), ("CILMP-Tiny", ["--quick-gelu", "false"])])
def test_train_and_evaluate_another_family_or_activation(trained, tmp_path, backbone, extra):
    from monai_cilmp.engines import load_checkpoint

    data = trained / "data" / "toy"
    args = ["train", "--datalist", str(data / "datalist.json"), "--knowledge", str(data / "knowledge.safetensors")]
    args += ["--out", str(tmp_path / "run"), "--backbone", backbone, "--pretrained", "none", "--offline", *extra]
    args += ["--epochs", "1", "--batch-size", "4", "--workers", "0"]
    assert main(args) == 0
    meta = load_checkpoint(tmp_path / "run" / "checkpoints" / "final.pt")["metadata"]
    assert meta["backbone"] == backbone
    assert meta["network"]["quick_gelu"] is (None if not extra else False)  # None: from the weights' provenance
    assert main(["evaluate", "--run", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "test_metrics.json").read_text())["n"] == 4


def test_explain_writes_overlays_and_knowledge_words(trained, capsys):
    run = trained / "run"
    inference = trained / "data" / "toy" / "inference"
    out = trained / "explained"
    assert main(["explain", "--run", str(run), str(inference), "--out", str(out), "--top-k", "3"]) == 0
    printed, err = capsys.readouterr()
    calibrated = (run / "calibration.json").is_file()  # when test_train_evaluate_predict ran first
    assert not calibrated or "WARNING: The calibration was fitted on only 4 validation images" in err
    summary = json.loads((out / "explanations.json").read_text())
    assert len(summary) == 3
    for entry in summary:
        assert entry["predicted"] in CLASSES and set(entry["knowledge"]) == set(CLASSES)
        assert all(len(words) == 3 for words in entry["knowledge"].values())
        for path in entry["files"].values():
            assert (out / path.split("/")[-1]).read_bytes()[:4] == b"\x89PNG"
    assert "saliency of" in printed and "predicted" in printed and "map at the image's size (48x48)" in printed
    assert main(["explain", "--run", str(run), str(inference), "--class", "nope"]) == 2
    assert "is not one of the run's classes" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_matches_pytorch_on_the_test_images(trained, tmp_path, capsys, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    out = tmp_path / f"model.{fmt}"
    args = ["export", "--run", str(trained / "run"), "--format", fmt, "--out", str(out), "--output", "probabilities"]
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(args) == 0
    assert not [w for w in caught if "aten::index" in str(w.message)]  # said in the report instead, with its verdict
    printed = capsys.readouterr().out
    report = json.loads(printed[printed.rfind('{\n  "file"') :])
    assert out.is_file() and report["file"] == str(out)
    assert report["check"]["images"] == 4 and report["check"]["on"].startswith("test images")
    assert report["check"]["max_abs_prob_difference"] < 1e-5
    if fmt == "onnx":
        assert report["check"]["negative_index_warning"].endswith("on these images it does not apply")
    if fmt == "torchscript":  # with the run's metadata, describing this export's output
        from monai.data import load_net_with_metadata

        _, meta, _ = load_net_with_metadata(str(out))
        assert meta["network_data_format"]["outputs"]["pred"]["type"] == "probabilities"
        assert list(meta["network_data_format"]["outputs"]["pred"]["channel_def"].values()) == sorted(CLASSES)


def test_set_changes_one_config_entry(trained, tmp_path, capsys):
    """``--set ID=VALUE`` reaches the bundle as data: one handler off (no TensorBoard loss curve), a value changed;
    an entry the config does not have, or text that is not ID=VALUE, is one sentence (status 2)."""
    from tests.bundle.test_train_config import _scalar_tags

    data = trained / "data" / "toy"
    args = ["train", "--datalist", str(data / "datalist.json"), "--knowledge", str(data / "knowledge.safetensors")]
    args += ["--backbone", "CILMP-Tiny", "--pretrained", "none", "--offline", "--epochs", "1", "--batch-size", "4"]
    args += ["--workers", "0", "--out", str(tmp_path / "run")]
    settings = ["--set", "train#handlers#6#_disabled_=true", "--set", "recipe#gpa_std=0"]
    assert main([*args, *settings]) == 0
    tags = _scalar_tags(tmp_path / "run" / "tensorboard")
    assert "train_loss" not in tags and "train/lr" in tags
    assert json.loads((tmp_path / "run" / "run.json").read_text())["recipe"]["gpa_std"] == 0
    capsys.readouterr()
    for wrong in ("train#handlers#66#_disabled_=true", "recipe#no_such_value=1", "recipe#lr"):
        assert main([*args, "--overwrite", "--set", wrong]) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]  # after the random-weights warning
        assert "Unknown bundle setting" in error or "is not ID=VALUE" in error, error


def _tiny_train_args(root, out, *extra):
    data = root / "data" / "toy"
    args = ["train", "--datalist", str(data / "datalist.json"), "--knowledge", str(data / "knowledge.safetensors")]
    args += ["--out", str(out), "--backbone", "CILMP-Tiny", "--pretrained", "none", "--offline", "--workers", "0"]
    return [*args, "--lr", "0.05", *extra]


def test_the_global_batch_must_divide_over_the_processes(trained, tmp_path, capsys):
    args = _tiny_train_args(trained, tmp_path / "run", "--batch-size", "3", "--nproc-per-node", "2")
    assert main(args) == 2
    assert "batch size 3 is the global batch of one step and must divide evenly over the 2 processes" in (
        capsys.readouterr().err
    )
    assert main(_tiny_train_args(trained, tmp_path / "run", "--nnodes", "2", "--nproc-per-node", "2")) == 2
    assert "--nnodes 2 needs --rdzv-endpoint HOST:PORT" in capsys.readouterr().err


@pytest.mark.distributed
def test_train_on_two_processes_through_torchrun(trained, tmp_path):
    """--nproc-per-node 2 re-launches through torch.distributed.run (-m monai_cilmp); --batch-size is the global
    batch: 12 training images in steps of 4 (2 per process) are 3 steps per epoch, as on one process."""
    from monai_cilmp.engines import load_checkpoint

    run = tmp_path / "run"
    args = _tiny_train_args(trained, run, "--epochs", "2", "--batch-size", "4", "--nproc-per-node", "2")
    assert main(args) == 0
    final = load_checkpoint(run / "checkpoints" / "final.pt")
    training = json.loads((trained / "data" / "toy" / "datalist.json").read_text())["training"]
    assert len(training) == 12 and final["engine"]["epoch"] == 2 and final["engine"]["iteration"] == 2 * 3
    assert final["metadata"]["recipe"]["batch_size"] == 4
    assert not list(run.glob("*.tmp*"))  # one writer: nothing half-written


def _same_up_to_rounding(one, two, where: str = "") -> None:
    """JSON-like values equal, numbers to float rounding (relative 1e-5 or absolute 2e-6), text exactly."""
    if isinstance(one, dict):
        assert isinstance(two, dict) and set(one) == set(two), where
        for key in one:
            _same_up_to_rounding(one[key], two[key], f"{where}/{key}")
    elif isinstance(one, list):
        assert isinstance(two, list) and len(one) == len(two), where
        for i, (a, b) in enumerate(zip(one, two)):
            _same_up_to_rounding(a, b, f"{where}[{i}]")
    elif isinstance(one, float) and isinstance(two, float):
        assert two == pytest.approx(one, rel=1e-5, abs=2e-6, nan_ok=True), where
    else:
        assert one == two, where


def _table(path) -> list[list]:
    """A CSV file's cells, numbers as floats."""
    import csv

    def cell(text: str):
        try:
            return float(text)
        except ValueError:
            return text

    with open(path, newline="", encoding="utf-8") as f:
        return [[cell(c) for c in row] for row in csv.reader(f)]


@pytest.mark.distributed
def test_evaluate_on_two_processes_writes_the_report_of_one_process(trained, tmp_path):
    """--nproc-per-node 2: each process evaluates its half of the test split (a ShardSampler), rank 0 gathers the
    logits in the split's order and alone writes the report, once, through the same staging folder. The files are
    those of one process: the same names, the same images, predictions and sets; numbers equal up to the float
    rounding of other batch compositions and thread counts (measured: 5e-7 relative)."""
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["evaluate", "--run", str(trained / "run"), "--workers", "0", "--alpha", "0.2"]
    assert main([*common, "--out", str(one)]) == 0
    assert main([*common, "--out", str(two), "--nproc-per-node", "2"]) == 0
    files = sorted(str(p.relative_to(one)) for p in one.rglob("*") if p.is_file() and "tensorboard" not in p.parts)
    assert files == sorted(
        str(p.relative_to(two)) for p in two.rglob("*") if p.is_file() and "tensorboard" not in p.parts
    )
    assert len(list((two / "tensorboard").glob("events.*"))) == 1  # one writer
    assert not [p for p in two.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]  # nothing half-done
    assert json.loads((two / "test_metrics.json").read_text())["n"] == 4  # every test image once, none padded
    for name in ("test_metrics.json", "calibration.json"):
        reports = [json.loads((folder / name).read_text().replace(str(folder), "OUT")) for folder in (one, two)]
        _same_up_to_rounding(*reports, name)
    for name in ("test_predictions.csv", "test_confusion.csv", "metrics/test/metrics.csv"):
        _same_up_to_rounding(_table(one / name), _table(two / name), name)


@pytest.mark.distributed
def test_predict_on_two_processes_writes_what_one_process_writes(trained, tmp_path):
    """--nproc-per-node 2: each process predicts its share of the images, rank 0 writes every line in input order.
    Each image predicted alone (--batch-size 1) and on one thread, the file is byte for byte the one of one
    process (with batches and threads of other sizes the 6th decimal may differ: float rounding)."""
    import torch

    images, threads = trained / "data" / "toy" / "images", torch.get_num_threads()
    common = ["predict", "--run", str(trained / "run"), str(images), "--workers", "0", "--batch-size", "1"]
    try:
        assert main([*common, "--threads", "1", "--out", str(tmp_path / "one.jsonl")]) == 0
    finally:
        torch.set_num_threads(threads)
    assert main([*common, "--threads", "1", "--out", str(tmp_path / "two.jsonl"), "--nproc-per-node", "2"]) == 0
    written = (tmp_path / "two.jsonl").read_bytes()
    assert written == (tmp_path / "one.jsonl").read_bytes()
    assert len(written.splitlines()) == len([p for p in images.rglob("*.png")]) > 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.jsonl", "two.jsonl"]  # nothing half-written beside


def _file_hashes(folder) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def _epoch_lrs(log_dir) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    lrs: dict[int, float] = {}
    for events in sorted(log_dir.glob("events.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        lrs.update({e.step: e.value for e in accumulator.Scalars("train/lr")})
    return lrs


def test_resume_of_a_finished_run_changes_nothing(trained, tmp_path, capsys):
    """A run that trained all its epochs, resumed with the same settings, says so in one sentence, exits 0 and leaves
    every file of its folder byte for byte; fewer epochs is one sentence (status 2); more epochs trains on, the added
    epochs following the cosine of the new length (``lr_factor`` with the new ``max_epochs``)."""
    from monai_cilmp.engines import TrainingRecipe, load_checkpoint
    from monai_cilmp.engines.recipe import lr_factor

    data = trained / "data" / "toy"
    run, epochs = tmp_path / "run", 2
    args = ["train", "--datalist", str(data / "datalist.json"), "--knowledge", str(data / "knowledge.safetensors")]
    args += ["--out", str(run), "--backbone", "CILMP-Tiny", "--pretrained", "none", "--offline"]
    args += ["--batch-size", "4", "--workers", "0", "--lr", "0.05"]
    assert main([*args, "--epochs", str(epochs)]) == 0
    before = _file_hashes(run)
    capsys.readouterr()
    assert main([*args, "--resume", "--epochs", str(epochs)]) == 0
    out = capsys.readouterr().out
    assert f"has already trained all its {epochs} epochs: nothing to resume, nothing changed" in out, out
    assert _file_hashes(run) == before
    assert main([*args, "--resume", "--epochs", "1"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"has already trained {epochs} epochs, more than the 1 asked" in error, error
    assert _file_hashes(run) == before
    assert main([*args, "--resume", "--epochs", str(epochs + 2)]) == 0
    assert load_checkpoint(run / "checkpoints" / "final.pt")["engine"]["epoch"] == epochs + 2
    longer = TrainingRecipe(lr=0.05, max_epochs=epochs + 2)
    lrs = _epoch_lrs(run / "tensorboard")
    for epoch in (epochs + 1, epochs + 2):  # 1-based steps of the log, 0-based epochs of the schedule
        assert lrs[epoch] == pytest.approx(0.05 * lr_factor(epoch - 1, longer), rel=1e-6), (epoch, lrs)


def test_our_commands_print_no_library_noise(trained):
    """No MONAI warning about trusting our own configs or their folders, no open_clip warning about random weights
    that were asked for (the run's backbone is rebuilt from its seed)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "monai_cilmp", "evaluate", "--run", str(trained / "run"), "--threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed[-2000:]
    for noise in ("source you trust", "Not all config files", "initialized randomly", "arenot"):
        assert noise not in printed
