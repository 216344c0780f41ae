"""Write the CILMP bundle's preset overlays, ``configs/presets/<preset>.json``, from the modality presets.

The presets of :mod:`monai_cilmp.transforms.presets` are the one source of the per-modality transforms; each overlay
is :meth:`~monai_cilmp.transforms.Preset.transform_configs` of one preset (the ``transforms`` section of
``train.json``, whose own default is the dermoscopy one). The dataset overlays ``configs/datasets/<name>.json`` get
the ``transforms`` of their preset too, so that a dataset overlay alone gives a consistent run.
``tests/bundle/test_preset_overlays.py`` fails when an overlay is out of step: run
``python scripts/write_preset_configs.py`` after changing a preset.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundles" / "cilmp" / "configs"
#: the preset whose transforms train.json lists itself (a datalist without a preset gets it)
DEFAULT_PRESET = "dermoscopy"


def preset_overlays() -> dict[str, str]:
    """``{file name: JSON text}`` of every preset overlay."""
    from monai_cilmp.transforms import get_preset, list_presets

    return {
        f"{name}.json": json.dumps({"transforms": get_preset(name).transform_configs()}, indent=4) + "\n"
        for name in list_presets()
    }


def dataset_overlays() -> dict[str, str]:
    """``{file name: JSON text}`` of every dataset overlay, with the ``transforms`` of its preset."""
    from monai_cilmp.transforms import get_preset

    texts = {}
    for path in sorted((CONFIGS / "datasets").glob("*.json")):
        config = json.loads(path.read_text())
        config["transforms"] = get_preset(config["preset"]).transform_configs()
        texts[path.name] = json.dumps(config, indent=4) + "\n"
    return texts


def train_json_text() -> str:
    """train.json with its ``transforms`` section set to the default preset's."""
    from monai_cilmp.transforms import get_preset

    config = json.loads((CONFIGS / "train.json").read_text())
    config["transforms"] = get_preset(DEFAULT_PRESET).transform_configs()
    return json.dumps(config, indent=4) + "\n"


def main() -> int:
    sys.path.insert(0, str(ROOT))
    folder = CONFIGS / "presets"
    folder.mkdir(exist_ok=True)
    for name, text in preset_overlays().items():
        (folder / name).write_text(text)
    for name, text in dataset_overlays().items():
        (CONFIGS / "datasets" / name).write_text(text)
    (CONFIGS / "train.json").write_text(train_json_text())
    print(
        f"Wrote {len(preset_overlays())} preset overlays in {folder}, the dataset overlays' and train.json's "
        "transforms."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
