"""Write the network keys of the CILMP bundle's method overlays, ``configs/methods/<method>.json``, from the registry.

A method's settings are declared once: the keyword defaults of its network class, with the registry's
:class:`~monai_cilmp.networks.nets.MethodSpec` ``kwargs`` on top (``MethodSpec.settings``).
This script writes, for every registered method, the overlay keys that follow from them:

- ``method``: the registry name;
- ``network_def``: the network's ``_target_``, the bundle's inputs (class names, backbone, knowledge bank, description
  prompts) and every setting with its value (``--set network_def#<setting> <value>`` changes one);
- ``network_hparams``: a reference to each setting of ``network_def`` (and to ``quick_gelu`` and the description
  prompts): what the run records to rebuild the network (``train#setup#metadata``);
- ``descriptions_file``: for methods built from class descriptions (``null``: the dataset's curated ones).

Every other key of an overlay (``recipe#*``, ``train#*``, ...) is kept as it is, so this script can be re-run after
anyone edits them. It also writes ``train.json``'s own network keys (its default method, :data:`DEFAULT_METHOD`) and
``inference.json``'s ``network_hparams`` (plain values: model-zoo export replaces them with a run's).
``tests/bundle/test_method_overlays.py`` fails when a file is out of step: run
``python scripts/write_method_configs.py`` after changing a network's keywords or the registry.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundles" / "cilmp" / "configs"
#: the method whose network train.json builds itself
DEFAULT_METHOD = "cilmp"
#: the keys of an overlay (and of train.json) this script owns
OWNED_KEYS = ("method", "descriptions_file", "network_def", "network_hparams")
#: the description prompts of a method built from class descriptions (its ``knowledge_text`` goes last)
PROMPTS_EXPRESSION = (
    "$monai_cilmp.networks.nets.knowledge_prompts(@datalist['class_names'], @descriptions_file, "
    "@dataset_name if @dataset_name in monai_cilmp.data.DATASETS else None, '{}')"
)


def network_keys(name: str) -> dict[str, Any]:
    """The keys of :data:`OWNED_KEYS` that method ``name``'s overlay holds, in that order."""
    from monai_cilmp.networks.nets import get_method

    spec = get_method(name)
    settings = spec.settings
    network_def: dict[str, Any] = {
        "_target_": f"monai_cilmp.networks.nets.{spec.network.__name__}",
        "class_names": "$@datalist['class_names']",
    }
    if spec.needs_knowledge:
        network_def["knowledge"] = "@knowledge_file"
    network_def.update({"backbone": "@backbone", "pretrained": "@pretrained", "offline": "@offline"})
    network_def["quick_gelu"] = None  # the backbone's activation from its weights' provenance (--quick-gelu sets it)
    recorded = ["quick_gelu"]
    if spec.uses_descriptions:
        network_def["prompts"] = PROMPTS_EXPRESSION.format(spec.knowledge_text)
        recorded.append("prompts")  # the texts themselves: a run rebuilds without the descriptions file
    network_def.update(settings)
    keys: dict[str, Any] = {"method": name}
    if spec.uses_descriptions:
        keys["descriptions_file"] = None
    keys["network_def"] = network_def
    keys["network_hparams"] = {k: f"@network_def#{k}" for k in [*recorded, *settings]}
    return keys


def _with_network_keys(config: dict[str, Any], name: str) -> dict[str, Any]:
    """``config`` with its owned keys replaced by method ``name``'s: those present keep their place, new ones follow
    the last owned key present (or go at the end), every other key stays as it is."""
    keys = network_keys(name)
    present = [k for k in config if k in OWNED_KEYS]
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key not in OWNED_KEYS:
            out[key] = value
            continue
        if key in keys:
            out[key] = keys[key]
        if key == present[-1]:
            out.update({k: v for k, v in keys.items() if k not in config})
    if not present:
        out.update(keys)
    return out


def _text(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=4) + "\n"


def method_overlays() -> dict[str, str]:
    """``{file name: JSON text}`` of every method overlay, its other keys read from the file as it is."""
    from monai_cilmp.networks.nets import list_methods

    texts = {}
    for name in list_methods():
        path = CONFIGS / "methods" / f"{name}.json"
        config = json.loads(path.read_text()) if path.is_file() else {}
        texts[path.name] = _text(_with_network_keys(config, name))
    return texts


def train_json_text() -> str:
    """train.json with its network keys set to :data:`DEFAULT_METHOD`'s."""
    return _text(_with_network_keys(json.loads((CONFIGS / "train.json").read_text()), DEFAULT_METHOD))


def inference_json_text() -> str:
    """inference.json with its ``network_hparams`` the plain settings of :data:`DEFAULT_METHOD`."""
    from monai_cilmp.networks.nets import get_method

    config = json.loads((CONFIGS / "inference.json").read_text())
    config["network_hparams"] = get_method(DEFAULT_METHOD).settings
    return _text(config)


def main() -> int:
    sys.path.insert(0, str(ROOT))
    folder = CONFIGS / "methods"
    folder.mkdir(exist_ok=True)
    overlays = method_overlays()
    for name, text in overlays.items():
        (folder / name).write_text(text)
    (CONFIGS / "train.json").write_text(train_json_text())
    (CONFIGS / "inference.json").write_text(inference_json_text())
    print(f"Wrote the network keys of {len(overlays)} method overlays in {folder}, train.json's and inference.json's.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
