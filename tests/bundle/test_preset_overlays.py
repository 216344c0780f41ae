"""configs/presets/<preset>.json: the modality presets as listed transforms, each step changeable with --set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import ConfigWorkflow

from monai_cilmp.cli._bundle import config_settings, parse_bundle
from monai_cilmp.transforms import check_preset_transforms, list_presets
from scripts.write_preset_configs import dataset_overlays, preset_overlays, train_json_text

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "cilmp" / "configs"
SIZE = {"image_size": 32, "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3]}
#: the first spatial augmentation of the dermoscopy preset (a flip with probability 0.5)
STEP = "transforms#spatial_augmentation#0"


def test_overlays_are_written_from_the_presets():
    """One source of truth: every preset has its overlay, and each overlay (and train.json's default transforms) is
    what scripts/write_preset_configs.py writes from the preset table."""
    written = {p.name: p.read_text() for p in (CONFIGS / "presets").glob("*.json")}
    assert sorted(written) == sorted(f"{name}.json" for name in list_presets())
    assert written == preset_overlays(), "run python scripts/write_preset_configs.py"
    assert (CONFIGS / "train.json").read_text() == train_json_text(), "run python scripts/write_preset_configs.py"
    datasets = {p.name: p.read_text() for p in (CONFIGS / "datasets").glob("*.json")}
    assert datasets == dataset_overlays(), "run python scripts/write_preset_configs.py"


def _flip_probability(parser) -> list[float]:
    pipeline = parser.get_parsed_content("train#preprocessing").flatten()
    return [t.prob for t in pipeline.transforms if type(t).__name__ == "RandFlipd"]


def test_set_changes_one_augmentations_probability():
    """``monai-cilmp train --set transforms#spatial_augmentation#0#prob=0.25`` changes that step only."""
    from argparse import Namespace

    settings = config_settings(Namespace(set=[f"{STEP}#prob=0.25"]))
    parser = parse_bundle(["train.json"], {**SIZE, **settings})
    assert parser[STEP]["_target_"] == "RandFlipd"
    assert _flip_probability(parser) == [0.25, 0.5]
    assert _flip_probability(parse_bundle(["train.json"], SIZE)) == [0.5, 0.5]


def test_monai_bundle_run_option_changes_one_augmentations_probability():
    """``python -m monai.bundle run --transforms#spatial_augmentation#0#prob 0.25`` does the same (the workflow MONAI's
    ``run`` builds, with its ``--<id> value`` overrides)."""
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "presets" / "endoscopy.json")],
        workflow_type="train",
        **SIZE,
        **{f"{STEP}#prob": 0.25},
    )
    assert _flip_probability(workflow.parser) == [0.25, 0.5]


def test_a_run_refuses_transforms_of_another_preset():
    check_preset_transforms("dermoscopy", "dermoscopy")
    with pytest.raises(ValueError, match=r"configs/presets/ct\.json"):
        check_preset_transforms("ct", "dermoscopy")


def test_every_overlay_holds_only_the_transforms_section():
    for path in (CONFIGS / "presets").glob("*.json"):
        assert list(json.loads(path.read_text())) == ["transforms"], path.name
