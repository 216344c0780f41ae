"""One cell of a comparison: a method trained on a K-shot subset drawn with a seed, then evaluated on the test split.

A comparison is a grid of :class:`Cell` (method x shots x seed). Each cell lives in its own folder
``<out>/cells/<method>/<K>shot/seed<s>/`` (``full/`` for the whole training split) holding the run's checkpoints,
the test metrics, predictions and confusion matrix of :func:`~monai_cilmp.engines.evaluate_split`, and last,
written atomically, :data:`CELL_FILE`: the record the results table is made of. A cell is done exactly when that
file exists, so an interrupted comparison resumes at the first cell without it.

Two protocols (:class:`Protocol`), as in CoOp, CoCoOp and BiomedCoOp:

- ``few-shot``: train on K images of every class, test on the whole test split;
- ``base-to-novel``: train on K images of each *base* class (the first ``ceil(C / 2)`` classes in label order,
  CoCoOp's and BiomedCoOp's split, :func:`~monai_cilmp.data.base_novel_split`), then test on the base classes'
  test images among the base classes, and on the novel classes' test images among the novel classes, with the
  network rebuilt for the novel class names and the trained parameters loaded into it. Only class-agnostic
  trained parameters transfer (prompt contexts, meta-networks, CILMP's interventions: CILMP reads each novel
  class's knowledge from the bank); a method whose trained parameters are per class (a linear probe's head,
  class-specific contexts) cannot score unseen classes: its novel accuracy is ``None`` ("n/a" in the report).
  Zero-shot methods score both halves without training. The harmonic mean ``2 b n / (b + n)`` summarises both.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.utils import StrEnum

from monai_cilmp.data import few_shot_datalist
from monai_cilmp.engines import (
    atomic_torch_save,
    cached_feature_loader,
    create_trainer,
    evaluate_split,
    load_checkpoint,
    reseed,
)
from monai_cilmp.engines.distributed import end_process_group, per_process_batch, rank_and_world_size
from monai_cilmp.knowledge import KnowledgeBank
from monai_cilmp.metrics import save_metrics
from monai_cilmp.networks.nets import build_method, extract_features, get_method, knowledge_prompts
from monai_cilmp.utils.files import read_json

__all__ = [
    "CELL_FILE",
    "FULL",
    "Cell",
    "CellContext",
    "Protocol",
    "backbone_label",
    "class_specific_parameters",
    "harmonic_mean",
    "parse_shots",
    "read_cell",
    "run_cell",
    "shots_label",
]


class Protocol(StrEnum):
    """What a comparison measures (see the module docstring)."""

    FEW_SHOT = "few-shot"
    BASE_TO_NOVEL = "base-to-novel"


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


def backbone_label(backbone: str, pretrained: str | None) -> str:
    """``"ViT-B-16 (openai)"``: the backbone column of a report (``random`` for untrained weights, the file name for a
    checkpoint file; a hub id or folder alone, since it carries its own weights)."""
    if backbone.startswith("hf-hub:") or Path(backbone).is_dir():
        return backbone
    weights = pretrained or "random"
    if os.sep in weights or "/" in weights:
        weights = Path(weights).name
    return f"{backbone} ({weights})"


def harmonic_mean(base: float | None, novel: float | None) -> float | None:
    """``2 b n / (b + n)`` (0 when both are 0); ``None`` when either is missing."""
    if base is None or novel is None:
        return None
    return 0.0 if base + novel == 0 else 2 * base * novel / (base + novel)


@dataclass(frozen=True)
class Cell:
    """One method trained on ``shots`` images per class (``0``: all) sampled with ``seed``, on ``backbone``.

    ``backbone`` (a :func:`backbone_label`) adds a folder level, so that one comparison folder holds the cells of
    several backbones; ``""`` leaves it out.
    """

    method: str
    shots: int
    seed: int
    backbone: str = ""

    def directory(self, out: str | os.PathLike) -> Path:
        """``<out>/cells/[<backbone>/]<method>/<K>shot/seed<s>`` (``full`` instead of ``<K>shot`` for the whole
        split; the backbone folder name keeps letters, digits, ``.``, ``_`` and ``-``)."""
        shots = "full" if self.shots == FULL else f"{self.shots}shot"
        root = Path(out) / "cells"
        if self.backbone:
            root = root / re.sub(r"[^A-Za-z0-9._-]+", "_", self.backbone).strip("_")
        return root / self.method / shots / f"seed{self.seed}"

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
        shot_recipes: per method, per shot count K (``"1"``, ``"16"``), recipe fields that replace those of
            ``method_recipes`` for the cells of that K (a benchmark's, e.g. CoOp's epochs per K).
        knowledge: the knowledge bank (for methods that need one) or ``None``.
        descriptions: class descriptions file for the methods that use them (``None``: the curated ones).
        dataset: registry name of the dataset (picks its curated descriptions), or ``None``.
        ordinal: the classes are ordered grades (quadratic kappa).
        device: where to run.
        num_workers: data loading processes.
        protocol: :class:`Protocol`.
        backbone_label: the backbone's :func:`backbone_label`, recorded in each cell.
        subset_loaders: for ``base-to-novel``: ``{"base": (datalist, loader), "novel": (datalist, loader)}``, each
            subset's datalist (relabelled ``0..n-1``) and a loader of its test split.
        sampler: the few-shot sampler (:class:`~monai_cilmp.data.FewShotSampler`); with ``"dassl"`` and
            base-to-novel the draw is over all classes, then the base ones are kept, as Dassl's code does.
        method_kwargs: per method, network keywords over the registry's (a benchmark's, :mod:`.benchmarks`).
        prompt_names: class name -> the name the text prompts read (a benchmark's spelling), for the methods
            without a knowledge bank.
        searches: per method, keywords of its ``search_alpha_beta`` run on the validation split after training
            (Tip-Adapter), or of its ``set_validation_features`` given before training (a linear probe's logistic
            fit searches C on them), when the datalist has a validation split; ``val_shots`` (a number, or
            ``"shots"`` for the cell's K) first reduces that split to at most so many images per class, drawn as the
            training images are.
    """

    datalist: Mapping[str, Any]
    backbone: Any
    test_loader: Any
    train_transforms: Any
    eval_transforms: Any
    recipe: Any
    method_recipes: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    shot_recipes: Mapping[str, Mapping[str, Mapping[str, Any]]] = dataclasses.field(default_factory=dict)
    knowledge: Any = None
    descriptions: str | None = None
    dataset: str | None = None
    ordinal: bool = False
    device: Any = None
    num_workers: int = 0
    protocol: str = Protocol.FEW_SHOT
    backbone_label: str = ""
    subset_loaders: Mapping[str, tuple[Mapping[str, Any], Any]] = dataclasses.field(default_factory=dict)
    sampler: str = "monai-cilmp"
    method_kwargs: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    prompt_names: Mapping[str, str] = dataclasses.field(default_factory=dict)
    searches: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    def build(self, method: str, class_names: Sequence[str]):
        """The network of ``method`` for ``class_names`` on the shared backbone (knowledge bank restricted to them)."""

        spec, kwargs = get_method(method), dict(self.method_kwargs.get(method, {}))
        if self.prompt_names and not spec.needs_knowledge:  # the benchmark's spelling of the class names
            if spec.uses_descriptions and "prompts" not in kwargs:
                texts = knowledge_prompts(list(class_names), self.descriptions, self.dataset, spec.knowledge_text)
                kwargs["prompts"] = {self.prompt_names.get(k, k): v for k, v in texts.items()}
            class_names = [self.prompt_names.get(n, n) for n in class_names]
        bank = self.knowledge
        if bank is not None and list(bank.class_names) != list(class_names):
            keep = {k: v for k, v in bank.metadata.items() if k not in ("class_names", "lengths", "dim")}
            bank = KnowledgeBank({name: bank[name] for name in class_names}, keep)
        return build_method(
            method,
            list(class_names),
            self.backbone,
            knowledge=bank,
            descriptions=self.descriptions,
            dataset=self.dataset,
            **kwargs,
        )

    def recipe_for(self, method: str, seed: int, shots: int | None = None):
        """The training recipe of ``method``: base, then the registry's overrides, then ``method_recipes``, then
        ``shot_recipes`` for ``shots`` images per class."""

        overrides = {**get_method(method).recipe_overrides, **self.method_recipes.get(method, {})}
        overrides.update(self.shot_recipes.get(method, {}).get(str(shots), {}))
        return dataclasses.replace(self.recipe, **overrides, seed=int(seed), val_interval=0)


def _loader(
    items: Sequence[Mapping[str, Any]], transform: Any, batch_size: int, shuffle: bool, workers: int, seed: int = 0
):
    """A loader of ``items``; a training loader (``shuffle``) of a multi-GPU cell gives this rank's share of each
    global batch of ``batch_size``."""
    from monai.data import CacheDataset, DataLoader, DistributedSampler

    # the deterministic head of the transforms (reading, resizing) is cached; random augmentation still runs
    dataset = CacheDataset(list(items), transform, progress=False)
    if shuffle and rank_and_world_size()[1] > 1:
        sampler = DistributedSampler(dataset, shuffle=True, seed=int(seed))
        return DataLoader(dataset, batch_size=per_process_batch(batch_size), sampler=sampler, num_workers=int(workers))
    return DataLoader(dataset, batch_size=int(batch_size), shuffle=shuffle, num_workers=int(workers))


def _scalars(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: metrics.get(k) for k in CELL_METRICS}


def class_specific_parameters(network: Any, other: Any) -> list[str]:
    """Trained parameters whose shapes differ between two builds of a method for different class counts: those
    are per class (a probe's head, class-specific contexts) and cannot score classes they were not trained on."""
    mine = {n: tuple(p.shape) for n, p in network.trainable_parameters().items()}
    theirs = {n: tuple(p.shape) for n, p in other.trainable_parameters().items()}
    return sorted(n for n in set(mine) | set(theirs) if mine.get(n) != theirs.get(n))


def _novel_network(cell: Cell, network: Any, context: CellContext) -> tuple[Any | None, str]:
    """The trained ``network`` rebuilt for the novel classes, or ``None`` and why it cannot be."""
    all_names = list(context.datalist["class_names"])
    specific = class_specific_parameters(network, context.build(cell.method, all_names))
    if specific:
        return None, f"per-class trained parameters ({', '.join(specific)}) cannot score unseen classes"
    novel_names = list(context.subset_loaders["novel"][0]["class_names"])
    novel = context.build(cell.method, novel_names)
    novel.load_trainable_state_dict(network.trainable_state_dict())
    return novel, "class-agnostic trained parameters loaded into the network rebuilt for the novel classes"


def _search_validation(
    cell: Cell, data: Mapping[str, Any], search: Mapping[str, Any], context: CellContext
) -> tuple[list[Mapping[str, Any]], dict[str, Any]]:
    """The validation items a search runs on (reduced to ``search["val_shots"]`` per class when given) and the
    search's other keywords."""

    search = dict(search)
    val_shots = search.pop("val_shots", None)
    items = list(data.get("validation") or [])
    if val_shots is not None and items and cell.shots != FULL:
        shots = cell.shots if val_shots == "shots" else min(int(val_shots), cell.shots)
        drawn = few_shot_datalist(data, cell.shots, cell.seed, val_shots=shots, sampler=context.sampler)
        items = list(drawn["validation"])
    return items, search


def _save_searched_state(network: Any, directory: Path) -> None:
    """Write the network as the search left it into the cell's final checkpoint: the trainer saved it before the
    search chose ``alpha``/``beta``, so a run rebuilt from the folder (``evaluate``, ``predict``) would otherwise
    not be the network this cell evaluated."""

    final = directory / "checkpoints" / "final.pt"
    if rank_and_world_size()[0] != 0 or not final.is_file():
        return
    state = load_checkpoint(final)
    state["network"] = {k: v.detach().cpu() for k, v in network.trainable_state_dict().items()}
    atomic_torch_save(state, final)


def _search_on_validation(
    network: Any, items: Sequence[Mapping[str, Any]], search: Mapping[str, Any], batch_size: int, context: CellContext
) -> dict[str, float]:
    """Tip-Adapter's alpha/beta search on the validation split's features (evaluation transforms), as the authors'
    code does; sets the network's ``alpha`` and ``beta`` and returns the chosen pair."""

    images = _loader(items, context.eval_transforms, batch_size, False, context.num_workers)
    features, labels = extract_features(network, images, device=context.device)
    device = next(iter(network.buffers())).device
    return network.search_alpha_beta(features.to(device), torch.as_tensor(labels).to(device), **search)


def run_cell(cell: Cell, out: str | os.PathLike, context: CellContext) -> dict[str, Any]:
    """Train ``cell.method`` on its K-shot subset through :func:`~monai_cilmp.engines.create_trainer`, evaluate it
    on the test split with :func:`~monai_cilmp.engines.evaluate_split`, and write the cell's record last.

    Methods that do not train (zero-shot) are only evaluated (training time 0); linear probes train on image
    features cached once with the evaluation transforms. Under ``base-to-novel`` the cell trains on the base
    classes and is evaluated on the base and the novel classes (module docstring); ``metrics`` are then the base
    ones and ``novel`` / ``harmonic_mean`` are ``None`` for a method that cannot score unseen classes.

    A multi-GPU cell (run by the ranks of a ``torch.distributed`` group: a multi-task job of
    :mod:`~monai_cilmp.compare.cluster`) trains with each rank on its share of every global batch of
    ``recipe.batch_size``; rank 0 then evaluates and writes the record (the other ranks return ``{}``).

    Returns:
        the cell record (also written to ``cell.record_path(out)``).
    """

    spec = get_method(cell.method)
    directory = cell.directory(out)
    b2n = context.protocol == Protocol.BASE_TO_NOVEL
    data = context.subset_loaders["base"][0] if b2n else context.datalist
    names = list(data["class_names"])
    recipe = context.recipe_for(spec.name, cell.seed, cell.shots)
    if cell.shots == FULL:
        training = [dict(item) for item in data["training"]]
    elif b2n and context.sampler == "dassl":  # Dassl draws over all classes, then keeps the base ones
        drawn = few_shot_datalist(context.datalist, cell.shots, cell.seed, sampler="dassl")["training"]
        training = [item for item in drawn if int(item["label"]) < len(names)]
    else:
        training = few_shot_datalist(data, cell.shots, cell.seed, sampler=context.sampler)["training"]

    reseed(cell.seed)  # the initial prompts / head depend on the seed only, not on the cells run before
    network = context.build(spec.name, names)
    n_params = network.num_trainable_parameters()
    train_seconds = 0.0
    extra_search: dict[str, float] | None = None
    # a method built from the training features (Tip-Adapter's cache) is fitted by the trainer, even with no parameters
    trained = spec.needs_training and (n_params > 0 or network.uses_training_features)
    search = context.searches.get(spec.name)
    search_items, search = _search_validation(cell, data, search, context) if search is not None else ([], None)
    if trained:
        start = time.perf_counter()
        if search_items and callable(getattr(network, "set_validation_features", None)):
            # a probe's logistic fit searches C on these (LP++'s loop keeps its best epoch) when the engine fits it

            images = _loader(search_items, context.eval_transforms, recipe.batch_size, False, context.num_workers)
            network.set_validation_features(*extract_features(network, images, device=context.device), **search)
        if spec.cached_features:
            images = _loader(training, context.eval_transforms, recipe.batch_size, False, context.num_workers)
            batch = per_process_batch(recipe.batch_size)
            train_loader = cached_feature_loader(network, images, batch, device=context.device, seed=cell.seed)
        else:
            workers = context.num_workers
            train_loader = _loader(training, context.train_transforms, recipe.batch_size, True, workers, cell.seed)
        metadata = {"method": spec.name, "class_names": names, "shots": cell.shots, "few_shot_seed": cell.seed}
        trainer = create_trainer(
            network, train_loader, directory, recipe, device=context.device, metadata=metadata, progress=False
        )
        trainer.run()
        if search_items and callable(getattr(network, "search_alpha_beta", None)):
            extra_search = _search_on_validation(network, search_items, search, recipe.batch_size, context)
            _save_searched_state(network, directory)
        train_seconds = time.perf_counter() - start
        n_params = network.num_trainable_parameters()  # a method may size its parameters from the training set
    rank, world_size = rank_and_world_size()
    if world_size > 1:  # a multi-GPU cell: every rank holds the trained network; rank 0 evaluates it on its own
        end_process_group()  # the evaluation's metrics must not wait for the other ranks
        if rank != 0:
            return {}
    start = time.perf_counter()
    loader = context.subset_loaders["base"][1] if b2n else context.test_loader
    evaluate = dict(ordinal=context.ordinal, device=context.device)
    split = "test_base" if b2n else "test"
    metrics = evaluate_split(network, loader, names, directory, items=data["test"], split=split, **evaluate)
    extra: dict[str, Any] = {"alpha_beta_search": extra_search} if extra_search else {}
    if getattr(network, "fit_summary", None):  # a fit of its own (a probe's C search, LP++'s loop), recorded
        extra["fit_summary"] = network.fit_summary
    if b2n:
        novel_data, novel_loader = context.subset_loaders["novel"]
        novel, how = _novel_network(cell, network, context)
        novel_metrics = None
        if novel is not None:
            novel_names = list(novel_data["class_names"])
            novel_metrics = _scalars(
                evaluate_split(
                    novel,
                    novel_loader,
                    novel_names,
                    directory,
                    items=novel_data["test"],
                    split="test_novel",
                    **evaluate,
                )
            )
        extra = {
            "base": _scalars(metrics),
            "novel": novel_metrics,
            "harmonic_mean": harmonic_mean(metrics["accuracy"], novel_metrics and novel_metrics["accuracy"]),
            "novel_classes": how,
            "base_class_names": names,
            "novel_class_names": list(novel_data["class_names"]),
        }
        del novel
    eval_seconds = time.perf_counter() - start
    record = {
        "method": spec.name,
        "shots": cell.shots,
        "seed": cell.seed,
        "backbone": context.backbone_label,
        "protocol": str(context.protocol),
        "metrics": _scalars(metrics),
        "warnings": list(metrics.get("warnings") or []),  # learning_warnings: a cell that learned nothing
        **extra,
        "trainable_parameters": int(n_params),
        "trained": trained,
        "train_seconds": round(train_seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "n_train": len(training) if trained else 0,
        "sampler": context.sampler,
        "train_images": [str(item["image"]) for item in training] if trained and cell.shots != FULL else None,
        "recipe": recipe.to_dict() if trained else None,
        "class_names": list(context.datalist["class_names"]),
    }
    del network
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    save_metrics(record, cell.record_path(out))  # last: the cell is done once this file exists
    return record
