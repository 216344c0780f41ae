"""Running a comparison: every method x shots x seed through the same engine, data splits and test set, resumably.

:func:`run_comparison` checks everything first (methods, knowledge, shots against the class sizes), prints the
plan, then runs the cells that have no record yet (:func:`~monai_cilmp.compare.cells.run_cell`) and writes the
report (:func:`~monai_cilmp.compare.report.write_report`). The settings that change results are kept in
``<out>/comparison.json``; resuming into a folder made with other settings is refused rather than mixing them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_cilmp.utils.files import read_json, write_json

from .cells import CELL_FILE, FULL, Cell, CellContext, parse_shots, read_cell, run_cell, shots_label
from .report import write_report

__all__ = ["SETTINGS_FILE", "base_recipe", "plan_cells", "run_comparison"]

SETTINGS_FILE = "comparison.json"


def plan_cells(methods: Sequence[str], shots: Sequence[int], seeds: Sequence[int]) -> list[Cell]:
    """The grid, method by method (so a method's results are complete early)."""
    return [Cell(m, k, int(s)) for m in methods for k in shots for s in seeds]


def _check_shots(datalist: Mapping[str, Any], shots: Sequence[int]) -> None:
    counts = [sum(int(i["label"]) == c for i in datalist["training"]) for c in range(len(datalist["class_names"]))]
    too_many = [k for k in shots if k != FULL and k > min(counts)]
    if too_many:
        smallest = datalist["class_names"][counts.index(min(counts))]
        raise ValueError(
            f"Class '{smallest}' has only {min(counts)} training images, fewer than the {max(too_many)} shots asked "
            "for: lower --shots or use 'all'."
        )


def _check_settings(out: Path, settings: Mapping[str, Any]) -> None:
    path = out / SETTINGS_FILE
    if path.is_file():
        before = read_json(path, "Comparison settings")
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed and any((out / "cells").glob(f"*/*/*/{CELL_FILE}")):
            raise ValueError(
                f"'{out}' holds a comparison made with other settings ({', '.join(changed)} differ): give another "
                "--out, or the same settings to resume it."
            )
    write_json(path, settings)


def run_comparison(
    datalist: str | os.PathLike,
    methods: Sequence[str],
    shots: Sequence[int | str],
    seeds: Sequence[int],
    out: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    dataset: str | None = None,
    knowledge: str | os.PathLike | None = None,
    descriptions: str | os.PathLike | None = None,
    backbone: str = "ViT-B-16",
    pretrained: str | None = "openai",
    offline: bool = False,
    quick_gelu: bool | None = None,
    recipe: Any = None,
    method_recipes: Mapping[str, Mapping[str, Any]] | None = None,
    preset: str | None = None,
    ordinal: bool = False,
    device: Any = None,
    num_workers: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Compare ``methods`` over ``shots`` x ``seeds`` on one datalist; resume what a previous run left.

    Args:
        datalist: the datalist (its training split is sub-sampled per cell, its test split evaluates every cell).
        methods: registered method names (:func:`~monai_cilmp.networks.nets.list_methods`).
        shots: images per class; ``"all"`` or ``0`` for the whole training split.
        seeds: few-shot sampling and training seeds.
        out: the comparison folder.
        class_names: class names when the datalist has none.
        dataset: registry name of the dataset (class names, preset, curated descriptions).
        knowledge: knowledge bank file, for the methods that need one (CILMP).
        descriptions: class descriptions or attribute-prompt file for the methods that use them (default: curated).
        backbone: open_clip model name, ``hf-hub:`` id or local folder.
        pretrained: pretrained tag or checkpoint file (``None`` / ``"none"``: random weights).
        offline: never download backbone weights.
        quick_gelu: the backbone's QuickGELU activation on or off (``None``: from the weights' provenance).
        recipe: the base :class:`~monai_cilmp.engines.TrainingRecipe` (epochs, batch size, lr, ...); each method's
            registry overrides go on top (:attr:`~monai_cilmp.networks.nets.MethodSpec.recipe_overrides`).
        method_recipes: per method, recipe fields that win over everything else (e.g. a linear probe's lr).
        preset: modality preset (default: the dataset's, else the datalist's, else dermoscopy).
        ordinal: ordered classes (quadratic kappa).
        device: where to run (default: GPU if any).
        num_workers: data loading processes.
        log: where progress lines go.

    Returns:
        ``{"records": [...], "files": {"markdown", "csv", "plot"}, "ran": n, "skipped": n}``.

    Raises:
        ValueError: unknown methods, a method that needs a knowledge bank without one, more shots than a class has,
            or a folder holding a comparison with other settings.
    """
    from monai_cilmp.data import get_dataset, load_datalist
    from monai_cilmp.engines import TrainingRecipe, default_device
    from monai_cilmp.networks import load_backbone
    from monai_cilmp.networks.nets import get_method

    out = Path(out).expanduser().resolve()
    specs = [get_method(m) for m in dict.fromkeys(methods)]
    methods = [s.name for s in specs]
    shot_list = sorted(parse_shots(shots), key=lambda k: (k == FULL, k))
    seed_list = list(dict.fromkeys(int(s) for s in seeds))
    if not seed_list:
        raise ValueError("Give at least one seed.")
    if dataset:
        ds = get_dataset(dataset)
        class_names = class_names or list(ds.class_names)
        preset, ordinal, dataset = preset or ds.preset, ordinal or ds.ordinal, ds.name
    data = load_datalist(datalist, class_names)
    names = list(data["class_names"])
    _check_shots(data, shot_list)
    needing = [s.name for s in specs if s.needs_knowledge]
    bank = None
    if needing:
        if knowledge is None:
            raise ValueError(f"{', '.join(needing)} need a knowledge bank: pass --knowledge (monai-cilmp knowledge).")
        from monai_cilmp.knowledge import KnowledgeBank

        bank = KnowledgeBank.load(knowledge)
        bank.check_classes(names)
    recipe = recipe or TrainingRecipe()
    method_recipes = {k: dict(v) for k, v in (method_recipes or {}).items()}
    pretrained = None if pretrained in (None, "", "none") else str(pretrained)
    settings = {
        "datalist": str(Path(datalist).resolve()),
        "class_names": names,
        "backbone": backbone,
        "pretrained": pretrained,
        **({} if quick_gelu is None else {"quick_gelu": bool(quick_gelu)}),
        "knowledge": str(Path(knowledge).resolve()) if knowledge else None,
        "descriptions": str(Path(descriptions).resolve()) if descriptions else None,
        "dataset": dataset,
        "recipe": {k: v for k, v in recipe.to_dict().items() if k not in ("seed", "val_interval")},
        "method_recipes": method_recipes,
    }
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings)

    cells = plan_cells(methods, shot_list, seed_list)
    done = [c for c in cells if c.record_path(out).is_file()]
    log(
        f"Comparing {len(methods)} methods x {len(shot_list)} shot settings ({', '.join(map(shots_label, shot_list))})"
        f" x {len(seed_list)} seeds = {len(cells)} cells on {len(names)} classes into {out}"
    )
    if done:
        log(f"{len(done)} cells are done already (their {done[0].record_path(out).name} exists): they are skipped.")
    log(f"{len(cells) - len(done)} cells to run; methods: {', '.join(methods)}; backbone {backbone} ({pretrained}).")

    records: dict[Cell, dict[str, Any]] = {c: read_cell(c.record_path(out)) for c in done}
    to_run = [c for c in cells if c not in records]
    if to_run:
        from monai_cilmp.transforms import get_preset

        preset = preset or data.get("preset") or "dermoscopy"
        loaded = load_backbone(backbone, pretrained, offline=offline, quick_gelu=quick_gelu)
        size, mean, std = loaded.image_size, tuple(loaded.mean), tuple(loaded.std)
        kwargs = {"keys": "image", "image_size": size, "mean": mean, "std": std}
        eval_transforms = get_preset(preset).eval_transforms(**kwargs)
        from monai.data import CacheDataset, DataLoader

        test = CacheDataset(list(data["test"]), eval_transforms, progress=False)
        context = CellContext(
            datalist=data,
            backbone=loaded,
            test_loader=DataLoader(test, batch_size=recipe.batch_size, shuffle=False, num_workers=num_workers),
            train_transforms=get_preset(preset).train_transforms(**kwargs),
            eval_transforms=eval_transforms,
            recipe=recipe,
            method_recipes=method_recipes,
            knowledge=bank,
            descriptions=str(descriptions) if descriptions else None,
            dataset=dataset,
            ordinal=ordinal,
            device=device if device is not None else default_device(),
            num_workers=num_workers,
        )
    for i, cell in enumerate(cells, 1):
        prefix = f"[{i}/{len(cells)}] {cell}:"
        if cell in records:
            log(f"{prefix} done already, skipped ({cell.record_path(out)})")
            continue
        spec = get_method(cell.method)
        shared = next((r for c, r in records.items() if c.method == cell.method), None)
        if not spec.needs_training and shared is not None:
            # a zero-shot result depends on neither shots nor seed: evaluated once, recorded for every cell
            record = {
                **shared,
                "shots": cell.shots,
                "seed": cell.seed,
                "same_as": f"{shared['shots']}/{shared['seed']}",
            }
            write_json(cell.record_path(out), record)
            records[cell] = record
            log(f"{prefix} zero-shot, same as its first cell: accuracy {100 * record['metrics']['accuracy']:.1f} %")
            continue
        what = "evaluating (no training)" if not spec.needs_training else "training and evaluating"
        log(f"{prefix} {what} ...")
        record = run_cell(cell, out, context)
        records[cell] = record
        log(
            f"{prefix} accuracy {100 * record['metrics']['accuracy']:.1f} %, macro-F1 "
            f"{100 * record['metrics']['macro_f1']:.1f} %, {record['trainable_parameters']:,} trainable parameters, "
            f"trained in {record['train_seconds']:.1f} s"
        )
    ordered = [records[c] for c in cells]
    files = write_report(out, ordered, methods, shot_list)
    log(f"Results: {files['markdown']}\n         {files['csv']}\n         {files['plot']}")
    log(f"Cells (checkpoints, predictions, confusion matrices): {out / 'cells'}")
    return {"records": ordered, "files": files, "ran": len(to_run), "skipped": len(done)}


def base_recipe(**fields: Any):
    """A :class:`~monai_cilmp.engines.TrainingRecipe` with ``fields`` set (``None`` values keep the default)."""
    from monai_cilmp.engines import TrainingRecipe

    return dataclasses.replace(TrainingRecipe(), **{k: v for k, v in fields.items() if v is not None})
