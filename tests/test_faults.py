"""Bad inputs and faults: each stops with one sentence naming the file or key and what to do, no traceback, and
nothing lost or half-written (the previous checkpoint loads, no temporary files, no stale metrics)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from monai_cilmp.cli import main
from tests.conftest import random_bank

CLASSES = ["round red lesion", "flat blue lesion"]
TINY = ["--backbone", "CILMP-Tiny", "--pretrained", "none", "--offline", "--workers", "0", "--threads", "1"]


def one_sentence(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("monai-cilmp")]
    assert "Traceback" not in err and len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*.tmp")]


def make_data(root: Path, n: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        folder = root / "images" / name
        folder.mkdir(parents=True)
        for i in range(n):
            image = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
            image[8:24, 8:24, 0 if label == 0 else 2] = 220
            Image.fromarray(image).save(folder / f"{i}.png")
    assert main(["prepare", "folder", str(root / "images"), "--out", str(root / "datalist.json")]) == 0
    random_bank(CLASSES, lengths=(5, 7), dim=16).save(root / "knowledge.safetensors")
    return root / "datalist.json"


def train_args(root: Path, out: Path, datalist: Path | None = None, *extra: str) -> list[str]:
    args = ["train", "--datalist", str(datalist or root / "datalist.json")]
    args += ["--knowledge", str(root / "knowledge.safetensors"), "--out", str(out), *TINY]
    return [*args, "--epochs", "1", "--batch-size", "4", "--lr", "0.05", *extra]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    make_data(root)
    return root


@pytest.fixture(scope="module")
def run(data):
    out = data / "run"
    assert main(train_args(data, out)) == 0
    return out


# --- bad data -------------------------------------------------------------------------------------------------------


def test_non_finite_batch_stops_before_any_weight_changes(tmp_path):
    """Epoch 1 trains; in epoch 2 an image turns NaN: training stops naming it, last.pt still holds epoch 1."""
    from ignite.engine import Events
    from monai.data import MetaTensor

    from monai_cilmp.engines import TrainingRecipe, create_trainer, load_checkpoint
    from monai_cilmp.handlers import NonFiniteError
    from monai_cilmp.networks import CILMP

    network = CILMP(CLASSES, random_bank(CLASSES, lengths=(5, 7), dim=16), backbone="CILMP-Tiny", pretrained=None)
    size = network.image_size
    images = [MetaTensor(torch.rand(3, size, size), meta={"filename_or_obj": f"/data/{i}.png"}) for i in range(4)]
    items = [{"image": img, "label": torch.tensor(i % 2)} for i, img in enumerate(images)]
    loader = torch.utils.data.DataLoader(items, batch_size=2, collate_fn=__import__("monai").data.list_data_collate)
    recipe = TrainingRecipe(max_epochs=3, batch_size=2, warmup_epochs=0, gpa_std=0.0, val_interval=0)
    trainer = create_trainer(network, loader, tmp_path, recipe, device="cpu", progress=False)
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda _: images[3].fill_(float("nan")))
    with pytest.raises(NonFiniteError, match=r"Image\(s\) '/data/3.png' hold NaN or infinite values \(epoch 2\)"):
        trainer.run()
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["engine"]["epoch"] == 1 and all(torch.isfinite(t).all() for t in last["network"].values())
    assert all(torch.isfinite(p).all() for p in network.parameters())
    assert not (tmp_path / "checkpoints" / "final.pt").exists() and not temporaries(tmp_path)


def test_nan_nifti_in_training_is_named(tmp_path, capsys):
    make_data(tmp_path)
    datalist = json.loads((tmp_path / "datalist.json").read_text())
    bad = tmp_path / "images" / "nan.nii.gz"
    volume = np.random.rand(32, 32, 3).astype(np.float32)
    volume[0, 0, :] = np.nan
    nib.save(nib.Nifti1Image(volume, np.eye(4)), bad)
    datalist["training"].append({"image": str(bad), "label": 0})
    (tmp_path / "bad.json").write_text(json.dumps(datalist))
    out = tmp_path / "run"
    assert main(train_args(tmp_path, out, tmp_path / "bad.json", "--batch-size", "16")) == 2
    one_sentence(capsys.readouterr().err, str(bad), "NaN or infinite")
    assert not (out / "checkpoints" / "final.pt").exists() and not temporaries(out)


def test_prepare_check_reports_unusable_images_by_name(tmp_path, capsys):
    make_data(tmp_path)
    folder = tmp_path / "images" / CLASSES[0]
    nan = np.random.rand(16, 16, 4).astype(np.float32)
    nan[3, 3, 1] = np.inf
    nib.save(nib.Nifti1Image(nan, np.eye(4)), folder / "inf.nii.gz")
    nib.save(nib.Nifti1Image(np.random.rand(16, 16, 4, 2).astype(np.float32), np.eye(4)), folder / "4d.nii.gz")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(folder / "dot.png")
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(folder / "blank.png")
    out = tmp_path / "checked.json"
    assert main(["prepare", "folder", str(tmp_path / "images"), "--out", str(out), "--check"]) == 2
    err = capsys.readouterr().err
    assert "4 of 20 images" in err and "Traceback" not in err and not out.exists()
    for name, why in [
        ("inf.nii.gz", "NaN or infinite"),
        ("4d.nii.gz", "has 4 dimensions"),
        ("dot.png", "degenerate image of 1x1"),
        ("blank.png", "single intensity value"),
    ]:
        assert any(name in line and why in line for line in err.splitlines()), (name, err)


def test_datalist_checks_before_any_work(data, tmp_path, capsys):
    listing = json.loads((data / "datalist.json").read_text())
    # a missing image is found before training starts: nothing is written
    missing = dict(listing, training=[*listing["training"], {"image": str(tmp_path / "gone.png"), "label": 1}])
    (tmp_path / "missing.json").write_text(json.dumps(missing))
    out = tmp_path / "run"
    assert main(train_args(data, out, tmp_path / "missing.json")) == 2
    one_sentence(capsys.readouterr().err, "gone.png", "does not exist")
    assert not out.exists()
    # one class
    single = {"class_names": ["only"], "training": [{"image": listing["training"][0]["image"], "label": 0}]}
    (tmp_path / "single.json").write_text(json.dumps(single))
    assert main(["prepare", "datalist", str(tmp_path / "single.json"), "--out", str(tmp_path / "s.json")]) == 2
    one_sentence(capsys.readouterr().err, "single class", "at least two classes")
    # the same image twice under another spelling
    image = Path(listing["training"][0]["image"])
    leak = dict(
        listing,
        test=[*listing["test"], {"image": str(image.parent / ".." / image.parent.name / image.name), "label": 0}],
    )
    (tmp_path / "leak.json").write_text(json.dumps(leak))
    assert main(train_args(data, out, tmp_path / "leak.json")) == 2
    one_sentence(capsys.readouterr().err, "is in both the training", "one split only")
    link = tmp_path / "link.png"
    link.symlink_to(image)
    leak = dict(listing, test=[*listing["test"], {"image": str(link), "label": 0}])
    (tmp_path / "leak.json").write_text(json.dumps(leak))
    assert main(train_args(data, out, tmp_path / "leak.json")) == 2
    one_sentence(capsys.readouterr().err, "is in both the training")
    # --classes that contradict the datalist are not silently ignored
    assert main([*train_args(data, out), "--classes", "a", "b"]) == 2
    one_sentence(capsys.readouterr().err, "differ from those of datalist")
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--epochs", "0"], "--epochs: must be greater than 0"),
        (["--batch-size", "-1"], "--batch-size: must be greater than 0"),
        (["--preset", "xray-ish"], "Unknown preset 'xray-ish'"),
        (["--threads", "0"], "--threads must be at least 1"),
    ],
)
def test_bad_options_are_one_sentence(data, tmp_path, capsys, extra, fragment):
    try:
        code = main([*train_args(data, tmp_path / "run"), *extra])
    except SystemExit as e:  # argparse's own errors: usage line plus one sentence
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_unknown_bundle_setting_is_refused(data):
    from monai_cilmp.cli._bundle import run_bundle

    with pytest.raises(ValueError, match="Unknown bundle setting"):
        run_bundle(["train.json"], {"recipe_typo#lr": 0.1})


def test_unknown_backbone_is_one_sentence(data, tmp_path, capsys):
    args = train_args(data, tmp_path / "run")
    args[args.index("CILMP-Tiny")] = "ViT-Nope-16"
    assert main(args) == 2
    one_sentence(capsys.readouterr().err, "Unknown backbone 'ViT-Nope-16'")


# --- runs that can be trusted ---------------------------------------------------------------------------------------


def test_random_weights_run_reproduces_from_another_directory(data, run, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    settings = json.loads((run / "run.json").read_text())
    assert settings["pretrained"] == "none" and settings["backbone_init_seed"] == 0
    assert (run / "knowledge.safetensors").is_file() and settings["knowledge_sha256"]
    assert main(["evaluate", "--run", str(run), "--split", "validation", "--threads", "1"]) == 0
    first = (run / "validation_metrics.json").read_bytes()
    assert main(["evaluate", "--run", str(run), "--split", "validation", "--threads", "1"]) == 0
    assert (run / "validation_metrics.json").read_bytes() == first
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    logged = events.Scalars("val_accuracy")[-1].value
    assert json.loads(first)["accuracy"] == pytest.approx(logged, abs=1e-6)


def test_pretrained_file_is_recorded_absolute_with_its_hash(data, tmp_path, monkeypatch, capsys):
    from monai_cilmp.networks import load_backbone

    weights = tmp_path / "weights" / "tiny.pt"
    weights.parent.mkdir()
    torch.save(load_backbone("CILMP-Tiny", None).model.state_dict(), weights)
    monkeypatch.chdir(tmp_path)
    args = train_args(data, tmp_path / "run")
    args[args.index("none")] = "weights/tiny.pt"
    assert main(args) == 0
    settings = json.loads((tmp_path / "run" / "run.json").read_text())
    assert settings["pretrained"] == str(weights) and len(settings["pretrained_sha256"]) == 64
    monkeypatch.chdir(data)  # another directory: the relative path would name another (missing) file
    assert main(["evaluate", "--run", str(tmp_path / "run"), "--threads", "1"]) == 0
    weights.write_bytes(weights.read_bytes() + b"\0")
    assert main(["evaluate", "--run", str(tmp_path / "run")]) == 2
    one_sentence(capsys.readouterr().err, str(weights), "changed since")


def test_run_folder_reuse_resume_and_lock(data, tmp_path, capsys):
    from monai_cilmp.engines import run_lock

    out = tmp_path / "run"
    assert main(train_args(data, out)) == 0
    assert main(["evaluate", "--run", str(out), "--threads", "1"]) == 0
    assert (out / "test_metrics.json").is_file() and (out / "metrics" / "test" / "metrics.csv").is_file()
    # other settings: refused, then replaced with --overwrite (no stale metrics stay)
    assert main(train_args(data, out, None, "--seed", "7")) == 2
    one_sentence(capsys.readouterr().err, "already holds a run of other settings", "recipe.seed: 1 -> 7", "--overwrite")
    assert main(train_args(data, out, None, "--seed", "7", "--overwrite")) == 0
    assert not (out / "test_metrics.json").exists() and not (out / "metrics").exists()
    assert json.loads((out / "run.json").read_text())["recipe"]["seed"] == 7
    # resume with other settings: refused, naming them
    assert main(train_args(data, out, None, "--seed", "7", "--resume", "--lr", "0.1")) == 2
    one_sentence(capsys.readouterr().err, "Cannot resume", "recipe.lr: 0.05 -> 0.1")
    # a folder in use by another process
    with run_lock(out):
        child = subprocess.run(
            [sys.executable, "-m", "monai_cilmp", *train_args(data, out, None, "--seed", "7", "--overwrite")],
            capture_output=True,
            text=True,
        )
    assert child.returncode == 2
    one_sentence(child.stderr, "is in use by another process")
    assert torch.load(out / "checkpoints" / "final.pt", weights_only=True)["metadata"]["recipe"]["seed"] == 7


# --- faults ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root in a machine that allows mounts")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_disk_full_keeps_previous_checkpoint(tiny_disk):
    from monai_cilmp.engines import atomic_torch_save, load_checkpoint

    path = atomic_torch_save({"network": {"a": torch.ones(4)}}, tiny_disk / "last.pt")
    with pytest.raises(OSError, match=f"No space left on device while writing '{path}'"):
        atomic_torch_save({"network": {"a": torch.zeros(200_000)}}, path)
    assert torch.equal(load_checkpoint(path)["network"]["a"], torch.ones(4))
    assert [p.name for p in tiny_disk.iterdir()] == ["last.pt"]


def test_read_only_out_is_one_sentence(data, tmp_path, capsys):
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount)], capture_output=True
    ).returncode:
        pytest.skip("mounting a read-only tmpfs needs root in a machine that allows mounts")
    try:
        assert main(train_args(data, mount / "run")) == 2
        one_sentence(capsys.readouterr().err, "Cannot write to", "run")
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_stale_temporaries_are_removed(data, run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    (out / "checkpoints" / ".last.pt.abc123.tmp").write_bytes(b"killed mid-write")
    assert main(train_args(data, out, None, "--overwrite")) == 0
    assert not temporaries(out)


def test_predict_reports_bad_files_and_predicts_the_rest(data, run, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    good = sorted((data / "images").rglob("*.png"))[:2]
    for image in good:
        shutil.copy(image, folder / image.name)
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "predictions.jsonl"
    capsys.readouterr()
    assert main(["predict", "--run", str(run), str(folder), "--out", str(out), "--threads", "1"]) == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "1 of 3 images could not be predicted" in err and "Traceback" not in err
    assert len(out.read_text().splitlines()) == 2


# --- issue 21: sentences that name the file and the fix; evaluation reports all or nothing --------------------------


def test_pickled_knowledge_bank_is_named_and_never_loaded(data, tmp_path, capsys):
    import os
    import pickle

    marker = tmp_path / "PAYLOAD_RAN"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for name, write in {
        "pickle.safetensors": lambda p: p.write_bytes(pickle.dumps(Payload())),
        "torch_save.safetensors": lambda p: torch.save({"knowledge": Payload()}, p),
    }.items():
        bank = tmp_path / name
        write(bank)
        args = train_args(data, tmp_path / "run")
        args[args.index("--knowledge") + 1] = str(bank)
        assert main(args) == 2
        one_sentence(
            capsys.readouterr().err,
            f"'{bank}' is not a safetensors knowledge bank: it holds a Python pickle, which is never loaded",
            "monai-cilmp knowledge extract ... --out FILE.safetensors",
        )
    assert not marker.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "state, key",
    [
        ({"temperature": "abc", "n": 3}, "'temperature' must be a positive number, not 'abc'"),
        ({"temperature": 1.5, "n": "x"}, "'n' must be a whole number, not 'x'"),
        ({"temperature": 1.5, "conformal": {"alpha": "x", "method": "lac"}}, "'conformal' is not a fitted conformal"),
    ],
)
def test_malformed_calibration_names_file_and_key(data, run, tmp_path, capsys, state, key):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    (out / "calibration.json").write_text(json.dumps(state))
    image = next((data / "images" / CLASSES[0]).glob("*.png"))
    assert main(["predict", "--run", str(out), str(image)]) == 2
    one_sentence(
        capsys.readouterr().err,
        f"Calibration file '{out / 'calibration.json'}' is malformed ({key}",
        f"run `monai-cilmp evaluate --run {out}` again to refit it",
    )


def _hashes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_evaluate_read_only_run_is_one_sentence_and_out_writes_elsewhere(run, tmp_path, capsys):
    store = tmp_path / "store"
    store.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(store)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root in a machine that allows mounts")
    try:
        shutil.copytree(run, store / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(store)], check=True)
        before = _hashes(store / "run")
        capsys.readouterr()
        assert main(["evaluate", "--run", str(store / "run")]) == 2
        one_sentence(
            capsys.readouterr().err,
            f"Cannot write the evaluation report into '{store / 'run'}' (read-only file system): pass --out DIR",
        )
        report = tmp_path / "report"
        assert main(["evaluate", "--run", str(store / "run"), "--out", str(report)]) == 0
        metrics = json.loads((report / "test_metrics.json").read_text())
        assert metrics["files"]["metrics"] == str(report / "test_metrics.json")
        assert all(Path(path).exists() for path in metrics["files"].values())
        assert (report / "calibration.json").is_file() and (report / "metrics" / "test" / "metrics.csv").is_file()
        assert not list(report.glob(".*")) and _hashes(store / "run") == before
    finally:
        subprocess.run(["umount", str(store)], check=False)


def test_evaluate_on_a_full_disk_keeps_nothing_and_names_the_file(run, tiny_disk, capsys):
    """The report (about 190 kB) does not fit in 256 kB beside the lock-free staging: nothing of it is kept (before,
    calibration.json and metrics.csv were left without test_metrics.json), and the sentence names the file."""
    (tiny_disk / "filler").write_bytes(b"\0" * 150_000)
    report = tiny_disk / "report"
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--out", str(report)]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in captured.out and "terminating due to exception" not in captured.out
    one_sentence(err, "The evaluation report could not be written (no space left on device while writing", "nothing")
    line = [line for line in err.splitlines() if line.startswith("monai-cilmp")][0]
    assert f"while writing '{report}/" in line, line
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler", "report"] and not list(report.iterdir())
