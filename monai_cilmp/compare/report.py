"""The results of a comparison: mean ± std over seeds per method and shots, as Markdown, CSV and a plot.

Made from the cell records (:data:`~monai_cilmp.compare.cells.CELL_FILE`) alone, so the report of a resumed or
partly finished comparison is always that of the cells on disk.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_cilmp.utils.files import atomic_write

from .cells import FULL, shots_label

__all__ = ["REPORTED_METRICS", "accuracy_figure", "plot_accuracy", "summarise_cells", "write_report"]

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
        ``(rows, method_rows)``: one row per method and shots that has cells (``method``, ``shots``, ``seeds``, and
        ``<metric>_mean`` / ``<metric>_std`` for :data:`REPORTED_METRICS`, ``train_seconds``); one row per method
        (``trainable_parameters``, ``train_seconds`` mean over its cells, ``cells``).
    """
    rows, method_rows = [], []
    for method in methods:
        mine = [r for r in records if r["method"] == method]
        for k in shots:
            cells = sorted((r for r in mine if int(r["shots"]) == k), key=lambda r: int(r["seed"]))
            if not cells:
                continue
            row: dict[str, Any] = {"method": method, "shots": k, "seeds": [int(r["seed"]) for r in cells]}
            for key in REPORTED_METRICS:
                stat = _stat([r["metrics"].get(key) for r in cells])
                row[f"{key}_mean"], row[f"{key}_std"] = stat["mean"], stat["std"]
            row["train_seconds"] = float(np.mean([r["train_seconds"] for r in cells]))
            rows.append(row)
        if mine:
            method_rows.append(
                {
                    "method": method,
                    "trainable_parameters": int(mine[0]["trainable_parameters"]),
                    "train_seconds": float(np.mean([r["train_seconds"] for r in mine])),
                    "cells": len(mine),
                }
            )
    return rows, method_rows


def _pct(mean: float, std: float) -> str:
    return "n/a" if math.isnan(mean) else f"{100 * mean:.1f} ± {100 * std:.1f}"


def _markdown(rows: list[dict], method_rows: list[dict], shots: Sequence[int], title: str, plot: str) -> str:
    from monai_cilmp.networks.nets import get_method

    lines = [f"# {title}", "", "Mean ± standard deviation over seeds, in %, on the test split.", ""]
    lines += ["## Accuracy", "", "| method | " + " | ".join(shots_label(k) for k in shots) + " |"]
    lines.append("|---|" + "---:|" * len(shots))
    for method in dict.fromkeys(r["method"] for r in rows):
        cells = {r["shots"]: r for r in rows if r["method"] == method}
        values = [_pct(cells[k]["accuracy_mean"], cells[k]["accuracy_std"]) if k in cells else "" for k in shots]
        lines.append(f"| {method} | " + " | ".join(values) + " |")
    lines += ["", f"![accuracy against shots]({plot})", "", "## All metrics", ""]
    lines.append("| method | shots | seeds | " + " | ".join(REPORTED_METRICS.values()) + " | train time (s) |")
    lines.append("|---|---|---|" + "---:|" * (len(REPORTED_METRICS) + 1))
    for r in rows:
        metrics = " | ".join(_pct(r[f"{k}_mean"], r[f"{k}_std"]) for k in REPORTED_METRICS)
        seeds = ", ".join(str(s) for s in r["seeds"])
        lines.append(f"| {r['method']} | {shots_label(r['shots'])} | {seeds} | {metrics} | {r['train_seconds']:.1f} |")
    lines += ["", "## Methods", "", "| method | what | trainable parameters | mean training time per cell (s) |"]
    lines.append("|---|---|---:|---:|")
    for m in method_rows:
        summary = get_method(m["method"]).summary
        lines.append(f"| {m['method']} | {summary} | {m['trainable_parameters']:,} | {m['train_seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def accuracy_figure(
    rows: Sequence[Mapping[str, Any]], shots: Sequence[int], n_classes: int | None = None, title: str | None = None
):
    """Accuracy (mean ± std over seeds) against shots, one line per method; methods that do not train are dashed.

    The axis runs from 0 to 1, with the chance level ``1 / n_classes`` drawn as a grey line when it is given.

    Returns:
        a matplotlib ``Figure`` (no pyplot).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from monai_cilmp.networks.nets import get_method

    order = sorted(shots, key=lambda k: (k == FULL, k))
    x_of = {k: i for i, k in enumerate(order)}
    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: x_of[r["shots"]])
        x = [x_of[r["shots"]] for r in mine]
        y = [r["accuracy_mean"] for r in mine]
        err = [r["accuracy_std"] for r in mine]
        style = "-o" if get_method(method).needs_training else "--"
        ax.errorbar(x, y, yerr=err, fmt=style, capsize=3, label=method)
    if n_classes:
        ax.axhline(1.0 / n_classes, color="grey", linestyle=":", linewidth=1.2, label=f"chance (1/{n_classes})")
    ax.set_xticks(range(len(order)), [shots_label(k).replace("-shot", "") for k in order])
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("training images per class (shots)")
    ax.set_ylabel("test accuracy")
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


def write_report(
    out: str | os.PathLike,
    records: Sequence[Mapping[str, Any]],
    methods: Sequence[str],
    shots: Sequence[int],
    title: str = "Method comparison",
) -> dict[str, Path]:
    """Write ``results.md``, ``results.csv`` and ``accuracy_vs_shots.png`` into ``out``.

    Returns:
        their paths under ``"markdown"``, ``"csv"`` and ``"plot"``.
    """
    out = Path(out)
    rows, method_rows = summarise_cells(records, methods, shots)
    if not rows:
        raise ValueError("No finished cells to report.")
    params = {m["method"]: m["trainable_parameters"] for m in method_rows}
    n_classes = len(records[0].get("class_names") or []) or None
    n_test = records[0].get("metrics", {}).get("n")
    plot_title = f"{title}: test split" + (f", n={n_test}" if n_test else "") + ", accuracy mean ± std over seeds"
    plot = plot_accuracy(rows, shots, out / "accuracy_vs_shots.png", n_classes=n_classes, title=plot_title)

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            stats = [f"{k}_{s}" for k in REPORTED_METRICS for s in ("mean", "std")]
            writer.writerow(["method", "shots", "n_seeds", *stats, "trainable_parameters", "train_seconds_mean"])
            for r in rows:
                values = ["" if math.isnan(r[s]) else f"{r[s]:.6f}" for s in stats]
                shots_text = "all" if r["shots"] == FULL else r["shots"]
                writer.writerow(
                    [
                        r["method"],
                        shots_text,
                        len(r["seeds"]),
                        *values,
                        params[r["method"]],
                        f"{r['train_seconds']:.3f}",
                    ]
                )

    csv_path = atomic_write(out / "results.csv", write_csv)
    text = _markdown(rows, method_rows, shots, title, plot.name)
    md_path = atomic_write(out / "results.md", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return {"markdown": md_path, "csv": csv_path, "plot": plot}
