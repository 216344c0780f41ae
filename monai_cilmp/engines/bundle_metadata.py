"""A run's own MONAI bundle metadata: the bundle's ``metadata.json`` completed with what the run actually used.

The bundle's ``configs/metadata.json`` is a template: its versions are those of the release and its network format
that of one dataset. When a run starts, :func:`write_run_metadata` writes ``<run>/configs/metadata.json`` from it with

- the versions of MONAI, PyTorch, NumPy and every package of ``required_packages_version`` that are installed (the
  ones that run, read from the packages themselves: PyTorch's local build tag such as ``+cu130`` is dropped, as
  model-zoo's ``get_bundle_requirements.py`` pins ``torch==<pytorch_version>``), and ``monai_cilmp_version``: this
  package is not on a public index, so it is recorded beside ``required_packages_version``, not in it (a pin there
  would make model-zoo's requirements file uninstallable; see the bundle README, "MONAI model-zoo"),
- ``network_data_format`` of the run's network: the image size of its backbone, one output channel per class (its
  ``channel_def`` maps each channel to the run's class name, as model-zoo classification bundles do), ``logits`` (the
  network returns scaled cosine logits; the probabilities are their softmax),
- ``label_classes`` / ``pred_classes`` from the class names,
- ``speed_levers``: the device type the run trained on and the speed levers whose default depends on it (CILMP's
  shared prompt start runs once only where it pays, on CUDA: :func:`run_speed_levers`), so that a run can be
  reproduced with the same arithmetic elsewhere (CILMP's ``shared_prefix``).

:func:`record_eval_metrics` adds a split's metrics (``eval_metrics``) after ``evaluate``. The file verifies with
``python -m monai.bundle verify_metadata`` and ``verify_net_in_out`` (see the bundle README).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import torch

import monai_cilmp
from monai_cilmp.utils.bundle import bundle_config
from monai_cilmp.utils.files import write_json

__all__ = [
    "EVAL_METRICS",
    "RUN_METADATA",
    "bundle_metadata",
    "bundle_template",
    "network_data_format",
    "record_eval_metrics",
    "run_speed_levers",
    "write_run_metadata",
]

#: where a run keeps its bundle metadata, relative to the run folder
RUN_METADATA = Path("configs") / "metadata.json"
#: the scalar metrics of ``<split>_metrics.json`` recorded as ``eval_metrics`` (``<split>_<name>``)
EVAL_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "kappa")


def bundle_template() -> dict[str, Any]:
    """The CILMP bundle's ``configs/metadata.json`` (of the wheel or of the source checkout)."""
    return json.loads(Path(bundle_config("metadata.json")).read_text(encoding="utf-8"))


def _version(distribution: str) -> str | None:
    try:
        return importlib_metadata.version(distribution)
    except importlib_metadata.PackageNotFoundError:
        return None


def _source_version() -> str:
    """The version of this package when it runs from a source checkout that is not installed."""

    return str(getattr(monai_cilmp, "__version__", "unknown"))


def network_data_format(
    class_names: Sequence[str], image_size: int, output: str = "logits", template: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``network_data_format`` of a classifier of ``class_names`` on ``image_size`` square RGB images.

    Args:
        class_names: the run's classes, in output order.
        image_size: the side of the backbone's input.
        output: ``"logits"`` (the network) or ``"probabilities"`` (an export with the softmax).
        template: the bundle's ``network_data_format`` whose other fields are kept.
    """
    fmt = copy.deepcopy(dict(template or {}))
    image = dict(fmt.get("inputs", {}).get("image", {}))
    image.update(
        {
            "type": "image",
            "format": image.get("format", "magnitude"),
            "modality": image.get("modality", "n/a"),
            "num_channels": 3,
            "spatial_shape": [int(image_size), int(image_size)],
            "dtype": "float32",
            "value_range": image.get("value_range", []),
            "is_patch_data": False,
            "channel_def": {"0": "R", "1": "G", "2": "B"},
        }
    )
    pred = {
        "type": output,
        "format": "classes",
        "num_channels": len(class_names),
        "spatial_shape": [1],
        "dtype": "float32",
        "value_range": [0, 1] if output == "probabilities" else [],
        "is_patch_data": False,
        "channel_def": {str(i): str(name) for i, name in enumerate(class_names)},  # the names MONAI Label shows
    }
    return {"inputs": {"image": image}, "outputs": {"pred": pred}}


def bundle_metadata(
    class_names: Sequence[str],
    image_size: int,
    output: str = "logits",
    template: Mapping[str, Any] | None = None,
    data_source: str | None = None,
) -> dict[str, Any]:
    """The bundle metadata of a run: ``template`` (default: the bundle's) with the installed versions and the network's
    format (see :func:`network_data_format`).

    Args:
        class_names: the run's classes, in output order.
        image_size: the side of the backbone's input.
        output: ``"logits"`` or ``"probabilities"``.
        template: the metadata to complete (default :func:`bundle_template`).
        data_source: what the run was trained on (default: the template's).
    """
    import monai
    import numpy
    import torch

    meta = copy.deepcopy(dict(template if template is not None else bundle_template()))
    meta["monai_version"] = monai.__version__
    meta["pytorch_version"] = str(torch.__version__).split("+")[0]
    meta["numpy_version"] = numpy.__version__
    meta["monai_cilmp_version"] = _version("monai-cilmp") or _source_version()
    packages = {name: _version(name) for name in meta.get("required_packages_version", {})}
    meta["required_packages_version"] = {name: v for name, v in packages.items() if v is not None}
    meta["network_data_format"] = network_data_format(class_names, image_size, output, meta.get("network_data_format"))
    classes = ", ".join(f"{i}: {name}" for i, name in enumerate(class_names))
    meta["label_classes"] = f"one integer label per image, {classes}"
    meta["pred_classes"] = f"{len(class_names)} {output} in the order {classes}"
    if data_source:
        meta["data_source"] = data_source
    meta.setdefault("eval_metrics", {})
    return meta


def write_run_metadata(run_dir: str | os.PathLike, network: Any, settings: Mapping[str, Any]) -> Path:
    """Write ``<run_dir>/configs/metadata.json`` for ``network`` trained with ``settings`` (the run's ``run.json``).

    Args:
        run_dir: the run folder.
        network: the classifier (``class_names``, ``image_size``).
        settings: the run's settings; ``dataset_name`` and ``datalist`` name the data source.
    """
    source = settings.get("dataset_name")
    if settings.get("datalist"):
        source = f"{source or 'datalist'}: {settings['datalist']}"
    meta = bundle_metadata(list(network.class_names), int(network.image_size), data_source=source)
    meta["speed_levers"] = run_speed_levers(network)
    return write_json(Path(run_dir) / RUN_METADATA, meta)


def run_speed_levers(network: Any) -> dict[str, Any]:
    """The device type ``network`` runs on and the speed levers that follow it: ``shared_prefix``, whether CILMP's
    shared prompt start runs once there (``uses_shared_prefix``; absent for networks without it)."""
    tensor = next(iter(network.parameters()), None)
    device = tensor.device if tensor is not None else torch.device("cpu")
    levers: dict[str, Any] = {"device": device.type}
    if callable(getattr(network, "uses_shared_prefix", None)):
        levers["shared_prefix"] = bool(network.uses_shared_prefix(device))
    return levers


def record_eval_metrics(run_dir: str | os.PathLike, split: str, metrics: Mapping[str, Any]) -> Path | None:
    """Add ``split``'s scalar metrics to the run's metadata as ``eval_metrics["<split>_<name>"]`` (``None``: the run
    has no metadata, e.g. one trained before runs wrote it)."""
    path = Path(run_dir) / RUN_METADATA
    if not path.is_file():
        return None
    meta = json.loads(path.read_text(encoding="utf-8"))
    scores = meta.get("eval_metrics") if isinstance(meta.get("eval_metrics"), dict) else {}
    for name in EVAL_METRICS:
        value = metrics.get(name)
        if isinstance(value, (int, float)) and value == value:  # NaN (e.g. AUC of one class) is left out
            scores[f"{split}_{name}"] = float(value)
    if isinstance(metrics.get("n"), int):
        scores[f"{split}_n"] = metrics["n"]
    meta["eval_metrics"] = scores
    return write_json(path, meta)
