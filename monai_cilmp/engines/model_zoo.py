"""The bundle as MONAI model-zoo ships it: ``models/model.pt`` loaded by ``network_def`` from the configs alone.

A model-zoo bundle holds no run folder: ``inference.json`` names the method, the classes, the backbone and its
weights (``models/ViT-B-16.pt`` by default, downloaded through ``large_files.yml``), the knowledge bank
(``models/knowledge.safetensors``) and the hyper-parameters; ``network_def`` builds the network from them, and
``models/model.pt`` holds the trained parameters only (a plain state dict of tensors), which
:class:`~monai_cilmp.engines.ExportNetwork`'s ``load_state_dict`` and :func:`load_trained_state` load.

:func:`pack_run` turns a trained run (``monai-cilmp train`` or ``monai-cilmp demo``) into such a bundle: it writes
``models/model.pt``, copies the knowledge bank (and the backbone weights when they are a local file), sets those
values in ``configs/inference.json``, writes the run's own ``configs/metadata.json`` (the versions that ran, its
classes, its image size) and ``large_files.yml`` with the SHA-256 of every file too large to commit. The command is
``monai-cilmp export --run RUN --format bundle --out BUNDLE`` (see the bundle README, "MONAI model-zoo").
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_cilmp.engines.bundle_metadata import RUN_METADATA, bundle_metadata
from monai_cilmp.engines.checkpoint import atomic_torch_save
from monai_cilmp.engines.runs import KNOWLEDGE_COPY, file_sha256, load_run
from monai_cilmp.transforms import get_preset
from monai_cilmp.utils.config import config_literal
from monai_cilmp.utils.files import atomic_write, write_json

__all__ = [
    "LARGE_FILES",
    "MODEL_FILE",
    "MODEL_ZOO_MAX_KB",
    "ModelZooError",
    "load_trained_state",
    "pack_run",
    "trained_state_file",
]

#: the model-zoo weights file, relative to the bundle
MODEL_FILE = Path("models") / "model.pt"
#: the knowledge bank the bundle's ``inference.json`` reads
KNOWLEDGE_FILE = Path("models") / "knowledge.safetensors"
#: model-zoo's list of files downloaded instead of committed
LARGE_FILES = "large_files.yml"
#: model-zoo's pre-commit ``check-added-large-files --maxkb=1024``: larger files go to ``large_files.yml``
MODEL_ZOO_MAX_KB = 1024
#: the backbone whose weights file the bundle downloads itself (``large_files.yml``: ``models/ViT-B-16.pt``)
OPENAI_CLIP = ("ViT-B-16", "openai")
#: file names ``pack_run`` writes into ``inference.json`` expressions (anything else is refused)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ModelZooError(ValueError):
    """A run cannot be packed as a model-zoo bundle; the message says why and what to do."""


def trained_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The trained parameters stored in ``path``: ``models/model.pt`` (a plain state dict of tensors) or a run
    checkpoint (its ``network`` entry).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: it holds no state dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Model file '{path}' does not exist: produce it with `monai-cilmp export --run RUN --format bundle --out "
            "BUNDLE` or download it as the bundle's large_files.yml says."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"'{path}' is not a readable model file ({e}); it may be from another tool.") from e
    if isinstance(state, dict) and isinstance(state.get("network"), dict):
        state = state["network"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"'{path}' holds no state dict of tensors: it is not a monai-cilmp model file.")
    return state


def load_trained_state(network: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load the trained parameters of ``path`` (see :func:`trained_state_file`) into ``network`` and return it.

    The frozen towers come from the backbone weights the network was built with; the load is strict on the trained
    parameters (names and shapes; the network's message names what differs).
    """
    network.load_trainable_state_dict(trained_state_file(path))
    return network


def _bundle_path_expression(name: str) -> str:
    if not _SAFE_NAME.match(name):
        raise ModelZooError(
            f"Cannot name '{name}' in inference.json: rename the file to letters, digits, '.', '_' and '-' only."
        )
    return _bundle_path(f"models/{name}")


def _plain_or_literal(value: Any) -> Any:
    """``value`` as written in a config: plain when MONAI's parser reads it back unchanged, else a literal."""

    def plain(v: Any) -> bool:
        if isinstance(v, str):
            return not v.startswith(("$", "@", "%"))
        if isinstance(v, list):
            return all(plain(x) for x in v)
        if isinstance(v, dict):
            return all(isinstance(k, str) and "#" not in k and plain(x) for k, x in v.items())
        return v is None or isinstance(v, (bool, int, float))

    return value if plain(value) else config_literal(value)


def _copy(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
    return target


def pack_run(
    run_dir: str | os.PathLike,
    bundle_dir: str | os.PathLike,
    checkpoint: str = "final",
    url_prefix: str | None = None,
) -> dict[str, Any]:
    """Write a trained run into the model-zoo bundle ``bundle_dir`` (a copy of ``bundles/cilmp``).

    Args:
        run_dir: the run folder.
        bundle_dir: the bundle folder (``configs/inference.json`` and ``configs/metadata.json`` are rewritten).
        checkpoint: which checkpoint of the run (``final``, ``best``, ``last``).
        url_prefix: where the large files will be uploaded (``<url_prefix>/<file name>`` in ``large_files.yml``);
            without it their ``url`` says to fill it in (model-zoo's CI verifies a present file by its hash).

    Returns:
        what was written: ``model_file``, ``inference``, ``metadata``, ``large_files`` and the ``sizes_kb`` of the
        files under ``models/``.

    Raises:
        ModelZooError: the run's backbone is not an open_clip model name, or a file name cannot be written.
    """

    trained = load_run(run_dir, checkpoint)
    meta = trained.metadata
    bundle = Path(bundle_dir)
    inference_file = bundle / "configs" / "inference.json"
    if not inference_file.is_file():
        raise ModelZooError(
            f"'{bundle}' has no configs/inference.json: give a copy of the CILMP bundle (bundles/cilmp)."
        )
    backbone = str(meta["backbone"])
    if Path(backbone).is_dir() or backbone.startswith("hf-hub:"):
        raise ModelZooError(
            f"The run's backbone '{backbone}' is a folder or a Hugging Face id: a model-zoo bundle names an open_clip "
            "model and downloads its weights file through large_files.yml; train on an open_clip model name."
        )
    state = trained_state_file(trained.checkpoint)
    model_file = atomic_torch_save(state, bundle / MODEL_FILE)
    knowledge = trained.directory / KNOWLEDGE_COPY
    if not knowledge.is_file():
        knowledge = Path(meta["knowledge"])
    _copy(knowledge, bundle / KNOWLEDGE_FILE)
    large = [bundle / MODEL_FILE, bundle / KNOWLEDGE_FILE]

    pretrained: str = str(meta.get("pretrained") or "none")
    weights = meta.get("pretrained_file") or (pretrained if Path(pretrained).is_file() else None)
    if weights:  # a local weights file (e.g. the demo's): shipped with the bundle
        name = Path(weights).name
        pretrained = _bundle_path_expression(name)
        large.append(_copy(Path(weights), bundle / "models" / name))

    config = json.loads(inference_file.read_text(encoding="utf-8"))
    large_files = bundle / LARGE_FILES
    listed = _read_large_files(large_files)
    values = {
        "method": meta.get("method") or "cilmp",
        "class_names": trained.class_names,
        "preset": meta["preset"],
        "backbone": backbone,
        "network_hparams": dict(meta["network"]),
    }
    config.update({k: _plain_or_literal(v) for k, v in values.items()})
    # the preset's listed transforms, as its overlay has them (the name is looked up among the presets)
    preset_overlay = bundle / "configs" / "presets" / f"{get_preset(meta['preset']).name}.json"
    config["transforms"] = json.loads(preset_overlay.read_text(encoding="utf-8"))["transforms"]
    if weights:
        config["pretrained"] = pretrained
    elif (backbone, pretrained) != OPENAI_CLIP:  # else the bundle's own download (large_files.yml) is those weights
        config["pretrained"] = _plain_or_literal(pretrained)
    config["knowledge_file"] = _bundle_path_expression(KNOWLEDGE_FILE.name)
    write_json(inference_file, config, indent=4)

    run_meta = trained.directory / RUN_METADATA
    template = json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
    if run_meta.is_file():  # the versions that ran the training, the run's classes and image size
        recorded = json.loads(run_meta.read_text(encoding="utf-8"))
        metadata = {**template, **{k: v for k, v in recorded.items() if k not in ("version", "changelog")}}
        packages = dict(metadata.get("required_packages_version") or {})
        if "monai-cilmp" in packages:  # a run of an older bundle: not on a public index, recorded beside the pins
            metadata.setdefault("monai_cilmp_version", packages.pop("monai-cilmp"))
        metadata["required_packages_version"] = packages
    else:
        network = trained.build_network(load_weights=False)
        metadata = bundle_metadata(trained.class_names, network.image_size, template=template)
    write_json(bundle / "configs" / "metadata.json", metadata, indent=4)

    written = {p.relative_to(bundle).as_posix() for p in large}
    entries = [  # the downloads the configs still read (the CLIP weights of the default backbone)
        e for e in listed if e.get("path") not in written and config.get("pretrained") == _bundle_path(e.get("path"))
    ]
    for path in large:
        relative = path.relative_to(bundle).as_posix()
        url = f"{url_prefix.rstrip('/')}/{path.name}" if url_prefix else f"upload {relative} and give its URL here"
        entries.append({"path": relative, "url": url, "hash_val": _sha256(path), "hash_type": "sha256"})
    for entry in entries:
        entry.setdefault("hash_type", "")
        entry.setdefault("hash_val", "")
    atomic_write(large_files, lambda tmp: Path(tmp).write_text(_large_files_yaml(entries), encoding="utf-8"))
    for path in (*large, inference_file, bundle / "configs" / "metadata.json", large_files):
        _readable(path)
    return {
        "model_file": str(model_file),
        "inference": str(inference_file),
        "metadata": str(bundle / "configs" / "metadata.json"),
        "large_files": str(large_files),
        "sizes_kb": {p.relative_to(bundle).as_posix(): round(p.stat().st_size / 1024, 1) for p in large},
    }


def _readable(path: Path) -> None:
    """Give a written file the permissions the umask gives new files (atomic writes create them private), as the
    files of a bundle that is shared and zipped should have."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def _bundle_path(relative: Any) -> str:
    return f"$@bundle_root + '/{relative}'"


def _read_large_files(path: Path) -> list[dict[str, Any]]:
    """The entries of a bundle's ``large_files.yml`` (none when it has no such file)."""
    import yaml

    if not path.is_file():
        return []
    try:
        entries = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("large_files") or []
    except (yaml.YAMLError, AttributeError) as e:
        raise ModelZooError(f"'{path}' is not model-zoo's large_files format ({e}): restore the bundle's own.") from e
    return [e for e in entries if isinstance(e, dict)]


def _sha256(path: Path) -> str:

    return file_sha256(path)


def _large_files_yaml(entries: list[Mapping[str, str]]) -> str:
    """model-zoo's ``large_files.yml`` (every value JSON-quoted, which YAML reads as the same string)."""
    lines = [
        "# files of this bundle too large to commit (model-zoo's CI downloads them, or checks a present one by hash)",
        "large_files:",
    ]
    for entry in entries:
        for i, key in enumerate(("path", "url", "hash_val", "hash_type")):
            lines.append(f"{'- ' if i == 0 else '  '}{key}: {json.dumps(entry[key])}")
    return "\n".join(lines) + "\n"
