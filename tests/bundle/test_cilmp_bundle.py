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
def trained_bundle(tiny_bundle_run):
    """The bundle root of the session's tiny run (``tests/bundle/conftest.py``): this module's tests add to its
    ``runs/toy`` in order."""
    return tiny_bundle_run[0]


def test_train_writes_a_checkpoint_with_what_inference_needs(trained_bundle):
    from monai_cilmp.engines import load_checkpoint
    from tests.bundle.conftest import TINY_RUN_EPOCHS

    final = load_checkpoint(trained_bundle / "runs" / "toy" / "checkpoints" / "final.pt")
    assert final["engine"]["epoch"] == TINY_RUN_EPOCHS == 2
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
    scores = json.loads((out / "configs" / "metadata.json").read_text())["eval_metrics"]  # the run's own metadata
    assert scores["test_accuracy"] == metrics["accuracy"] and scores["test_n"] == 4
    assert (out / "test_confusion.png").is_file() and (out / "test_confusion.csv").is_file()
    rows = list(csv.DictReader((out / "test_predictions.csv").open()))
    assert len(rows) == 4 and rows[0]["predicted"] in CLASSES
    # calibrated on the validation split: stored for inference, reported before/after
    assert (out / "calibration.json").is_file() and (out / "test_reliability.png").is_file()
    assert metrics["calibration"]["fitted_on"] == "validation" and "coverage" in metrics["conformal"]
    assert set(rows[0]["prediction_set"].split("|")) <= set(CLASSES) | {""}
    saved = _metrics_saver_file(out / "metrics" / "test" / "metrics.csv")  # MONAI's MetricsSaver, per split
    assert saved["accuracy"] == pytest.approx(metrics["accuracy"]) and "loss" in saved


def _metrics_saver_file(path: Path) -> dict[str, float]:
    rows = [line.replace("\t", ",").split(",") for line in path.read_text().splitlines() if line]
    return {name: float(value) for name, value in rows}


def _without_files(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "files"}


def test_evaluate_config_writes_what_evaluate_split_writes(trained_bundle, tmp_path):
    """evaluate.json (SupervisedEvaluator + CheckpointLoader + EvaluationReport) and ``evaluate_split`` on the same
    run give the same report; without the CheckpointLoader (turned off by an override) the network is untrained."""
    import shutil

    from monai_cilmp.engines import evaluate_split, load_run

    copies = {name: tmp_path / name for name in ("loaded", "untrained")}
    for copy in copies.values():
        shutil.copytree(trained_bundle / "runs" / "toy", copy)
    settings = {**TINY, "bundle_root": str(trained_bundle), "dataset_name": "toy"}
    configs = [str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")]
    run(run_id="run", init_id="initialize", config_file=configs, output_dir=str(copies["loaded"]), **settings)
    off = {"test#handlers#0#_disabled_": "true"}  # as `--test#handlers#0#_disabled_ true` on the command line
    run(run_id="run", init_id="initialize", config_file=configs, output_dir=str(copies["untrained"]), **settings, **off)

    parser = ConfigParser()
    parser.read_config(configs)
    for key, value in settings.items():
        parser[key] = value
    datalist = parser.get_parsed_content("datalist")
    network = load_run(copies["loaded"]).build_network()
    expected = evaluate_split(
        network,
        parser.get_parsed_content("test#dataloader"),
        datalist["class_names"],
        tmp_path / "split",
        items=datalist["test"],
        device="cpu",
        calibration_loader=parser.get_parsed_content("validate#dataloader"),
    )
    loaded = json.loads((copies["loaded"] / "test_metrics.json").read_text())
    assert _without_files(loaded) == json.loads(json.dumps(_without_files(expected)))
    for name in ("test_predictions.csv", "test_confusion.csv", "calibration.json"):
        assert (copies["loaded"] / name).read_text() == (tmp_path / "split" / name).read_text(), name
    untrained = json.loads((copies["untrained"] / "test_metrics.json").read_text())
    assert untrained["calibration"]["before"]["nll"] != pytest.approx(loaded["calibration"]["before"]["nll"])
    losses = [_metrics_saver_file(c / "metrics" / "test" / "metrics.csv")["loss"] for c in copies.values()]
    assert losses[0] != pytest.approx(losses[1])


def test_inference_writes_monai_predictions_and_our_probabilities(trained_bundle):
    """``predictions.csv``: MONAI's classification format (``SaveClassificationd``: file, class index; no header);
    ``probabilities.csv``: the run's calibrated probabilities and prediction sets, as ``monai-cilmp predict``."""
    from monai_cilmp.cli._bundle import parse_bundle
    from monai_cilmp.engines import load_calibration, predict_images

    run(
        run_id="run",
        init_id="initialize",
        config_file=[str(CONFIGS / c) for c in ("inference.json", "presets/dermoscopy.json", "from_run.json")],
        bundle_root=str(trained_bundle),
        dataset_name="toy",
    )
    out = trained_bundle / "runs" / "toy"
    monai_rows = list(csv.reader((out / "predictions.csv").open()))
    rows = list(csv.DictReader((out / "probabilities.csv").open()))
    assert len(monai_rows) == len(rows) == 3 and all(len(r) == 2 for r in monai_rows)
    assert [r[0] for r in monai_rows] == [r["image"] for r in rows]
    assert "prediction_set" in rows[0]  # the calibration evaluate.json stored is applied
    probs = np.array([[float(row[f"p({c})"]) for c in sorted(CLASSES)] for row in rows])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    assert [int(float(r[1])) for r in monai_rows] == probs.argmax(1).tolist()
    assert [r["predicted"] for r in rows] == [sorted(CLASSES)[i] for i in probs.argmax(1)]
    parser = parse_bundle(
        ["inference.json", "presets/dermoscopy.json", "from_run.json"], {"output_dir": str(out), "device": "cpu"}
    )
    reference = predict_images(
        parser.get_parsed_content("network"),
        [r["image"] for r in rows],
        parser.get_parsed_content("preprocessing"),
        "cpu",
        calibration=load_calibration(out),
    )
    np.testing.assert_allclose(probs, np.stack(list(reference.values())), atol=2e-6)


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


SCHEMA = Path(__file__).resolve().parents[3] / "shared" / "schemas" / "meta_schema_20240725.json"
needs_schema = pytest.mark.skipif(
    not SCHEMA.is_file(), reason="the MONAI metadata schema (../shared/schemas) is absent"
)


@needs_schema
@pytest.mark.parametrize("which", ["bundle", "run"])
def test_metadata_verifies_against_the_monai_schema(trained_bundle, which):
    from monai.bundle import verify_metadata

    meta = (
        CONFIGS / "metadata.json"
        if which == "bundle"
        else trained_bundle / "runs" / "toy" / "configs" / "metadata.json"
    )
    verify_metadata(meta_file=str(meta), filepath=str(SCHEMA))


def test_run_metadata_records_what_the_run_used(trained_bundle):
    import monai
    import torch

    from monai_cilmp.engines import record_eval_metrics

    out = trained_bundle / "runs" / "toy"
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    assert meta["monai_version"] == monai.__version__ and torch.__version__.startswith(meta["pytorch_version"])
    assert meta["numpy_version"] == np.__version__ and meta["required_packages_version"]["open_clip_torch"]
    # not on a public index: recorded beside the pins model-zoo's get_bundle_requirements.py installs
    assert "monai-cilmp" not in meta["required_packages_version"] and meta["monai_cilmp_version"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert pred["type"] == "logits" and pred["num_channels"] == 2
    assert [pred["channel_def"][str(i)] for i in range(2)] == sorted(CLASSES)
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [64, 64]  # CILMP-Tiny's image size
    assert "toy" in meta["data_source"] and sorted(CLASSES)[1] in meta["pred_classes"]
    record_eval_metrics(out, "check", {"accuracy": 0.5, "macro_auc": float("nan"), "n": 4})
    scores = json.loads((out / "configs" / "metadata.json").read_text())["eval_metrics"]
    assert scores["check_accuracy"] == 0.5 and scores["check_n"] == 4 and "check_macro_auc" not in scores


def test_run_metadata_verifies_the_network_in_and_out(trained_bundle):
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(trained_bundle / "runs" / "toy" / "configs" / "metadata.json"),
        config_file=[str(CONFIGS / c) for c in ("inference.json", "presets/dermoscopy.json", "from_run.json")],
        bundle_root=str(trained_bundle),
        dataset_name="toy",
        device="cpu",
    )


def _probabilities(module, images):
    import torch

    with torch.no_grad():
        return torch.softmax(module(images), dim=-1).numpy()


@pytest.mark.parametrize(
    "checkpoint, key, which", [("checkpoints/final.pt", "network", "final"), ("models/model.pt", "", "best")]
)
def test_ckpt_export_gives_the_same_probabilities(trained_bundle, checkpoint, key, which):
    """``python -m monai.bundle ckpt_export`` on a run (``from_run.json``): the run's checkpoint (or the model-zoo
    ``models/model.pt``, a plain state dict: no ``--key_in_ckpt``), scripted as model-zoo's CI does (the default)."""
    import torch
    from monai.bundle import ckpt_export

    out = trained_bundle / "runs" / "toy"
    ts = out / "models" / f"model_{which}.ts"
    ts.parent.mkdir(exist_ok=True)  # ckpt_export does not create it
    ckpt_export(
        net_id="network_def",
        filepath=str(ts),
        ckpt_file=str(out / checkpoint),
        key_in_ckpt=key,
        meta_file=str(out / "configs" / "metadata.json"),
        config_file=[str(CONFIGS / c) for c in ("inference.json", "presets/dermoscopy.json", "from_run.json")],
        bundle_root=str(trained_bundle),
        dataset_name="toy",
    )
    from monai_cilmp.engines import load_run

    network = load_run(out, which).build_network().eval()
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    reloaded = torch.jit.load(str(ts))
    ts.unlink()
    np.testing.assert_allclose(_probabilities(reloaded, images), _probabilities(network, images), atol=1e-5)


def test_onnx_export_matches_pytorch(trained_bundle):
    ort = pytest.importorskip("onnxruntime")
    import torch

    from monai_cilmp.engines import export_run

    path, module = export_run(trained_bundle / "runs" / "toy", "onnx")
    assert path == trained_bundle / "runs" / "toy" / "models" / "model.onnx"  # beside the run's model.ts
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    logits = session.run(None, {"image": images.numpy()})[0]
    probs = torch.softmax(torch.as_tensor(logits), dim=-1).numpy()
    np.testing.assert_allclose(probs, _probabilities(module, images), atol=1e-5)


def test_inference_with_an_empty_input_folder_is_one_sentence(trained_bundle, tmp_path):
    with pytest.raises(Exception) as info:
        run(
            run_id="run",
            config_file=[str(CONFIGS / c) for c in ("inference.json", "presets/dermoscopy.json", "from_run.json")],
            bundle_root=str(trained_bundle),
            dataset_name="toy",
            input_dir=str(tmp_path),
        )
    from monai_cilmp.cli import user_message

    message, users = user_message(info.value)
    assert users and message.startswith(f"The input folder '{tmp_path}' holds no images") and "\n" not in message


def test_inference_needs_only_the_run_folder(trained_bundle, tmp_path):
    """A copied run folder predicts with the datalist, the knowledge bank and the run folder it came from gone."""
    import shutil

    run_copy = tmp_path / "elsewhere" / "run"
    shutil.copytree(trained_bundle / "runs" / "toy", run_copy)
    images = tmp_path / "images"
    shutil.copytree(trained_bundle / "data" / "toy" / "inference", images)
    (images / "notes.txt").write_text("not an image")
    moved = {
        trained_bundle / "data" / "toy": tmp_path / "data-moved",
        trained_bundle / "runs" / "toy": tmp_path / "run-moved",
    }
    for source, target in moved.items():  # the data and the original run folder are out of reach
        source.rename(target)
    try:
        run(
            run_id="run",
            config_file=[str(CONFIGS / c) for c in ("inference.json", "presets/dermoscopy.json", "from_run.json")],
            bundle_root=str(tmp_path / "nowhere"),
            output_dir=str(run_copy),
            input_dir=str(images),
        )
    finally:
        for source, target in moved.items():
            target.rename(source)
    rows = list(csv.DictReader((run_copy / "probabilities.csv").open()))
    assert len(rows) == 3 and all(not r["image"].endswith(".txt") for r in rows)
    assert [r[0] for r in csv.reader((run_copy / "predictions.csv").open())] == [r["image"] for r in rows]


@pytest.mark.parametrize("workflow_type", ["train", "infer"])
def test_monai_required_bundle_properties_are_present(trained_bundle, tmp_path, workflow_type):
    """MONAI's ``check_properties`` (what ``monai.bundle`` workflows and model-zoo checks rely on) finds every
    required property of a training and an inference workflow."""
    from monai.bundle import ConfigWorkflow

    if workflow_type == "train":
        _tiny_dataset(tmp_path)  # instantiating the trainer prepares a run folder: not the shared one
        config, settings = "train.json", {**TINY, "bundle_root": str(tmp_path), "train#trainer#max_epochs": 1}
    else:
        config, settings = "inference.json", {"bundle_root": str(trained_bundle)}
    overlays = ["presets/dermoscopy.json", "from_run.json"] if workflow_type == "infer" else []
    configs = [str(CONFIGS / c) for c in (config, *overlays)]
    workflow = ConfigWorkflow(
        config_file=configs, meta_file=str(CONFIGS / "metadata.json"), workflow_type=workflow_type
    )
    for key, value in {**settings, "dataset_name": "toy"}.items():
        workflow.parser[key] = value
    workflow.initialize()
    assert workflow.check_properties() == []


def test_training_curve_is_drawn_from_the_run_scalars(trained_bundle, tmp_path):
    """``scripts/training_curve.py`` (the README's picture) reads the epoch loss and validation accuracy."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("training_curve", BUNDLE.parents[1] / "scripts" / "training_curve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    scalars = module.read_scalars(trained_bundle / "runs" / "toy" / "tensorboard")
    assert [step for step, _ in scalars["train/epoch_loss"]] == [1, 2] and len(scalars["val_accuracy"]) == 2
    assert module.main([str(trained_bundle / "runs" / "toy"), str(tmp_path / "curve.png")]) == 0
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert module.main([str(tmp_path), str(tmp_path / "none.png")]) == 2  # no scalars: one sentence, status 2
