"""configs/methods/<method>.json: every registered method runs with monai.bundle and evaluates with the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import ConfigParser, run

from monai_cilmp.cli import main
from monai_cilmp.engines import load_checkpoint
from monai_cilmp.networks.nets import get_method, list_methods
from scripts.write_method_configs import inference_json_text, method_overlays, train_json_text
from tests.compare.conftest import CLASSES, make_tiny_data

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "cilmp" / "configs"
METHODS = CONFIGS / "methods"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("overlay_data"))


def overrides(tiny_data, out):
    return {
        "datalist_file": tiny_data["datalist"],
        "knowledge_file": tiny_data["knowledge"],
        "output_dir": str(out),
        "backbone": "CILMP-Tiny",
        "pretrained": "none",
        "offline": True,
        "num_workers": 0,
        "device": "$torch.device('cpu')",
        "recipe#batch_size": 4,
        "recipe#max_epochs": 1,
        "recipe#warmup_epochs": 0,
    }


def parser_for(method, tiny_data, out):
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(METHODS / f"{method}.json")])
    parser.update(overrides(tiny_data, out))
    return parser


def test_method_overlays_are_in_step_with_the_registry():
    """The network keys of every overlay (and train.json's, inference.json's) are what
    scripts/write_method_configs.py writes from the registry; the recipe keys are the registry's overrides."""
    assert sorted(p.stem for p in METHODS.glob("*.json")) == sorted(list_methods())
    written = {p.name: p.read_text() for p in METHODS.glob("*.json")}
    assert written == method_overlays(), "run python scripts/write_method_configs.py"
    assert (CONFIGS / "train.json").read_text() == train_json_text(), "run python scripts/write_method_configs.py"
    assert (CONFIGS / "inference.json").read_text() == inference_json_text(), "run the same script"
    for name in list_methods():
        spec = get_method(name)
        overlay = json.loads((METHODS / f"{name}.json").read_text())
        assert overlay["network_def"]["_target_"] == f"monai_cilmp.networks.nets.{spec.network.__name__}"
        for key, value in spec.kwargs.items():
            assert overlay["network_def"][key] == value, (name, key)
        for key, value in get_method(name).recipe_overrides.items():
            assert overlay[f"recipe#{key}"] == value, (name, key)


def test_generator_owns_only_the_network_keys(tmp_path, monkeypatch):
    """Another key of an overlay (a recipe value, a loader) survives the generator, in its place; a stale network
    key is replaced."""
    import scripts.write_method_configs as writer

    (tmp_path / "methods").mkdir()
    overlay = {"method": "coop", "recipe#lr": 0.5, "network_def": {"n_ctx": 3}, "train#dataset": {"x": 1}}
    (tmp_path / "methods" / "coop.json").write_text(json.dumps(overlay))
    monkeypatch.setattr(writer, "CONFIGS", tmp_path)
    written = json.loads(writer.method_overlays()["coop.json"])
    assert list(written) == ["method", "recipe#lr", "network_def", "network_hparams", "train#dataset"]
    assert written["recipe#lr"] == 0.5 and written["train#dataset"] == {"x": 1}
    assert written["network_def"]["n_ctx"] == 16 and written["network_hparams"]["n_ctx"] == "@network_def#n_ctx"


def test_settings_are_every_keyword_of_the_network():
    """A method's recorded settings are all its network's keywords but the inputs and speed switches, so a run
    records everything that rebuilds its network; a registry kwarg the network lacks is refused."""
    import inspect

    from monai_cilmp.networks.nets import NETWORK_INPUTS, SPEED_SWITCHES, MethodSpec

    spec = get_method("tip-adapter-f")
    keywords = inspect.signature(spec.network.__init__).parameters
    expected = {k for k, p in keywords.items() if p.kind is p.KEYWORD_ONLY} - NETWORK_INPUTS - SPEED_SWITCHES
    assert set(spec.settings) == expected and spec.settings["fine_tune"] is True
    json.dumps(spec.settings)
    with pytest.raises(ValueError, match="has no keyword"):
        _ = MethodSpec("bad", spec.network, "bad", {"n_ctx": 4}).settings


@pytest.mark.parametrize("method", list_methods())
def test_overlay_instantiates_its_network_and_metadata(method, tiny_data, tmp_path):
    parser = parser_for(method, tiny_data, tmp_path)
    network = parser.get_parsed_content("network")
    spec = get_method(method)
    assert type(network) is spec.network and network.class_names == CLASSES
    meta = parser.get_parsed_content("train#setup#metadata")
    assert meta["method"] == method and meta["class_names"] == CLASSES
    assert set(meta["network"]) == set(parser["network_hparams"])
    json.dumps(meta)  # a checkpoint's metadata must be plain data


@pytest.mark.parametrize("method", ["coop", "zero-shot-attributes", "linear-probe", "tip-adapter", "prograd"])
def test_bundle_run_then_cli_evaluate(method, tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    run(
        run_id="run",
        init_id="initialize",
        config_file=[str(CONFIGS / "train.json"), str(METHODS / f"{method}.json")],
        bundle_root=str(tmp_path),
        **overrides(tiny_data, out),
    )
    final = load_checkpoint(out / "checkpoints" / "final.pt")
    assert final["metadata"]["method"] == method
    assert (final["network"] == {}) == (not get_method(method).needs_training)
    assert main(["evaluate", "--run", str(out)]) == 0
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert metrics["n"] == 6 and 0 <= metrics["accuracy"] <= 1


@pytest.mark.parametrize("method", ["linear-probe", "tip-adapter-f"])
def test_a_feature_cached_overlay_trains_what_create_trainer_trains_on_cached_features(method, tiny_data, tmp_path):
    """The overlay's ``train#dataset`` (``training_feature_dataset``, shuffled by the bundle's loader) and the Python
    path (``cached_feature_loader`` with the recipe's seed, ``create_trainer``) train the same head, bit for bit, with
    a seed other than the default: both reshuffle every epoch from the recipe's seed."""
    import torch
    from monai.data import DataLoader, Dataset

    from monai_cilmp.engines import cached_feature_loader, create_trainer, reseed

    settings = {"recipe#max_epochs": 2, "recipe#seed": 3, "recipe#val_interval": 0}
    configs = [str(CONFIGS / "train.json"), str(METHODS / f"{method}.json")]
    bundle = {**overrides(tiny_data, tmp_path / "bundle"), **settings}
    run(run_id="run", init_id="initialize", config_file=configs, bundle_root=str(tmp_path), **bundle)
    parser = ConfigParser()
    parser.read_config(configs)
    parser.update({**overrides(tiny_data, tmp_path / "python"), **settings})
    reseed(3)  # the bundle's startup#determinism
    network, recipe = parser.get_parsed_content("network"), parser.get_parsed_content("recipe")
    items = Dataset(
        parser.get_parsed_content("datalist")["training"], parser.get_parsed_content("validate#preprocessing")
    )
    loader = cached_feature_loader(network, DataLoader(items, batch_size=4), batch_size=4, seed=recipe.seed)
    create_trainer(network, loader, tmp_path / "python", recipe, device="cpu", progress=False).run()
    trained = [load_checkpoint(tmp_path / run / "checkpoints" / "final.pt")["network"] for run in ("bundle", "python")]
    assert set(trained[0]) == set(trained[1]) and trained[0]
    for key, value in trained[0].items():
        assert torch.equal(value, trained[1][key]), key
