"""train.json reads like a model-zoo recipe: its handlers and preprocessing are listed in the config, each can be
turned off or changed on its own; ``create_trainer`` builds its trainer from this very config."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, run

from monai_cilmp.engines import TrainingRecipe, create_trainer, load_checkpoint
from monai_cilmp.transforms import PresetName, get_preset
from tests.bundle.test_cilmp_bundle import BUNDLE, CONFIGS, TINY, _tiny_dataset


def _parser(root, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    for key, value in {**TINY, "bundle_root": str(root), "dataset_name": "toy", **overrides}.items():
        parser[key] = value
    return parser


def _index(parser: ConfigParser, section: str, target: str) -> int:
    return [h["_target_"] for h in parser[f"{section}#handlers"]].index(target)


def _scalar_tags(log_dir) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in log_dir.glob("events.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


def test_listed_handlers_run_in_order_and_gpa_state_is_checkpointed(tmp_path):
    """The config's handler lists, once resolved (the ones that do not apply are off), start with the schedule and
    the validation; the trainer hands the listed GPA to the checkpoint (its state resumes)."""
    _tiny_dataset(tmp_path)
    parser = _parser(tmp_path, **{"train#trainer#max_epochs": 1})
    trainer = parser.get_parsed_content("train#trainer")
    names = [type(h).__name__ for h in parser.get_parsed_content("train#handlers")]
    assert names[:2] == ["LrScheduleHandler", "ValidationHandler"] and "GaussianPromptAggregation" in names
    assert trainer.evaluator is parser.get_parsed_content("validate#evaluator")
    assert trainer.checkpoint.gpa is not None


def test_create_trainer_builds_the_configs_trainer(tmp_path):
    """``create_trainer`` (compare, bench, notebooks) is train.json with the given network and loaders: a change
    of the config (here: one handler off) changes its trainer too."""
    from tests.engines.test_trainer import loaders, make_net

    train, val = loaders()
    recipe = TrainingRecipe(max_epochs=1, batch_size=4, warmup_epochs=0)
    trainer = create_trainer(make_net(), train, tmp_path / "run", recipe, val_loader=val, device="cpu", progress=False)
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    listed = [h["_target_"].rsplit(".", 1)[-1] for h in parser["train#handlers"]]
    attached = {type(h).__name__ for handlers in trainer._event_handlers.values() for h, *_ in handlers}
    attached |= {type(getattr(h, "__self__", None)).__name__ for hs in trainer._event_handlers.values() for h, *_ in hs}
    assert {"ValidationHandler", "GaussianPromptAggregation", "RunCheckpointSaver", "EpochSummary"} <= set(listed)
    assert trainer.evaluator is not None and trainer.checkpoint.gpa is not None
    assert "LossProgressBar" not in attached  # progress=False turns the listed bar off
    trainer.run()
    assert (tmp_path / "run" / "checkpoints" / "final.pt").is_file()


def test_a_handler_is_turned_off_from_the_command_line(tmp_path):
    """``--train#handlers#N#_disabled_ true`` removes one handler: here TensorBoard's train_loss curve, while the rest
    of the run (epoch curves of EpochSummary, validation metrics, checkpoints) is unchanged."""
    _tiny_dataset(tmp_path)
    parser = _parser(tmp_path)
    index = _index(parser, "train", "TensorBoardStatsHandler")
    runs = {}
    for name, extra in {"default": {}, "off": {f"train#handlers#{index}#_disabled_": True}}.items():
        out = tmp_path / "runs" / name
        run(
            run_id="run",
            init_id="initialize",
            config_file=[str(CONFIGS / "train.json")],
            logging_file=str(CONFIGS / "logging.conf"),
            bundle_root=str(tmp_path),
            dataset_name="toy",
            output_dir=str(out),
            **{**TINY, "train#trainer#max_epochs": 1},
            **extra,
        )
        runs[name] = out
    default, off = (_scalar_tags(runs[n] / "tensorboard") for n in ("default", "off"))
    assert "train_loss" in default and "train_loss" not in off
    assert default - {"train_loss"} == off and {"train/lr", "val_accuracy"} <= off
    first, second = (load_checkpoint(runs[n] / "checkpoints" / "final.pt")["network"] for n in ("default", "off"))
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_resume_through_the_config_is_bit_identical(tmp_path):
    """A run of ``train.json`` stopped after epoch 2 and continued with ``resume: true`` ends with the weights, best
    epoch and model file of the run that was never stopped."""
    from ignite.engine import Events

    _tiny_dataset(tmp_path)
    settings = {"train#trainer#max_epochs": 3, "recipe#gpa_std": 2.0}
    straight = _parser(tmp_path, output_dir=str(tmp_path / "straight"), **settings)
    straight.get_parsed_content("initialize")  # as `monai.bundle run` does: seeds before the prompts are drawn
    straight.get_parsed_content("train#trainer").run()
    stopped = _parser(tmp_path, output_dir=str(tmp_path / "stopped"), **settings)
    stopped.get_parsed_content("initialize")
    trainer = stopped.get_parsed_content("train#trainer")
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda engine: engine.terminate())
    trainer.run()
    assert not (tmp_path / "stopped" / "checkpoints" / "final.pt").exists()
    resumed = _parser(tmp_path, output_dir=str(tmp_path / "stopped"), resume=True, **settings)
    resumed.get_parsed_content("initialize")
    trainer, epochs = resumed.get_parsed_content("train#trainer"), []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda engine: epochs.append(engine.state.epoch))
    trainer.run()
    assert epochs == [3]  # continued, not started again
    for name in ("checkpoints/final.pt", "checkpoints/best.pt"):
        a, b = (load_checkpoint(tmp_path / run_name / name) for run_name in ("straight", "stopped"))
        assert a["best"] == b["best"] and set(a["network"]) == set(b["network"])
        assert all(torch.equal(a["network"][k], b["network"][k]) for k in a["network"])
    a, b = (torch.load(tmp_path / n / "models" / "model.pt", weights_only=True) for n in ("straight", "stopped"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_model_file_is_the_best_epochs_plain_trained_state(tmp_path):
    """``models/model.pt`` is what model-zoo tools load: a plain state dict (the trained parameters of the best
    validation epoch) that completes a network built from ``network_def`` with ``strict=False``."""
    _tiny_dataset(tmp_path)
    parser = _parser(tmp_path, **{"train#trainer#max_epochs": 2})
    parser.get_parsed_content("train#trainer").run()
    out = tmp_path / "runs" / "toy"
    state = torch.load(out / "models" / "model.pt", map_location="cpu", weights_only=True)
    best = load_checkpoint(out / "checkpoints" / "best.pt")
    assert set(state) == set(best["network"]) and all(torch.equal(state[k], best["network"][k]) for k in state)
    fresh = _parser(tmp_path).get_parsed_content("network_def")
    result = fresh.load_state_dict(state, strict=False)
    assert not result.unexpected_keys and set(fresh.trainable_state_dict()) == set(state)


def test_model_file_without_validation_is_the_final_state(tmp_path):
    _tiny_dataset(tmp_path)
    parser = _parser(tmp_path, **{"train#trainer#max_epochs": 1, "recipe#val_interval": 0})
    trainer = parser.get_parsed_content("train#trainer")
    assert trainer.evaluator is None and parser.get_parsed_content("validate#evaluator") is None
    trainer.run()
    out = tmp_path / "runs" / "toy"
    state = torch.load(out / "models" / "model.pt", map_location="cpu", weights_only=True)
    final = load_checkpoint(out / "checkpoints" / "final.pt")["network"]
    assert not (out / "checkpoints" / "best.pt").exists()
    assert all(torch.equal(state[k], final[k]) for k in final)


@pytest.mark.parametrize("section", ["train", "validate", "inference"])
@pytest.mark.parametrize("preset", [p.value for p in PresetName])
def test_listed_preprocessing_is_the_presets_pipeline(tmp_path, section, preset):
    """The per-stage lists of ``train#preprocessing`` / ``validate#preprocessing`` (and inference.json's
    ``preprocessing``) with the preset's overlay (``configs/presets/<preset>.json``), flattened, are the modality
    preset's pipeline: the same transforms in the same order, giving the same tensor for the same random state."""
    from monai.data import MetaTensor

    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    parser = ConfigParser()
    config = "inference.json" if section == "inference" else "train.json"
    parser.read_config([str(CONFIGS / config), str(CONFIGS / "presets" / f"{preset}.json")])
    parser.update({"preset": preset, "image_size": 32, "image_mean": mean, "image_std": std})
    listed = parser.get_parsed_content("preprocessing" if section == "inference" else f"{section}#preprocessing")
    listed = listed.flatten()
    build = get_preset(preset).train_transforms if section == "train" else get_preset(preset).eval_transforms
    expected = build(keys="image", image_size=32, mean=mean, std=std)
    assert [type(t) for t in listed.transforms] == [type(t) for t in expected.transforms]
    rng = np.random.default_rng(0)
    array = rng.random((1, 40, 52, 5) if preset in ("ct", "mri") else (3, 40, 52)).astype(np.float32) * 255
    outputs = []
    for pipeline in (listed, expected):
        loaded = type(pipeline)(pipeline.transforms[1:])  # the array given here is already loaded
        loaded.set_random_state(seed=3)
        outputs.append(loaded({"image": MetaTensor(array.copy())})["image"])
    assert outputs[0].shape == (3, 32, 32) and torch.equal(outputs[0].as_tensor(), outputs[1].as_tensor())


def test_bundle_readme_names_each_listed_handler_at_its_index():
    """The README's table of handlers (what to override) follows the config."""
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    readme = (BUNDLE / "docs" / "README.md").read_text()
    for section in ("train", "validate"):
        for index, handler in enumerate(parser[f"{section}#handlers"]):
            row = re.search(rf"\| `{section}#handlers#{index}` \| `([^`]+)`", readme)
            assert row is not None, f"{section}#handlers#{index} is not in the README"
            assert row.group(1) == handler["_target_"].rsplit(".", 1)[-1]


@pytest.mark.parametrize(
    "recipe",
    [
        TrainingRecipe(lr=0.05, max_epochs=5, warmup_epochs=2, warmup_lr=0.003, weight_decay=0.001, momentum=0.8),
        TrainingRecipe(lr=0.001, max_epochs=4, warmup_epochs=0, optimizer="AdamW", eps=1e-4, weight_decay=0.01),
    ],
)
def test_optimizer_and_schedule_are_the_recipes_listed_components(tmp_path, recipe):
    """``train#optimizer`` and ``train#lr_scheduler`` are components of the config built from ``recipe#<field>``: the
    optimiser the recipe names (over the trainable parameters only, with the recipe's hyper-parameters) and the
    constant warm-up then cosine of ``lr_factor``, epoch by epoch, exactly as ``build_optimizer``/``build_scheduler``
    give them; a change of one recipe field changes the run's optimiser."""
    from monai_cilmp.engines import build_optimizer, build_scheduler, lr_factor
    from tests.engines.test_trainer import loaders, make_net

    network = make_net()
    trainer = create_trainer(network, loaders()[0], tmp_path / "run", recipe, device="cpu", progress=False)
    optimizer, scheduler = trainer.optimizer, trainer.checkpoint.scheduler
    reference = build_optimizer(make_net(), recipe)
    reference_scheduler = build_scheduler(reference, recipe)
    assert (
        type(optimizer)
        is type(reference)
        is {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}[recipe.optimizer.lower()]
    )
    assert [p for group in optimizer.param_groups for p in group["params"]] == [
        p for p in network.parameters() if p.requires_grad
    ]
    expected = {k: v for k, v in reference.param_groups[0].items() if k != "params"}
    assert {k: v for k, v in optimizer.param_groups[0].items() if k != "params"} == expected
    for epoch in range(recipe.max_epochs):
        lr = optimizer.param_groups[0]["lr"]
        assert lr == reference.param_groups[0]["lr"] == recipe.lr * lr_factor(epoch, recipe), epoch
        for opt, sched in ((optimizer, scheduler), (reference, reference_scheduler)):
            opt.step()
            sched.step()


def test_an_optimizer_name_is_data_looked_up_in_a_table(tmp_path, monkeypatch):
    """``recipe#optimizer`` (``--set``, a method overlay, ``create_trainer``'s recipe) only chooses among the listed
    optimisers: another name, even one written like an expression, is one sentence naming the choices and runs no
    code."""
    from tests.engines.test_trainer import loaders, make_net

    monkeypatch.chdir(tmp_path)
    for attempt, name in enumerate(("lbfgs", "$__import__('os').mkdir('pwned')")):
        recipe = TrainingRecipe(max_epochs=1, optimizer=name)
        with pytest.raises(ValueError, match="recipe optimizer must be 'sgd' or 'adamw', got"):
            create_trainer(make_net(), loaders()[0], tmp_path / str(attempt), recipe, device="cpu", progress=False)
    assert not (tmp_path / "pwned").exists()


def test_inference_preprocessing_is_listed_and_checked_against_the_preset():
    """inference.json lists its preprocessing step by step (its preset's deterministic transforms, as validation
    does), so ``--set`` changes one step; a run of another modality without its preset overlay is one sentence that
    names the overlay, not images read as the wrong modality."""
    from monai.transforms import ScaleIntensityRanged

    def preprocessing(configs, **overrides):
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / c) for c in configs])
        parser.update({"image_size": 32, "image_mean": [0.5] * 3, "image_std": [0.2] * 3, **overrides})
        return parser.get_parsed_content("preprocessing").flatten().transforms

    steps = preprocessing(["inference.json"])
    scale = next(t for t in steps if isinstance(t, ScaleIntensityRanged))
    assert scale.scaler.a_max == 255.0
    changed = preprocessing(["inference.json"], **{"transforms#intensity#1#a_max": 4095.0})
    assert next(t for t in changed if isinstance(t, ScaleIntensityRanged)).scaler.a_max == 4095.0
    assert [type(t) for t in changed] == [type(t) for t in steps]
    with pytest.raises(RuntimeError) as info:  # MONAI's wrapper of the check's one sentence (the CLI shows the latter)
        preprocessing(["inference.json"], preset="ct")
    assert "add the overlay configs/presets/ct.json" in str(info.value.__cause__)
    assert preprocessing(["inference.json", "presets/ct.json"], preset="ct")
