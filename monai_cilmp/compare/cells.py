"""One cell of a comparison: a method trained on a K-shot subset drawn with a seed, then evaluated on the test split.

A comparison is a grid of :class:`Cell` (method x shots x seed). Each cell lives in its own folder
``<out>/cells/<method>/<K>shot/seed<s>/`` (``full/`` for the whole training split) holding the run's checkpoints,
the test metrics, predictions and confusion matrix of :func:`~monai_cilmp.engines.evaluate_split`, and last,
written atomically, :data:`CELL_FILE`: the record the results table is made of. A cell is done exactly when that
file exists, so an interrupted comparison resumes at the first cell without it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from monai_cilmp.utils.files import read_json

__all__ = ["CELL_FILE", "FULL", "Cell", "CellContext", "parse_shots", "read_cell", "run_cell", "shots_label"]

CELL_FILE = "metrics.json"
"""The record of a finished cell (written last)."""

FULL = 0
"""``shots`` value of the whole training split (``"all"`` on the command line)."""

#: the scalar metrics a cell record keeps from :func:`~monai_cilmp.metrics.classification_metrics`
CELL_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "kappa", "n")


def parse_shots(values: Sequence[int | str]) -> list[int]:
    """Shot settings from the command line: positive integers, and ``"all"`` or ``0`` for the full training split.

    Raises:
        ValueError: a negative or unreadable value.
    """
    out: list[int] = []
    for value in values:
        text = str(value).strip().lower()
        if text in ("all", "full"):
            shots = FULL
        else:
            try:
                shots = int(text)
            except ValueError:
                raise ValueError(f"Shots must be positive integers or 'all', got '{value}'.") from None
            if shots < 0:
                raise ValueError(f"Shots must be positive integers or 'all', got {shots}.")
        if shots not in out:
            out.append(shots)
    if not out:
        raise ValueError("Give at least one shot setting.")
    return out


def shots_label(shots: int) -> str:
    """``"4-shot"`` or ``"full"``, for tables and logs."""
    return "full" if shots == FULL else f"{shots}-shot"


@dataclass(frozen=True)
class Cell:
    """One method trained on ``shots`` images per class (``0``: all) sampled with ``seed``."""

    method: str
    shots: int
    seed: int

    def directory(self, out: str | os.PathLike) -> Path:
        """``<out>/cells/<method>/<K>shot/seed<s>`` (``full`` instead of ``<K>shot`` for the whole split)."""
        shots = "full" if self.shots == FULL else f"{self.shots}shot"
        return Path(out) / "cells" / self.method / shots / f"seed{self.seed}"

    def record_path(self, out: str | os.PathLike) -> Path:
        return self.directory(out) / CELL_FILE

    def __str__(self) -> str:
        return f"{self.method} {shots_label(self.shots)} seed {self.seed}"


def read_cell(path: str | os.PathLike) -> dict[str, Any]:
    """A finished cell's record."""
    return read_json(path, "Cell record")


@dataclass
class CellContext:
    """What every cell of one comparison shares (built once: backbone, knowledge bank, test data).

    Attributes:
        datalist: the full datalist (``class_names``, splits).
        backbone: the loaded :class:`~monai_cilmp.networks.backbones.Backbone` every network is built on.
        test_loader: evaluation batches of the test split (evaluation transforms; cached).
        train_transforms: the training transforms (random augmentation).
        eval_transforms: the evaluation transforms (for the cached features of linear probes).
        recipe: the base :class:`~monai_cilmp.engines.TrainingRecipe` (each method's overrides go on top).
        method_recipes: per method, recipe fields that replace those of the base and of the registry.
        knowledge: the knowledge bank (for methods that need one) or ``None``.
        descriptions: class descriptions file for the methods that use them (``None``: the curated ones).
        dataset: registry name of the dataset (picks its curated descriptions), or ``None``.
        ordinal: the classes are ordered grades (quadratic kappa).
        device: where to run.
        num_workers: data loading processes.
    """

    datalist: Mapping[str, Any]
    backbone: Any
    test_loader: Any
    train_transforms: Any
    eval_transforms: Any
    recipe: Any
    method_recipes: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    knowledge: Any = None
    descriptions: str | None = None
    dataset: str | None = None
    ordinal: bool = False
    device: Any = None
    num_workers: int = 0

    def recipe_for(self, method: str, seed: int):
        """The training recipe of ``method``: base, then the registry's overrides, then ``method_recipes``."""
        from monai_cilmp.networks.nets import get_method

        overrides = {**get_method(method).recipe_overrides, **self.method_recipes.get(method, {})}
        return dataclasses.replace(self.recipe, **overrides, seed=int(seed), val_interval=0)


def _loader(items: Sequence[Mapping[str, Any]], transform: Any, batch_size: int, shuffle: bool, workers: int):
    from monai.data import CacheDataset, DataLoader

    # the deterministic head of the transforms (reading, resizing) is cached; random augmentation still runs
    dataset = CacheDataset(list(items), transform, progress=False)
    return DataLoader(dataset, batch_size=int(batch_size), shuffle=shuffle, num_workers=int(workers))


def run_cell(cell: Cell, out: str | os.PathLike, context: CellContext) -> dict[str, Any]:
    """Train ``cell.method`` on its K-shot subset through :func:`~monai_cilmp.engines.create_trainer`, evaluate it
    on the test split with :func:`~monai_cilmp.engines.evaluate_split`, and write the cell's record last.

    Methods that do not train (zero-shot) are only evaluated (training time 0); linear probes train on image
    features cached once with the evaluation transforms.

    Returns:
        the cell record (also written to ``cell.record_path(out)``).
    """
    from monai_cilmp.data import few_shot_datalist
    from monai_cilmp.engines import cached_feature_loader, create_trainer, evaluate_split, reseed
    from monai_cilmp.metrics import save_metrics
    from monai_cilmp.networks.nets import build_method, get_method

    spec = get_method(cell.method)
    directory = cell.directory(out)
    names = list(context.datalist["class_names"])
    recipe = context.recipe_for(spec.name, cell.seed)
    if cell.shots == FULL:
        training = [dict(item) for item in context.datalist["training"]]
    else:
        training = few_shot_datalist(context.datalist, cell.shots, cell.seed)["training"]

    reseed(cell.seed)  # the initial prompts / head depend on the seed only, not on the cells run before
    network = build_method(
        spec.name,
        names,
        context.backbone,
        knowledge=context.knowledge,
        descriptions=context.descriptions,
        dataset=context.dataset,
    )
    n_params = network.num_trainable_parameters()
    train_seconds = 0.0
    # a method built from the training features (Tip-Adapter's cache) is fitted by the trainer, even with no parameters
    trained = spec.needs_training and (n_params > 0 or network.uses_training_features)
    if trained:
        start = time.perf_counter()
        if spec.cached_features:
            images = _loader(training, context.eval_transforms, recipe.batch_size, False, context.num_workers)
            train_loader = cached_feature_loader(network, images, recipe.batch_size, device=context.device)
        else:
            train_loader = _loader(training, context.train_transforms, recipe.batch_size, True, context.num_workers)
        metadata = {"method": spec.name, "class_names": names, "shots": cell.shots, "few_shot_seed": cell.seed}
        trainer = create_trainer(
            network, train_loader, directory, recipe, device=context.device, metadata=metadata, progress=False
        )
        trainer.run()
        train_seconds = time.perf_counter() - start
        n_params = network.num_trainable_parameters()  # a method may size its parameters from the training set
    start = time.perf_counter()
    test_items = context.datalist["test"]
    metrics = evaluate_split(
        network, context.test_loader, names, directory, items=test_items, ordinal=context.ordinal, device=context.device
    )
    eval_seconds = time.perf_counter() - start
    record = {
        "method": spec.name,
        "shots": cell.shots,
        "seed": cell.seed,
        "metrics": {k: metrics.get(k) for k in CELL_METRICS},
        "trainable_parameters": int(n_params),
        "trained": trained,
        "train_seconds": round(train_seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "n_train": len(training) if trained else 0,
        "recipe": recipe.to_dict() if trained else None,
        "class_names": names,
    }
    del network
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    save_metrics(record, cell.record_path(out))  # last: the cell is done once this file exists
    return record
