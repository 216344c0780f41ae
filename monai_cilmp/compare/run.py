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

import torch
from monai.utils import look_up_option

from monai_cilmp.data import FewShotSampler, get_dataset, load_datalist, subsample_classes
from monai_cilmp.engines import TrainingRecipe, default_device, end_process_group
from monai_cilmp.knowledge import KnowledgeBank
from monai_cilmp.networks import load_backbone
from monai_cilmp.networks.nets import get_method
from monai_cilmp.transforms import get_preset
from monai_cilmp.utils.files import read_json, write_json

from .benchmarks import benchmark_markdown, benchmark_settings
from .cells import (
    CELL_FILE,
    FULL,
    Cell,
    CellContext,
    Protocol,
    backbone_label,
    parse_shots,
    read_cell,
    run_cell,
    shots_label,
)
from .cluster import dispatch_cells, distributed_environment
from .report import write_report

__all__ = ["SETTINGS_FILE", "base_recipe", "plan_cells", "run_cell_task", "run_comparison"]

SETTINGS_FILE = "comparison.json"


def plan_cells(methods: Sequence[str], shots: Sequence[int], seeds: Sequence[int], backbone: str = "") -> list[Cell]:
    """The grid, method by method (so a method's results are complete early)."""
    return [Cell(m, k, int(s), backbone) for m in methods for k in shots for s in seeds]


#: settings a comparison folder may hold several of: each gets its own cells (``cells/<backbone>/...``)
PER_BACKBONE = ("backbone", "pretrained")


def _check_shots(datalist: Mapping[str, Any], shots: Sequence[int]) -> None:
    counts = [sum(int(i["label"]) == c for i in datalist["training"]) for c in range(len(datalist["class_names"]))]
    too_many = [k for k in shots if k != FULL and k > min(counts)]
    if too_many:
        smallest = datalist["class_names"][counts.index(min(counts))]
        raise ValueError(
            f"Class '{smallest}' has only {min(counts)} training images, fewer than the {max(too_many)} shots asked "
            "for: lower --shots or use 'all'."
        )


def _check_settings(out: Path, settings: Mapping[str, Any]) -> list[str]:
    """Refuse a folder whose cells were made with other settings; backbones may differ (each has its own cells).

    Returns:
        the backbone labels of the folder, in the order they were first run.
    """
    path = out / SETTINGS_FILE
    label = settings["backbone_label"]
    weights = f"{settings['backbone']} {settings['pretrained']}"
    backbones = {label: weights}
    if path.is_file():
        before = read_json(path, "Comparison settings")
        ignored = {*PER_BACKBONE, "backbone_label", "backbones"}
        changed = sorted(
            k for k in set(before) | set(settings) if k not in ignored and before.get(k) != settings.get(k)
        )
        has_cells = any((out / "cells").rglob(CELL_FILE))
        if changed and has_cells:
            raise ValueError(
                f"'{out}' holds a comparison made with other settings ({', '.join(changed)} differ): give another "
                "--out, or the same settings to resume it."
            )
        known = dict(before.get("backbones") or {})
        if known.get(label, weights) != weights and has_cells:
            raise ValueError(
                f"'{out}' holds cells of backbone '{label}' made from other weights ({known[label]}): give the "
                "checkpoint another file name or use another --out."
            )
        backbones = {**known, **backbones}
    write_json(path, {**settings, "backbones": backbones})
    return list(backbones)


def _other_backbones(out: Path, label: str, methods: Sequence[str]) -> list[dict[str, Any]]:
    """Finished cells of the other backbones in ``out`` (so that one report holds every backbone)."""
    records = []
    for path in sorted((out / "cells").rglob(CELL_FILE)):
        record = read_cell(path)
        if record.get("backbone") and record["backbone"] != label and record.get("method") in methods:
            records.append(record)
    return records


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
    protocol: str = Protocol.FEW_SHOT,
    sampler: str = "monai-cilmp",
    benchmark: str | None = None,
    recipe_given: Sequence[str] = (),
    log: Callable[[str], None] = print,
    executor: Any = None,
    only: Sequence[Cell] | None = None,
    report: bool = True,
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
        protocol: ``"few-shot"`` or ``"base-to-novel"`` (:class:`~monai_cilmp.compare.Protocol`; train on the first
            ``ceil(C / 2)`` classes, report base, novel and harmonic-mean accuracy).
        sampler: how each cell's K-shot subset is drawn (:class:`~monai_cilmp.data.FewShotSampler`; ``"dassl"``:
            the subsets of CoOp's / BiomedCoOp's seeds on a datalist imported from their split file).
        benchmark: a published benchmark's settings to apply per method (:mod:`.benchmarks`: ``"biomedcoop"``,
            ``"coop"``, ``"cocoop"``, ``"maple"``, ``"promptsrc"``): network keywords, recipe, class names of the
            prompts, Tip-Adapter's validation search; listed in ``results.md``. ``None``: this package's defaults.
        recipe_given: recipe fields set explicitly (on the command line): they win over the benchmark's recipe.
        log: where progress lines go.
        executor: a submitit executor (:func:`~monai_cilmp.compare.cluster.cell_executor`: a SLURM job array or
            local processes) that runs the cells still to run, one task each; ``None``: one after the other here.
            Either way the records land in ``out`` and the same report is written.
        only: run only these cells of the grid (what one task of the job array does).
        report: write the report (a task of the array does not: the submitting process does, once).

    Returns:
        ``{"records": [...], "files": {"markdown", "csv", "plot"}, "ran": n, "skipped": n}``; the report also holds
        the finished cells of other backbones run into the same ``out``.

    Raises:
        ValueError: unknown methods, a method that needs a knowledge bank without one, more shots than a class has,
            fewer than four classes for base-to-novel, or a folder holding a comparison with other settings.
        RuntimeError: cells of the job array failed (each named with its log; the finished ones are kept).
    """
    # what each task of a job array needs to rebuild this comparison in its own process
    arguments = dict(
        datalist=datalist, methods=list(methods), shots=list(shots), seeds=list(seeds), out=out,
        class_names=class_names, dataset=dataset, knowledge=knowledge, descriptions=descriptions, backbone=backbone,
        pretrained=pretrained, offline=offline, quick_gelu=quick_gelu, recipe=recipe, method_recipes=method_recipes,
        preset=preset, ordinal=ordinal, device=device, num_workers=num_workers, protocol=protocol, sampler=sampler,
        benchmark=benchmark, recipe_given=list(recipe_given),
    )  # fmt: skip

    out = Path(out).expanduser().resolve()
    specs = [get_method(m) for m in dict.fromkeys(methods)]
    methods = [s.name for s in specs]
    shot_list = sorted(parse_shots(shots), key=lambda k: (k == FULL, k))
    seed_list = list(dict.fromkeys(int(s) for s in seeds))
    if not seed_list:
        raise ValueError("Give at least one seed.")
    curated = True
    if dataset:
        ds = get_dataset(dataset)
        class_names = class_names or list(ds.class_names)
        preset, ordinal, dataset = preset or ds.preset, ordinal or ds.ordinal, ds.name
        curated = ds.curated_descriptions
        if not curated and not descriptions and any(get_method(m).uses_descriptions for m in methods):
            log(
                f"Dataset '{ds.name}' has no curated class descriptions yet: the methods that use descriptions get "
                "generic ones (give --descriptions for better ones)."
            )
    protocol = look_up_option(protocol, Protocol)
    sampler = str(look_up_option(sampler, FewShotSampler))
    data = load_datalist(datalist, class_names)
    names = list(data["class_names"])
    subsets = {}
    if protocol == Protocol.BASE_TO_NOVEL:
        if len(names) < 4:
            raise ValueError(
                f"Base-to-novel needs at least 4 classes (2 base, 2 novel), the datalist has {len(names)}: with one "
                "class in a half its accuracy is 100 % by construction."
            )
        subsets = {subset: subsample_classes(data, subset) for subset in ("base", "novel")}
    _check_shots(subsets.get("base", data), shot_list)
    needing = [s.name for s in specs if s.needs_knowledge]
    bank = None
    if needing:
        if knowledge is None:
            raise ValueError(f"{', '.join(needing)} need a knowledge bank: pass --knowledge (monai-cilmp knowledge).")

        bank = KnowledgeBank.load(knowledge)
        bank.check_classes(names)
    recipe = recipe or TrainingRecipe()
    method_recipes = {k: dict(v) for k, v in (method_recipes or {}).items()}
    bench: dict[str, Any] | None = None
    shot_recipes: dict[str, dict[str, dict[str, Any]]] = {}
    if benchmark:
        bench = benchmark_settings(benchmark, methods, dataset, names)
        for method, applied in bench["methods"].items():
            given = set(recipe_given) | set(method_recipes.get(method, {}))  # what the caller set wins
            wanted = {k: v for k, v in applied.get("recipe", {}).items() if k not in recipe_given}
            method_recipes[method] = {**wanted, **method_recipes.get(method, {})}
            by_shots = {
                str(shots): {k: v for k, v in fields.items() if k not in given}
                for shots, fields in applied.get("recipe_by_shots", {}).items()
            }
            if any(by_shots.values()):
                shot_recipes[method] = {k: v for k, v in by_shots.items() if v}
    pretrained = None if pretrained in (None, "", "none") else str(pretrained)
    label = backbone_label(backbone, pretrained)
    settings = {
        "protocol": str(protocol),
        "sampler": sampler,
        "backbone_label": label,
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
        **({"shot_recipes": shot_recipes} if shot_recipes else {}),
        **({"benchmark": bench} if bench else {}),
    }
    out.mkdir(parents=True, exist_ok=True)
    backbones = _check_settings(out, settings)

    cells = plan_cells(methods, shot_list, seed_list, label)
    if only is not None:
        cells = [c for c in cells if c in set(only)]
    done = [c for c in cells if c.record_path(out).is_file()]
    log(
        f"Comparing {len(methods)} methods x {len(shot_list)} shot settings ({', '.join(map(shots_label, shot_list))})"
        f" x {len(seed_list)} seeds = {len(cells)} cells on {len(names)} classes into {out}"
        + (f" (base-to-novel: {len(subsets['base']['class_names'])} base classes)" if subsets else "")
    )
    if done:
        log(f"{len(done)} cells are done already (their {done[0].record_path(out).name} exists): they are skipped.")
    log(f"{len(cells) - len(done)} cells to run; methods: {', '.join(methods)}; backbone {backbone} ({pretrained}).")

    records: dict[Cell, dict[str, Any]] = {c: read_cell(c.record_path(out)) for c in done}
    to_run = ran = [c for c in cells if c not in records]
    if executor is not None and to_run:
        _run_on(executor, arguments, to_run, records, out, log)
        to_run = [c for c in cells if c not in records]  # the zero-shot cells that copy their method's first one
    if to_run:
        preset = preset or data.get("preset") or "dermoscopy"
        with torch.random.fork_rng():
            if pretrained is None:  # random weights from a fixed seed: the same backbone in every process of a grid
                torch.manual_seed(0)
            loaded = load_backbone(backbone, pretrained, offline=offline, quick_gelu=quick_gelu)
        size, mean, std = loaded.image_size, tuple(loaded.mean), tuple(loaded.std)
        kwargs = {"keys": "image", "image_size": size, "mean": mean, "std": std}
        eval_transforms = get_preset(preset).eval_transforms(**kwargs)
        from monai.data import CacheDataset, DataLoader

        def test_loader(items):
            dataset = CacheDataset(list(items), eval_transforms, progress=False)
            return DataLoader(dataset, batch_size=recipe.batch_size, shuffle=False, num_workers=num_workers)

        context = CellContext(
            datalist=data,
            backbone=loaded,
            test_loader=test_loader(data["test"]) if not subsets else None,
            train_transforms=get_preset(preset).train_transforms(**kwargs),
            eval_transforms=eval_transforms,
            recipe=recipe,
            method_recipes=method_recipes,
            shot_recipes=shot_recipes,
            knowledge=bank,
            descriptions=str(descriptions) if descriptions else None,
            dataset=dataset if curated else None,
            ordinal=ordinal,
            device=device if device is not None else default_device(),
            num_workers=num_workers,
            protocol=protocol,
            backbone_label=label,
            subset_loaders={k: (v, test_loader(v["test"])) for k, v in subsets.items()},
            sampler=sampler,
            method_kwargs={m: a["network"] for m, a in (bench or {}).get("methods", {}).items() if "network" in a},
            prompt_names=dict((bench or {}).get("class_names", {})),
            searches={m: a["search"] for m, a in (bench or {}).get("methods", {}).items() if "search" in a},
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
        if not record:  # a rank other than 0 of a multi-GPU cell: rank 0 evaluates and reports
            continue
        if "harmonic_mean" in record:
            novel = record["novel"]["accuracy"] if record["novel"] else None
            scores = f"base {_pct(record['base']['accuracy'])}, novel {_pct(novel)}, HM {_pct(record['harmonic_mean'])}"
        else:
            scores = f"accuracy {_pct(record['metrics']['accuracy'])}, macro-F1 {_pct(record['metrics']['macro_f1'])}"
        log(
            f"{prefix} {scores}, {record['trainable_parameters']:,} trainable parameters, "
            f"trained in {record['train_seconds']:.1f} s"
        )
        for warning in record.get("warnings") or []:
            log(f"{prefix} WARNING: {warning}")
    ordered = [records[c] for c in cells]
    if not report:
        return {"records": ordered, "files": {}, "ran": len(ran), "skipped": len(done)}
    everything = sorted(ordered + _other_backbones(out, label, methods), key=lambda r: _position(backbones, r))
    files = write_report(out, everything, methods, shot_list)
    if bench:
        given = {k: getattr(recipe, k) for k in recipe_given}
        section = benchmark_markdown(bench, given)
        with open(files["markdown"], "a", encoding="utf-8") as markdown:
            markdown.write("\n" + section)
        log(section)
    log(f"Results: {files['markdown']}\n         {files['csv']}\n         {files['plot']}")
    log(f"Cells (checkpoints, predictions, confusion matrices): {out / 'cells'}")
    return {"records": ordered, "files": files, "ran": len(ran), "skipped": len(done)}


def run_cell_task(arguments: Mapping[str, Any], cell: Cell) -> str:
    """One task of the array: :func:`~monai_cilmp.compare.run_comparison` of ``arguments`` restricted to ``cell``
    (skipped when its record exists), without the report. Under a multi-task job the tasks first join a
    ``torch.distributed`` group; only rank 0 writes the cell's files.

    Returns:
        the path of the cell's record.
    """
    environment = distributed_environment()
    if environment is not None and str(arguments.get("device") or "").startswith("cuda"):
        arguments = {**arguments, "device": f"cuda:{environment.local_rank}"}  # one GPU per task
    try:
        run_comparison(**arguments, only=[cell], report=False)
    except BaseException:
        import torch.distributed as dist

        if environment is not None and dist.is_initialized():
            dist.destroy_process_group()  # no barrier: the other ranks may never reach one
        raise
    if environment is not None:
        end_process_group()
    return str(cell.record_path(arguments["out"]))


def _run_on(
    executor: Any,
    arguments: Mapping[str, Any],
    to_run: Sequence[Cell],
    records: dict[Cell, dict[str, Any]],
    out: Path,
    log: Callable[[str], None],
) -> None:
    """Run ``to_run`` as a job array of ``executor`` and read their records into ``records``: each zero-shot method
    runs its first cell only (the others copy it, as in a serial run)."""

    firsts: set[str] = {c.method for c in records}
    dispatched = []
    for cell in to_run:
        if get_method(cell.method).needs_training or cell.method not in firsts:
            dispatched.append(cell)
            firsts.add(cell.method)
    failures = dispatch_cells(executor, run_cell_task, {**arguments, "out": str(out)}, dispatched, log)
    for cell in dispatched:
        if cell.record_path(out).is_file():
            records[cell] = read_cell(cell.record_path(out))
    if failures:
        raise RuntimeError(
            f"{len(failures)} of {len(dispatched)} cells failed: {'; '.join(failures)}. Run the comparison again to "
            "retry them (the finished cells are kept)."
        )


def _position(backbones: Sequence[str], record: Mapping[str, Any]) -> int:
    return backbones.index(record["backbone"]) if record["backbone"] in backbones else len(backbones)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def base_recipe(**fields: Any):
    """A :class:`~monai_cilmp.engines.TrainingRecipe` with ``fields`` set (``None`` values keep the default)."""

    return dataclasses.replace(TrainingRecipe(), **{k: v for k, v in fields.items() if v is not None})
