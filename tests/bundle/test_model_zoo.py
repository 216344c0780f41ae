"""The bundle passes MONAI model-zoo's checks (``scripts/model_zoo_check.py``) once a run is packed into it.

The session's tiny run (CILMP-Tiny, random weights, 2 epochs; ``tests/bundle/conftest.py``) is packed into a copy
of ``bundles/cilmp`` with the documented command (``monai-cilmp export --run RUN --format bundle --out BUNDLE``); the
copy then goes through model-zoo's min and full checks the way its CI runs them, with MONAI's own calls.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from monai.bundle import run

from scripts.model_zoo_check import FULL_CHECKS, MIN_CHECKS, requirement_pins, run_checks
from tests.bundle.test_cilmp_bundle import BUNDLE, CONFIGS


@pytest.fixture(scope="module")
def packed(tiny_bundle_run):
    """``(run folder, bundle copy)``: the session's tiny run (``tests/bundle/conftest.py``, as trained) packed into
    ``models/cilmp`` as a model-zoo bundle."""
    from monai_cilmp.cli import main

    root, as_trained = tiny_bundle_run
    run_dir = root / "zoo" / "toy"  # parents[1] is the root, whose data/toy the run was trained on
    shutil.copytree(as_trained, run_dir)
    bundle = root / "models" / "cilmp"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("__pycache__"))
    assert main(["export", "--run", str(run_dir), "--format", "bundle", "--out", str(bundle)]) == 0
    return run_dir, bundle


def test_packed_bundle_passes_model_zoo_min_and_full_checks(packed):
    _, bundle = packed
    results = run_checks(bundle, "full")
    assert list(results) == list(FULL_CHECKS)
    failed = {name: message for name, (passed, message) in results.items() if not passed}
    assert failed == {}
    assert "models/model.pt" in results["layout"][1]  # listed in large_files.yml and verified by its hash


def test_packed_model_file_holds_the_trained_parameters_only(packed):
    from monai_cilmp.engines import load_run

    run_dir, bundle = packed
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    network = load_run(run_dir).build_network()
    assert set(state) == set(network.trainable_parameters())
    for name, value in network.trainable_state_dict().items():
        torch.testing.assert_close(state[name], value)
    assert (bundle / "models" / "model.pt").stat().st_size < 1024 * 1024


def test_packed_inference_config_predicts_like_the_run(packed, tmp_path):
    """``python -m monai.bundle run`` of the packed ``inference.json`` (no run folder) gives the run's probabilities."""
    import csv

    run_dir, bundle = packed
    images = run_dir.parents[1] / "data" / "toy" / "inference"
    outputs = {}
    for name, configs, settings in (
        ("bundle", [bundle / "configs" / "inference.json"], {"bundle_root": str(bundle)}),
        (
            "run",
            [CONFIGS / "inference.json", CONFIGS / "presets" / "dermoscopy.json", CONFIGS / "from_run.json"],
            {"output_dir": str(run_dir)},
        ),
    ):
        out = tmp_path / name
        run(
            run_id="run",
            config_file=[str(c) for c in configs],
            input_dir=str(images),
            output_file=str(out / "predictions.csv"),
            probabilities_file=str(out / "probabilities.csv"),
            device="cpu",
            **settings,
        )
        outputs[name] = list(csv.DictReader((out / "probabilities.csv").open()))
    assert len(outputs["bundle"]) == 3
    for ours, theirs in zip(outputs["bundle"], outputs["run"]):
        assert ours["predicted"] == theirs["predicted"]
        assert [float(v) for k, v in ours.items() if k.startswith("p(")] == pytest.approx(
            [float(v) for k, v in theirs.items() if k.startswith("p(")], abs=1e-5
        )


def test_packed_metadata_records_the_versions_that_ran(packed):
    import monai

    _, bundle = packed
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["pytorch_version"] == torch.__version__.split("+")[0] and meta["monai_version"] == monai.__version__
    assert "monai-cilmp" not in meta["required_packages_version"] and meta["monai_cilmp_version"]
    assert not any(pin.startswith("monai-cilmp") for pin in requirement_pins(meta))
    pred = meta["network_data_format"]["outputs"]["pred"]
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    assert [pred["channel_def"][str(i)] for i in range(pred["num_channels"])] == config["class_names"]


def test_template_bundle_is_consistent_and_fails_only_for_its_missing_model(tmp_path):
    """The bundle as committed: the min checks pass but for ``models/model.pt`` (and the CLIP weights) that a run
    provides; the template metadata describes the default ``inference.json`` network (ViT-B/16, Kvasir)."""
    import open_clip

    results = run_checks(BUNDLE, "min")
    assert list(results) == list(MIN_CHECKS)
    assert not results["layout"][0] and "models/ViT-B-16.pt" in results["layout"][1]
    assert all(passed for name, (passed, _) in results.items() if name != "layout"), results
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    config = json.loads((CONFIGS / "inference.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]["spatial_shape"]
    assert image == [open_clip.get_model_config(config["backbone"])["vision_cfg"]["image_size"]] * 2
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert [pred["channel_def"][str(i)] for i in range(pred["num_channels"])] == config["class_names"]


def test_checks_fail_on_what_model_zoo_rejects(packed, tmp_path):
    """An uninstallable pin, a large file not in large_files.yml, a JSON file not as pretty-format-json writes it,
    a model file that does not fit network_def: each check says so."""
    _, source = packed
    bundle = tmp_path / "cilmp"
    shutil.copytree(source, bundle)
    meta_file = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["required_packages_version"]["monai-cilmp"] = "0.1.0"
    meta_file.write_text(json.dumps(meta, indent=2) + "\n")
    (bundle / "docs" / "big.bin").write_bytes(b"\0" * (1025 * 1024))
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    state.pop("text_prompts")
    torch.save(state, bundle / "models" / "model.pt")
    results = run_checks(bundle, "full")
    assert "monai-cilmp==0.1.0" in results["requirements"][1] and not results["requirements"][0]
    assert "docs/big.bin" in results["precommit"][1] and "configs/metadata.json" in results["precommit"][1]
    assert not results["layout"][0] and "models/model.pt" in results["layout"][1]  # its hash no longer matches
    assert not results["torchscript"][0] and "text_prompts" in results["torchscript"][1]
