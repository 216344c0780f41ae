"""The results of a comparison in the papers' shape: methods x shots, mean ± std over seeds, as Markdown, CSV and plots.

One row per backbone, method and shots (a backbone column, so one report holds several backbones). Under the
``base-to-novel`` protocol the table has base, novel and harmonic-mean accuracy, the harmonic mean taken of the
mean base and mean novel accuracies as CoCoOp and BiomedCoOp report it; methods that cannot score unseen classes
show "n/a". Made from the cell records (:data:`~monai_cilmp.compare.cells.CELL_FILE`) alone, so the report of a
resumed or partly finished comparison is always that of the cells on disk.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_cilmp.networks.nets import get_method
from monai_cilmp.utils.files import atomic_write

from .cells import FULL, Protocol, harmonic_mean, shots_label

__all__ = [
    "REPORTED_METRICS",
    "accuracy_figure",
    "plot_accuracy",
    "plot_base_novel",
    "summarise_cells",
    "warnings_section",
    "write_report",
]

#: one marker per series of the accuracy plot, in order
PLOT_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")

#: the metrics of the results table, with their column titles
REPORTED_METRICS = {"accuracy": "accuracy", "macro_f1": "macro-F1", "macro_auc": "macro AUC"}


def _stat(values: Sequence[Any]) -> dict[str, float]:
    x = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    finite = x[np.isfinite(x)]
    if finite.size < x.size or x.size == 0:  # e.g. AUC undefined when the test split lacks a class
        return {"mean": math.nan, "std": math.nan}
    return {"mean": float(finite.mean()), "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0}


def summarise_cells(
    records: Sequence[Mapping[str, Any]], methods: Sequence[str], shots: Sequence[int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of the results table and of the methods table.

    Returns:
        ``(rows, method_rows)``: one row per backbone, method and shots that has cells (``backbone``, ``method``,
        ``shots``, ``seeds``, ``<metric>_mean`` / ``<metric>_std`` for :data:`REPORTED_METRICS`, ``train_seconds``;
        under base-to-novel also ``base_mean`` / ``base_std``, ``novel_mean`` / ``novel_std`` (NaN: the method
        cannot score unseen classes) and ``hm``, the harmonic mean of the two means); one row per backbone and
        method (``trainable_parameters``, ``train_seconds`` mean over its cells, ``cells``).
    """
    rows, method_rows = [], []
    backbones = list(dict.fromkeys(str(r.get("backbone") or "") for r in records))
    for backbone in backbones:
        for method in methods:
            mine = [r for r in records if r["method"] == method and str(r.get("backbone") or "") == backbone]
            for k in shots:
                cells = sorted((r for r in mine if int(r["shots"]) == k), key=lambda r: int(r["seed"]))
                if not cells:
                    continue
                row: dict[str, Any] = {
                    "backbone": backbone,
                    "method": method,
                    "shots": k,
                    "seeds": [int(r["seed"]) for r in cells],
                }
                for key in REPORTED_METRICS:
                    stat = _stat([r["metrics"].get(key) for r in cells])
                    row[f"{key}_mean"], row[f"{key}_std"] = stat["mean"], stat["std"]
                if any(r.get("protocol") == Protocol.BASE_TO_NOVEL for r in cells):
                    for part in ("base", "novel"):
                        stat = _stat([(r.get(part) or {}).get("accuracy") for r in cells])
                        row[f"{part}_mean"], row[f"{part}_std"] = stat["mean"], stat["std"]
                    hm = harmonic_mean(
                        *(None if math.isnan(row[f"{p}_mean"]) else row[f"{p}_mean"] for p in ("base", "novel"))
                    )
                    row["hm"] = math.nan if hm is None else hm
                row["train_seconds"] = float(np.mean([r["train_seconds"] for r in cells]))
                rows.append(row)
            if mine:
                method_rows.append(
                    {
                        "backbone": backbone,
                        "method": method,
                        "trainable_parameters": int(mine[0]["trainable_parameters"]),
                        "train_seconds": float(np.mean([r["train_seconds"] for r in mine])),
                        "cells": len(mine),
                    }
                )
    return rows, method_rows


def _pct(mean: float, std: float | None = None) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{100 * mean:.1f}" if std is None else f"{100 * mean:.1f} ± {100 * std:.1f}"


def _markdown(rows: list[dict], method_rows: list[dict], shots: Sequence[int], title: str, plot: str) -> str:

    b2n = any("hm" in r for r in rows)
    lines = [f"# {title}", "", "Mean ± standard deviation over seeds, in %, on the test split.", ""]
    if b2n:
        lines += [
            "## Base-to-novel accuracy",
            "",
            "Trained on the base classes (the first half, ceil(C / 2), in label order); base: accuracy among the base "
            "classes on their test images; novel: among the novel classes, by the network rebuilt for them; HM: "
            "harmonic mean of the mean base and mean novel accuracies. n/a: the method's trained parameters are per "
            "class, so it cannot score unseen classes.",
            "",
            "| backbone | method | shots | base | novel | HM |",
            "|---|---|---|---:|---:|---:|",
        ]
        for r in rows:
            cells = f"{_pct(r['base_mean'], r['base_std'])} | {_pct(r['novel_mean'], r['novel_std'])} | {_pct(r['hm'])}"
            lines.append(f"| {r['backbone']} | {r['method']} | {shots_label(r['shots'])} | {cells} |")
        lines.append("")
    else:
        lines += ["## Accuracy", "", "| backbone | method | " + " | ".join(shots_label(k) for k in shots) + " |"]
        lines.append("|---|---|" + "---:|" * len(shots))
        for backbone, method in dict.fromkeys((r["backbone"], r["method"]) for r in rows):
            cells = {r["shots"]: r for r in rows if r["method"] == method and r["backbone"] == backbone}
            values = [_pct(cells[k]["accuracy_mean"], cells[k]["accuracy_std"]) if k in cells else "" for k in shots]
            lines.append(f"| {backbone} | {method} | " + " | ".join(values) + " |")
        lines.append("")
    lines += [f"![{'harmonic mean' if b2n else 'accuracy'} against shots]({plot})", "", "## All metrics", ""]
    if b2n:
        lines.append("Metrics of the base classes' test images among the base classes.")
        lines.append("")
    lines.append(
        "| backbone | method | shots | seeds | " + " | ".join(REPORTED_METRICS.values()) + " | train time (s) |"
    )
    lines.append("|---|---|---|---|" + "---:|" * (len(REPORTED_METRICS) + 1))
    for r in rows:
        metrics = " | ".join(_pct(r[f"{k}_mean"], r[f"{k}_std"]) for k in REPORTED_METRICS)
        seeds = ", ".join(str(s) for s in r["seeds"])
        lines.append(
            f"| {r['backbone']} | {r['method']} | {shots_label(r['shots'])} | {seeds} | {metrics} | "
            f"{r['train_seconds']:.1f} |"
        )
    lines += [
        "",
        "## Methods",
        "",
        "| backbone | method | what | trainable parameters | mean training time per cell (s) |",
    ]
    lines.append("|---|---|---|---:|---:|")
    for m in method_rows:
        summary = get_method(m["method"]).summary
        numbers = f"{m['trainable_parameters']:,} | {m['train_seconds']:.1f}"
        lines.append(f"| {m['backbone']} | {m['method']} | {summary} | {numbers} |")
    return "\n".join(lines) + "\n"


def accuracy_figure(
    rows: Sequence[Mapping[str, Any]], shots: Sequence[int], n_classes: int | None = None, title: str | None = None
):
    """Accuracy (mean ± std over seeds) against shots, one line per backbone and method (the harmonic mean of base
    and novel accuracy under base-to-novel, methods without novel scores left out); methods that do not train are
    dashed.

    The axis runs from 0 to 1, with the chance level ``1 / n_classes`` drawn as a grey line when it is given.

    Returns:
        a matplotlib ``Figure`` (no pyplot).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    b2n = any("hm" in r for r in rows)
    order = sorted(shots, key=lambda k: (k == FULL, k))
    x_of = {k: i for i, k in enumerate(order)}
    several = len({r.get("backbone") for r in rows}) > 1
    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    series = list(dict.fromkeys((r.get("backbone"), r["method"]) for r in rows))
    # methods that score alike (zero-shot CLIP and CILMP at few shots) would hide one another: each series has its
    # own marker and is shifted a little sideways
    dodge = min(0.08, 0.4 / max(len(series), 1))
    for index, (backbone, method) in enumerate(series):
        mine = sorted(
            (r for r in rows if r["method"] == method and r.get("backbone") == backbone), key=lambda r: x_of[r["shots"]]
        )
        if b2n:
            mine = [r for r in mine if not math.isnan(r["hm"])]
            if not mine:
                continue
        shift = (index - (len(series) - 1) / 2) * dodge
        x = [x_of[r["shots"]] + shift for r in mine]
        y = [r["hm"] if b2n else r["accuracy_mean"] for r in mine]
        err = None if b2n else [r["accuracy_std"] for r in mine]
        line = "-" if get_method(method).needs_training else "--"
        marker = PLOT_MARKERS[index % len(PLOT_MARKERS)]
        label = f"{method} · {backbone}" if several else method
        ax.errorbar(x, y, yerr=err, fmt=line, marker=marker, markersize=6, capsize=3, label=label)
    if n_classes and not b2n:
        ax.axhline(1.0 / n_classes, color="grey", linestyle=":", linewidth=1.2, label=f"chance (1/{n_classes})")
    ax.set_xticks(range(len(order)), [shots_label(k).replace("-shot", "") for k in order])
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("training images per class (shots)")
    ax.set_ylabel("harmonic mean of base and novel accuracy" if b2n else "test accuracy")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    figure.tight_layout()
    return figure


def plot_accuracy(
    rows: Sequence[Mapping[str, Any]],
    shots: Sequence[int],
    path: str | os.PathLike,
    n_classes: int | None = None,
    title: str | None = None,
) -> Path:
    """Save :func:`accuracy_figure` as a PNG at ``path``."""
    figure = accuracy_figure(rows, shots, n_classes, title)
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))


def plot_base_novel(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Base, novel and harmonic-mean accuracy per backbone and method at its largest shots setting, as grouped
    bars (base-to-novel); a method without novel scores has its base bar only."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    largest: dict[tuple[str, str], Mapping[str, Any]] = {}
    for r in sorted(rows, key=lambda r: (r["shots"] == FULL, r["shots"])):  # the full split counts as the largest
        largest[(r["backbone"], r["method"])] = r
    several = len({b for b, _ in largest}) > 1
    figure = Figure(figsize=(max(6.0, 0.9 * len(largest) + 2), 4.5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    x = np.arange(len(largest))
    for i, (part, title) in enumerate((("base_mean", "base"), ("novel_mean", "novel"), ("hm", "HM"))):
        values = [100 * r[part] for r in largest.values()]
        ax.bar(x + (i - 1) * 0.27, np.nan_to_num(values), width=0.27, label=title)
    labels = [f"{m}\n{b}" if several else m for b, m in largest]
    shots = ", ".join(dict.fromkeys(shots_label(r["shots"]) for r in largest.values()))
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize="small")
    ax.set_ylabel(f"accuracy (%), {shots}")
    ax.set_title("base-to-novel (missing novel / HM bar: the method cannot score unseen classes)", fontsize="small")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="small")
    figure.tight_layout()
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))


def warnings_section(records: Sequence[Mapping[str, Any]]) -> str:
    """The report's "Warnings" section: each cell whose model learned nothing
    (:func:`~monai_cilmp.metrics.learning_warnings`), with what it says; empty when there is none."""
    warned = [r for r in records if r.get("warnings")]
    if not warned:
        return ""
    lines = [
        "",
        "## Warnings",
        "",
        f"{len(warned)} of {len(records)} cells learned nothing usable; their numbers above are not results:",
        "",
    ]
    for r in sorted(warned, key=lambda r: (str(r.get("backbone")), r["method"], int(r["shots"]), int(r["seed"]))):
        where = f"{r['method']}, {shots_label(int(r['shots']))}, seed {r['seed']}"
        lines += [f"- {where}: {w}" for w in r["warnings"]]
    return "\n".join(lines) + "\n"


def write_report(
    out: str | os.PathLike,
    records: Sequence[Mapping[str, Any]],
    methods: Sequence[str],
    shots: Sequence[int],
    title: str = "Method comparison",
) -> dict[str, Path]:
    """Write ``results.md``, ``results.csv`` and the plot (``accuracy_vs_shots.png``, or under base-to-novel
    ``hm_vs_shots.png`` and ``base_novel.png``) into ``out``.

    Returns:
        their paths under ``"markdown"``, ``"csv"``, ``"plot"`` (and ``"bars"`` under base-to-novel).
    """
    out = Path(out)
    rows, method_rows = summarise_cells(records, methods, shots)
    if not rows:
        raise ValueError("No finished cells to report.")
    b2n = any("hm" in r for r in rows)
    params = {(m["backbone"], m["method"]): m["trainable_parameters"] for m in method_rows}
    n_classes = len(records[0].get("class_names") or []) or None
    n_test = records[0].get("metrics", {}).get("n")
    what = "harmonic mean of base and novel accuracy" if b2n else "accuracy"
    plot_title = f"{title}: test split" + (f", n={n_test}" if n_test else "") + f", {what} mean ± std over seeds"
    plot = plot_accuracy(
        rows, shots, out / ("hm_vs_shots.png" if b2n else "accuracy_vs_shots.png"), n_classes, plot_title
    )
    bars = plot_base_novel(rows, out / "base_novel.png") if b2n else None
    stats = [f"{k}_{s}" for k in REPORTED_METRICS for s in ("mean", "std")]
    if b2n:
        stats += ["base_mean", "base_std", "novel_mean", "novel_std", "hm"]

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            head = [("base_accuracy_" + s[5:]) if s.startswith("base_") else s for s in stats]
            head = [("novel_accuracy_" + s[6:]) if s.startswith("novel_") else s for s in head]
            head = ["harmonic_mean" if s == "hm" else s for s in head]
            writer.writerow(
                ["backbone", "method", "shots", "n_seeds", *head, "trainable_parameters", "train_seconds_mean"]
            )
            for r in rows:
                values = ["" if math.isnan(r[s]) else f"{r[s]:.6f}" for s in stats]
                shots_text = "all" if r["shots"] == FULL else r["shots"]
                writer.writerow(
                    [
                        r["backbone"],
                        r["method"],
                        shots_text,
                        len(r["seeds"]),
                        *values,
                        params[(r["backbone"], r["method"])],
                        f"{r['train_seconds']:.3f}",
                    ]
                )

    csv_path = atomic_write(out / "results.csv", write_csv)
    text = _markdown(rows, method_rows, shots, title, plot.name)
    if bars is not None:
        text = text.replace(
            "\n## All metrics", f"\n![base, novel and HM at the largest shots]({bars.name})\n\n## All metrics", 1
        )
    text += warnings_section(records)
    md_path = atomic_write(out / "results.md", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    files = {"markdown": md_path, "csv": csv_path, "plot": plot}
    return {**files, "bars": bars} if bars is not None else files
