"""The CILMP bundle: train, evaluate and inference configs run end to end with monai.bundle on a tiny setup."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import ConfigParser, run, verify_net_in_out
from PIL import Image

from monai_cilmp.data import DATASETS, datalist_from_folder, write_datalist
from tests.conftest import random_bank

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "cilmp"
CONFIGS = BUNDLE / "configs"
CLASSES = ["round red lesion", "flat blue lesion"]
TINY = {
    "backbone": "CILMP-Tiny",
    "pretrained": "none",
    "offline": True,
    "network_def#text_prompt_depth": 2,
    "network_def#vision_prompt_depth": 2,
    "recipe#batch_size": 4,
    "recipe#lr": 0.05,
    "num_workers": 0,
}


def _tiny_dataset(root: Path) -> None:
    rng = np.random.default_rng(0)
    data = root / "data" / "toy"
    for label, name in enumerate(CLASSES):
        folder = data / "images" / name
        folder.mkdir(parents=True)
        for i in range(10):
            image = rng.integers(0, 60, (48, 48, 3), dtype=np.uint8)
            image[12:36, 12:36, 0 if label == 0 else 2] = 220
            Image.fromarray(image).save(folder / f"{i}.png")
    datalist = datalist_from_folder(data / "images", val_fraction=0.2, test_fraction=0.2, seed=0, preset="dermoscopy")
    write_datalist(datalist, data / "datalist.json")
    random_bank(CLASSES, lengths=(6, 9), dim=16).save(data / "knowledge.safetensors")
    inference = data / "inference"
    inference.mkdir()
    for item in datalist["test"][:3]:
        (inference / Path(item["image"]).name).write_bytes(Path(item["image"]).read_bytes())


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    _tiny_dataset(root)
    run(
        run_id="run",
        init_id="initialize",
        config_file=[str(CONFIGS / "train.json")],
        logging_file=str(CONFIGS / "logging.conf"),
        bundle_root=str(root),
        dataset_name="toy",
        **{**TINY, "train#trainer#max_epochs": 2},
    )
    return root


def test_train_writes_a_checkpoint_with_what_inference_needs(trained_bundle):
    from monai_cilmp.engines import load_checkpoint

    final = load_checkpoint(trained_bundle / "runs" / "toy" / "checkpoints" / "final.pt")
    assert final["engine"]["epoch"] == 2
    meta = final["metadata"]
    assert meta["class_names"] == sorted(CLASSES) and meta["preset"] == "dermoscopy"
    assert meta["network"]["text_prompt_depth"] == 2 and Path(meta["knowledge"]).is_absolute()


def test_evaluate_writes_metrics_confusion_and_predictions(trained_bundle):
    run(
        run_id="run",
        init_id="initialize",
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")],
        bundle_root=str(trained_bundle),
        dataset_name="toy",
        **TINY,
    )
    out = trained_bundle / "runs" / "toy"
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert metrics["n"] == 4 and 0 <= metrics["accuracy"] <= 1
    assert (out / "test_confusion.png").is_file() and (out / "test_confusion.csv").is_file()
    rows = list(csv.DictReader((out / "test_predictions.csv").open()))
    assert len(rows) == 4 and rows[0]["predicted"] in CLASSES
    # calibrated on the validation split: stored for inference, reported before/after
    assert (out / "calibration.json").is_file() and (out / "test_reliability.png").is_file()
    assert metrics["calibration"]["fitted_on"] == "validation" and "coverage" in metrics["conformal"]
    assert set(rows[0]["prediction_set"].split("|")) <= set(CLASSES) | {""}


def test_inference_writes_probabilities_per_image(trained_bundle):
    run(
        run_id="run",
        init_id="initialize",
        config_file=[str(CONFIGS / "inference.json")],
        bundle_root=str(trained_bundle),
        dataset_name="toy",
    )
    rows = list(csv.DictReader((trained_bundle / "runs" / "toy" / "predictions.csv").open()))
    assert len(rows) == 3
    assert "prediction_set" in rows[0]  # the calibration evaluate.json stored is applied
    for row in rows:
        probs = [float(row[f"p({c})"]) for c in sorted(CLASSES)]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)


def test_verify_net_in_out(trained_bundle):
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=str(CONFIGS / "train.json"),
        bundle_root=str(trained_bundle),
        dataset_name="toy",
        **{
            **TINY,
            "_meta_#network_data_format#inputs#image#spatial_shape": [64, 64],
            "_meta_#network_data_format#outputs#pred#num_channels": 2,
        },
    )


def test_metadata_follows_the_bundle_specification():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).parent / "data" / "metadata_schema.json").read_text())
    jsonschema.validate(json.loads((CONFIGS / "metadata.json").read_text()), schema)


def test_every_registered_dataset_has_an_overlay_matching_the_registry():
    for name, spec in DATASETS.items():
        overlay = json.loads((CONFIGS / "datasets" / f"{name}.json").read_text())
        assert overlay["class_names"] == list(spec.class_names) and overlay["preset"] == spec.preset
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "datasets" / f"{name}.json")])
        assert parser["dataset_name"] == name


def test_multi_gpu_config_trains_with_two_cpu_processes(tmp_path):
    """The torchrun + DDP overlay, on two CPU processes with the gloo backend."""
    import os
    import subprocess
    import sys

    _tiny_dataset(tmp_path)
    args = []
    for key, value in {**TINY, "train#trainer#max_epochs": 1}.items():
        args += [f"--{key}", str(value)]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
        "-m", "monai.bundle", "run",
        "--config_file", f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']",
        "--bundle_root", str(tmp_path), "--dataset_name", "toy", *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    from monai_cilmp.engines import load_checkpoint

    final = load_checkpoint(tmp_path / "runs" / "toy" / "checkpoints" / "final.pt")
    assert final["engine"]["epoch"] == 1


ONE_EPOCH = {"train#trainer#max_epochs": 1}


@pytest.mark.parametrize("backbone", ["CILMP-Tiny-BERT", "CILMP-Tiny-Timm"])
def test_train_and_evaluate_on_the_other_tower_families(tmp_path, backbone):
    """The bundle runs unchanged on a timm image trunk and a Hugging Face BERT text tower (BiomedCLIP's families)."""
    _tiny_dataset(tmp_path)
    settings = {**TINY, "backbone": backbone, "dataset_name": "toy", "bundle_root": str(tmp_path)}
    run(run_id="run", init_id="initialize", config_file=[str(CONFIGS / "train.json")], **settings, **ONE_EPOCH)
    run(
        run_id="run",
        init_id="initialize",
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")],
        **settings,
    )
    from monai_cilmp.engines import load_checkpoint

    out = tmp_path / "runs" / "toy"
    assert load_checkpoint(out / "checkpoints" / "final.pt")["metadata"]["backbone"] == backbone
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert metrics["n"] == 4 and 0 <= metrics["accuracy"] <= 1


def test_train_with_the_device_cache_and_speed_keys(tmp_path):
    """device_cache caches the deterministic preprocessing on the device; compile and frozen_in_compute_dtype are
    keys of the bundle (compile off here: it compiles for minutes on a CPU)."""
    _tiny_dataset(tmp_path)
    settings = {**TINY, "dataset_name": "toy", "bundle_root": str(tmp_path), "device_cache": True}
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    assert parser["compile"] is False and parser["frozen_in_compute_dtype"] is False and parser["device_cache"] is False
    run(run_id="run", init_id="initialize", config_file=[str(CONFIGS / "train.json")], **settings, **ONE_EPOCH)
    from monai_cilmp.engines import load_checkpoint

    final = load_checkpoint(tmp_path / "runs" / "toy" / "checkpoints" / "final.pt")
    assert final["engine"]["epoch"] == 1
