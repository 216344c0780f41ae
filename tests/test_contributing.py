"""CONTRIBUTING.md's checklists hold for what is registered: every method, dataset and modality preset has the
pieces the checklist names (overlay, preparation, docs row)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monai_cilmp.data import DATASETS
from monai_cilmp.data.prepare import prepare_function
from monai_cilmp.networks import nets
from monai_cilmp.networks.nets import get_method, list_methods
from monai_cilmp.transforms import PRESETS, list_presets

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundles" / "cilmp" / "configs"


def _overlay(*parts: str) -> dict:
    path = CONFIGS.joinpath(*parts)
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing (CONTRIBUTING.md)"
    return json.loads(path.read_text())


def test_the_guides_exist_and_name_each_checklist():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    for heading in ("Adding a method", "Adding a dataset", "Adding a modality preset", "Adding a backbone family"):
        assert f"## {heading}" in text
    assert "## Layers" in (ROOT / "docs" / "architecture.md").read_text()


@pytest.mark.parametrize("method", list_methods())
def test_each_method_has_its_pieces(method):
    spec = get_method(method)
    assert getattr(nets, spec.network.__name__) is spec.network  # exported from networks.nets
    overlay = _overlay("methods", f"{method}.json")
    assert overlay["method"] == method
    assert overlay["network_def"]["_target_"] == f"monai_cilmp.networks.nets.{spec.network.__name__}"
    assert {f"recipe#{k}" for k in spec.recipe_overrides} <= set(overlay)
    assert ("train#dataset" in overlay) == spec.cached_features, "cached-feature methods set train#dataset"
    table = (ROOT / "docs" / "compare.md").read_text().split("\n## The methods\n", 1)[-1].split("\n#", 1)[0]
    assert f"\n| `{method}` | " in table, f"docs/compare.md's table of the methods has no row for `{method}`"


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_each_dataset_has_its_pieces(dataset):
    spec = DATASETS[dataset]
    overlay = _overlay("datasets", f"{dataset}.json")
    assert overlay["dataset_name"] == dataset and overlay["class_names"] == list(spec.class_names)
    assert overlay["preset"] == spec.preset and overlay["ordinal"] == spec.ordinal
    _overlay("presets", f"{spec.preset}.json")
    assert callable(prepare_function(dataset))
    assert dataset in (ROOT / "docs" / "data.md").read_text(), "docs/data.md lists every dataset"


@pytest.mark.parametrize("preset", list_presets())
def test_each_preset_has_its_pieces(preset):
    assert preset in PRESETS
    assert _overlay("presets", f"{preset}.json")["transforms"]["preset"] == preset
    assert preset in (ROOT / "docs" / "data.md").read_text(), "docs/data.md describes every preset"
