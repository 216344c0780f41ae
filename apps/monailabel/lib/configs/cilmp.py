"""Which trained CILMP runs the app serves, and the MONAI Label task config of one of them.

A *run* is a folder with ``checkpoints/final.pt`` (written by ``monai-cilmp train --out RUN`` or by the CILMP bundle's
``train.json``, which writes ``<bundle_root>/runs/<dataset_name>/``). Models are named runs:

- every sub-folder of the runs folder (``--conf cilmp_runs DIR``, default ``<app>/model``) that is a run is a model
  named after the folder; a sub-folder that is a trained bundle (``runs/<dataset>/checkpoints/final.pt``) is one
  model named after the folder, or one per dataset (``<folder>_<dataset>``) when it holds several runs;
- ``--conf models a,b`` serves the named ones (``all``, the default, serves every run found); an entry may also be the
  path of a run or bundle folder anywhere, named after its last component.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from monailabel.interfaces.config import TaskConfig
from monailabel.utils.others.generic import strtobool

from ..infers.cilmp import CILMPClassification, CILMPSaliency

logger = logging.getLogger(__name__)

__all__ = ["CILMPConfig", "ModelSelectionError", "discover_runs", "resolve_run", "select_models"]


class ModelSelectionError(ValueError):
    """``--conf models`` names something that is not a trained run; the message says what is available."""


def _is_run(folder: Path, checkpoint: str) -> bool:
    return (folder / "checkpoints" / f"{checkpoint}.pt").is_file()


def resolve_run(folder: str | Path, checkpoint: str = "final") -> dict[str, Path]:
    """The runs in ``folder``: itself when it is a run, else the runs of a trained bundle (``runs/*``).

    Returns:
        ``{suffix: run folder}``: suffix ``""`` for the folder itself or a bundle's only run, else the dataset name.
    """
    folder = Path(folder).expanduser().resolve()
    if _is_run(folder, checkpoint):
        return {"": folder}
    runs = sorted(r for r in (folder / "runs").glob("*") if r.is_dir() and _is_run(r, checkpoint))
    if len(runs) == 1:
        return {"": runs[0]}
    return {r.name: r for r in runs}


def discover_runs(root: str | Path, checkpoint: str = "final") -> dict[str, Path]:
    """Models under ``root``: ``{name: run folder}`` for every run or trained bundle among its sub-folders."""
    root = Path(root).expanduser()
    found: dict[str, Path] = {}
    if not root.is_dir():
        return found
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for suffix, run in resolve_run(child, checkpoint).items():
            found[f"{child.name}_{suffix}" if suffix else child.name] = run
    return found


def select_models(conf: dict[str, str], app_dir: str | Path, checkpoint: str = "final") -> dict[str, Path]:
    """``{model name: run folder}`` chosen by ``conf["models"]`` among the runs of ``conf["cilmp_runs"]``.

    Raises:
        ModelSelectionError: nothing to serve, or a name that is neither a discovered run nor a run folder.
    """
    root = Path(conf.get("cilmp_runs") or Path(app_dir) / "model").expanduser().resolve()
    available = discover_runs(root, checkpoint)
    names = [n.strip() for n in str(conf.get("models", "all")).split(",") if n.strip()] or ["all"]
    listing = ", ".join(available) or "none"
    if names == ["all"]:
        if not available:
            raise ModelSelectionError(
                f"No trained CILMP runs (folders with checkpoints/{checkpoint}.pt) in '{root}': put runs there, "
                "or pass --conf cilmp_runs DIR or --conf models /path/to/run."
            )
        return available
    selected: dict[str, Path] = {}
    for name in names:
        if name in available:
            selected[name] = available[name]
            continue
        path = Path(name).expanduser()
        runs = resolve_run(path, checkpoint) if path.is_dir() else {}
        if not runs:
            raise ModelSelectionError(
                f"Model '{name}' is neither a run in '{root}' (available: {listing}) nor a run folder with "
                f"checkpoints/{checkpoint}.pt."
            )
        base = path.resolve().name
        selected.update({f"{base}_{s}" if s else base: r for s, r in runs.items()})
    return selected


class CILMPConfig(TaskConfig):
    """Task config of one served run: ``init(name, run_dir, conf, planner)`` then ``infer()``.

    ``conf`` keys used: ``checkpoint`` (``final``/``last``), ``preload`` (build the network at start-up).
    """

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        self.path = str(Path(model_dir) / "checkpoints" / f"{conf.get('checkpoint', 'final')}.pt")

    def infer(self) -> dict[str, CILMPClassification]:
        """The classifier ``<name>`` and its saliency map task ``<name>_saliency``."""
        checkpoint = self.conf.get("checkpoint", "final")
        task = CILMPClassification(
            self.model_dir, checkpoint=checkpoint, preload=bool(strtobool(self.conf.get("preload", "false")))
        )
        self.labels = task.class_names
        return {self.name: task, f"{self.name}_saliency": CILMPSaliency(self.model_dir, checkpoint=checkpoint)}

    def trainer(self) -> None:
        return None
