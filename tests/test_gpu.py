"""Everything a user runs, on the device: CUDA with mixed precision (bf16 autocast) where there is a GPU, the CPU here.

Each test takes the device as a parameter: the ``cpu`` cases run in the default test run (tiny and fast, so that the
code paths are exercised on every machine), the ``cuda`` cases skip without a GPU. On a machine with one, run them
all with ``scripts/gpu_check.sh`` (or ``pytest -m gpu tests/test_gpu.py``). They cover training with validation, GPA
and ``best.pt``, a bit-identical resume, evaluation, prediction, a comparison cell of every registered method (each
trains a step, linear probes on cached features), and the bundle's train, evaluate and inference configs.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from ignite.engine import Events

# cuBLAS is only deterministic with a fixed workspace, which must be set before its first use (resume test)
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

from monai_cilmp.engines import create_trainer, evaluate_split, load_checkpoint, predict  # noqa: E402
from tests.engines.test_trainer import loaders, make_net, recipe  # noqa: E402

DEVICES = [
    pytest.param("cpu", marks=pytest.mark.gpu),
    pytest.param(
        "cuda",
        marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")],
    ),
]

#: methods whose code paths differ (prompt learners, knowledge, regulariser, cached features, zero-shot); on CUDA
#: every registered method runs
CPU_METHODS = ["cilmp", "kgcoop", "linear-probe", "zero-shot-name"]


@pytest.fixture
def deterministic(request):
    """Deterministic kernels for the duration of a test (CUDA's atomics otherwise change the last bits)."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(before)


def _on(device: str, module: torch.nn.Module) -> bool:
    return all(p.device.type == torch.device(device).type for p in module.parameters())


@pytest.mark.parametrize("device", DEVICES)
def test_train_with_validation_gpa_and_best_checkpoint(device, tmp_path):
    train, val = loaders()
    net = make_net()
    trainer = create_trainer(net, train, tmp_path, recipe(max_epochs=3), val_loader=val, device=device, progress=False)
    assert trainer.amp == (device == "cuda")  # bf16 (or fp16) autocast on the GPU, fp32 on the CPU
    trainer.run()
    metrics = trainer.evaluator.state.metrics
    assert 0.0 <= metrics["val_accuracy"] <= 1.0 and np.isfinite(metrics["val_loss"])
    checkpoints = tmp_path / "checkpoints"
    final, best = load_checkpoint(checkpoints / "final.pt"), load_checkpoint(checkpoints / "best.pt")
    assert final["engine"]["epoch"] == 3 and final["gpa"]["epochs"] == 3
    assert 1 <= best["best"]["epoch"] <= 3 and best["best"]["metric"] == trainer.evaluator.state.best_metric
    assert all(t.device.type == "cpu" for t in final["network"].values())  # checkpoints load anywhere
    assert _on(device, net)


@pytest.mark.parametrize("device", DEVICES)
def test_fp16_autocast_trains_and_validates(device, tmp_path):
    train, val = loaders()
    trainer = create_trainer(
        make_net(), train, tmp_path, recipe(max_epochs=1), val_loader=val, device=device, amp="fp16", progress=False
    )
    trainer.run()
    assert np.isfinite(trainer.evaluator.state.metrics["val_loss"])


@pytest.mark.parametrize("amp", [None, "fp16"])
@pytest.mark.parametrize("device", DEVICES)
def test_resume_is_bit_identical(device, amp, tmp_path, deterministic):
    """Also under fp16 autocast, whose loss scale the checkpoint carries over (the CPU trains in fp32 either way)."""

    def trainer_for(network, run, **kwargs):
        train, val = loaders()
        return create_trainer(network, train, tmp_path / run, recipe(), val, device, amp, progress=False, **kwargs)

    straight = make_net()
    trainer_for(straight, "a").run()
    first = trainer_for(make_net(), "b")
    first.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda engine: engine.terminate())
    first.run()
    resumed = make_net()
    trainer_for(resumed, "b", resume=True).run()
    for name, value in straight.trainable_state_dict().items():
        torch.testing.assert_close(resumed.trainable_state_dict()[name], value, rtol=0, atol=0)
    a, b = (load_checkpoint(tmp_path / run / "checkpoints" / "best.pt")["best"] for run in ("a", "b"))
    assert a == b


@pytest.mark.parametrize("device", DEVICES)
def test_evaluate_and_predict(device, tmp_path):
    _, val = loaders()
    net = make_net().to(device)
    probs, labels = predict(net, val, device=device)
    assert isinstance(probs, np.ndarray) and probs.shape == (8, 2) and labels.tolist() == [0, 1] * 4
    assert probs.sum(axis=1) == pytest.approx(1.0, abs=1e-3)
    metrics = evaluate_split(net, val, ["bright", "dark"], tmp_path, split="val", device=device)
    assert metrics["n"] == 8 and json.loads((tmp_path / "val_metrics.json").read_text())["n"] == 8
    assert (tmp_path / "val_confusion.png").is_file() and (tmp_path / "val_predictions.csv").is_file()


@pytest.mark.parametrize("device", DEVICES)
def test_a_compare_cell_of_every_method(device, tiny_data, tmp_path):
    from monai_cilmp.compare import base_recipe, run_comparison
    from monai_cilmp.networks.nets import get_method, list_methods

    methods = list_methods() if device == "cuda" else CPU_METHODS
    torch.manual_seed(0)
    result = run_comparison(
        tiny_data["datalist"],
        methods,
        (2,),
        (1,),
        tmp_path,
        knowledge=tiny_data["knowledge"],
        descriptions=tiny_data["descriptions"],
        backbone="CILMP-Tiny",
        pretrained="none",
        offline=True,
        device=device,
        recipe=base_recipe(max_epochs=1, batch_size=4, lr=0.01, warmup_epochs=0, gpa_std=1.0),
        log=lambda line: None,
    )
    assert result["ran"] == len(methods)
    for record in result["records"]:
        assert 0.0 <= record["metrics"]["accuracy"] <= 1.0
        assert record["trained"] == get_method(record["method"]).needs_training


@pytest.fixture
def tiny_data(tmp_path_factory):
    from tests.compare.conftest import make_tiny_data

    return make_tiny_data(tmp_path_factory.mktemp("tiny_data"), per_class=8)


@pytest.mark.parametrize("device", DEVICES)
def test_bundle_train_evaluate_and_inference(device, tmp_path):
    import csv

    from monai.bundle import run

    from tests.bundle.test_cilmp_bundle import CONFIGS, TINY, _tiny_dataset

    _tiny_dataset(tmp_path)
    common = {"bundle_root": str(tmp_path), "dataset_name": "toy", "device": device}
    run(
        run_id="run",
        init_id="initialize",
        config_file=[str(CONFIGS / "train.json")],
        logging_file=str(CONFIGS / "logging.conf"),
        **common,
        **{**TINY, "train#trainer#max_epochs": 1},
    )
    out = tmp_path / "runs" / "toy"
    assert (out / "checkpoints" / "final.pt").is_file() and (out / "checkpoints" / "best.pt").is_file()
    run(
        run_id="run",
        init_id="initialize",
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")],
        **common,
        **TINY,
    )
    assert json.loads((out / "test_metrics.json").read_text())["n"] == 4
    run(
        run_id="run",
        init_id="initialize",
        config_file=[str(CONFIGS / c) for c in ("inference.json", "presets/dermoscopy.json", "from_run.json")],
        **common,
    )
    rows = list(csv.DictReader((out / "probabilities.csv").open()))
    assert len(rows) == 3 and all(
        abs(sum(float(v) for k, v in r.items() if k.startswith("p(")) - 1) < 1e-4 for r in rows
    )
    monai_rows = list(csv.reader((out / "predictions.csv").open()))  # MONAI's format: file, class index; no header
    assert len(monai_rows) == 3 and all(int(float(r[1])) in (0, 1) for r in monai_rows)


@pytest.mark.parametrize("device", DEVICES)
def test_bundle_lists_handlers_that_run_on_the_device(device, tmp_path):
    """The trainer and evaluator train.json declares (not create_trainer's) autocast on the GPU, validate there and
    write the best epoch's model file."""
    from tests.bundle.test_cilmp_bundle import _tiny_dataset
    from tests.bundle.test_train_config import _parser

    _tiny_dataset(tmp_path)
    parser = _parser(tmp_path, device=device, **{"train#trainer#max_epochs": 2})
    parser.get_parsed_content("initialize")
    trainer = parser.get_parsed_content("train#trainer")
    assert trainer.amp == trainer.evaluator.amp == (device == "cuda")
    assert _on(device, parser.get_parsed_content("network"))
    trainer.run()
    metrics = trainer.evaluator.state.metrics
    assert 0.0 <= metrics["val_accuracy"] <= 1.0 and np.isfinite(metrics["val_loss"])
    state = torch.load(tmp_path / "runs" / "toy" / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert state and all(torch.isfinite(v).all() for v in state.values())


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpus_train_what_one_gpu_trains(tmp_path):
    """torchrun on 2 GPUs (NCCL, fp32) against 1 GPU, global batch 4: CILMP and the methods fitted from features."""
    import subprocess
    import sys
    from pathlib import Path

    worker = Path(__file__).parent / "engines" / "distributed_worker.py"
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "DISTRIBUTED_TEST_DEVICE": "cuda",
        "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    states = {}
    for nproc in (1, 2):
        out = tmp_path / f"gpus{nproc}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", str(worker)]
        result = subprocess.run([*cmd, "equivalence", str(out)], capture_output=True, text=True, timeout=900, env=env)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        states[nproc] = {m: torch.load(out / f"{m}.pt", weights_only=False) for m in ("cilmp", "lp++", "linear-probe")}
    for method, one in states[1].items():
        two = states[2][method]
        difference = max(
            float(((one["state"][k] - two["state"][k]).abs() / one["state"][k].abs().clamp(min=1.0)).max())
            for k in one["state"]
        )
        print(f"{method}: max |1 GPU - 2 GPUs| / max(1, |value|) = {difference:.2e}")
        assert difference <= 1e-4  # GPU kernels (cuDNN's TF32 convolutions included) round differently per batch
