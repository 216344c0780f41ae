"""The classification metrics medical imaging papers report, their files, and summaries over seeds.

Computed from all predictions of a split at once with scikit-learn (MONAI and Ignite have no balanced accuracy,
Cohen's kappa or per-class precision/recall over a whole split); MONAI's ``ROCAUCMetric`` is used for the AUC so
that the value matches what MONAI's evaluation handlers log.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_cilmp.utils.files import atomic_write, write_json

__all__ = [
    "classification_metrics",
    "confusion_figure",
    "figure_title",
    "log_metrics_to_tensorboard",
    "save_confusion_matrix",
    "save_metrics",
    "summarise_seeds",
]


def _auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC; NaN when some class is absent from ``labels`` (AUC undefined)."""
    import torch
    from monai.metrics import compute_roc_auc

    n_cls = probs.shape[1]
    if len(np.unique(labels)) < n_cls:
        return float("nan")
    y = torch.nn.functional.one_hot(torch.as_tensor(labels), n_cls)
    # the function, not the ROCAUCMetric class: these are all the predictions already, and the class would gather
    # its buffers from every rank under torch.distributed (where only rank 0 writes the report)
    return float(compute_roc_auc(torch.as_tensor(probs), y, average="macro"))


def classification_metrics(
    labels: Sequence[int] | np.ndarray,
    probabilities: Sequence[Sequence[float]] | np.ndarray,
    class_names: Sequence[str],
    ordinal: bool = False,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1, macro one-vs-rest AUC, Cohen's kappa and per-class precision/recall.

    Args:
        labels: true labels ``(N,)``.
        probabilities: class probabilities ``(N, C)`` (rows sum to one); the prediction is their argmax.
        class_names: names of the ``C`` classes, in label order.
        ordinal: the classes are ordered grades; kappa then uses quadratic weights (e.g. diabetic retinopathy).

    Returns:
        JSON-serialisable metrics; ``confusion_matrix`` is indexed ``[true][predicted]``.
    """
    from sklearn import metrics as skm

    y = np.asarray(labels, dtype=int)
    p = np.asarray(probabilities, dtype=float)
    if p.ndim != 2 or p.shape[0] != y.shape[0] or p.shape[1] != len(class_names):
        raise ValueError(
            f"Expected probabilities of shape ({y.shape[0]}, {len(class_names)}) for {y.shape[0]} labels and "
            f"{len(class_names)} classes, got {p.shape}."
        )
    if y.size == 0:
        raise ValueError("No predictions to evaluate: the split is empty.")
    pred = p.argmax(axis=1)
    all_labels = list(range(len(class_names)))
    precision, recall, _, support = skm.precision_recall_fscore_support(y, pred, labels=all_labels, zero_division=0)
    return {
        "n": int(y.size),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y, pred)),
        "macro_f1": float(skm.f1_score(y, pred, labels=all_labels, average="macro", zero_division=0)),
        "macro_auc": _auc(y, p),
        "kappa": float(skm.cohen_kappa_score(y, pred, labels=all_labels, weights="quadratic" if ordinal else None)),
        "kappa_weights": "quadratic" if ordinal else "none",
        "per_class": {
            name: {"precision": float(pr), "recall": float(rc), "support": int(n)}
            for name, pr, rc, n in zip(class_names, precision, recall, support)
        },
        "confusion_matrix": skm.confusion_matrix(y, pred, labels=all_labels).tolist(),
        "class_names": list(class_names),
    }


def save_metrics(metrics: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``metrics`` as JSON, atomically (NaN is written as ``null``)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, Mapping):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return write_json(path, clean(dict(metrics)))


def figure_title(split: str, metrics: Mapping[str, Any]) -> str:
    """``"test split, n=120, accuracy 81.7%"``: the title of every figure of a split's results."""
    return f"{split} split, n={int(metrics['n'])}, accuracy {100 * float(metrics['accuracy']):.1f}%"


def confusion_figure(matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str | None = None):
    """A matplotlib ``Figure`` of a confusion matrix: colours by the fraction of each true class, counts written in.

    A bare ``Figure`` (no pyplot): drawing must not switch the backend of a notebook or program that imported us.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = np.asarray(matrix, dtype=int)
    size = max(4.0, 0.6 * len(class_names) + 2)
    fig = Figure(figsize=(size + 1, size))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    shown = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color="white" if shown[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    fig.tight_layout()
    return fig


def save_confusion_matrix(
    matrix: Sequence[Sequence[int]],
    class_names: Sequence[str],
    out_prefix: str | os.PathLike,
    title: str | None = None,
) -> tuple[Path, Path]:
    """Write a confusion matrix as ``<prefix>.csv`` (rows: true class) and ``<prefix>.png`` (titled ``title``).

    Returns:
        the CSV and PNG paths.
    """
    m = np.asarray(matrix, dtype=int)
    prefix = Path(out_prefix)

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["true \\ predicted", *class_names])
            for name, row in zip(class_names, m):
                writer.writerow([name, *row.tolist()])

    fig = confusion_figure(m, class_names, title)
    csv_path = atomic_write(prefix.with_suffix(".csv"), write_csv)
    png_path = atomic_write(prefix.with_suffix(".png"), lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    return csv_path, png_path


def log_metrics_to_tensorboard(
    metrics: Mapping[str, Any], log_dir: str | os.PathLike, split: str = "test", step: int = 0
) -> Path:
    """Add a split's scalar metrics (``<split>/accuracy``, ...) and its titled confusion matrix image
    (``<split>/confusion_matrix``) to the TensorBoard logs in ``log_dir`` (a run's ``tensorboard/`` folder).

    Returns:
        ``log_dir``.
    """
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                writer.add_scalar(f"{split}/{key}", value, step)
        figure = confusion_figure(metrics["confusion_matrix"], metrics["class_names"], figure_title(split, metrics))
        writer.add_figure(f"{split}/confusion_matrix", figure, step, close=False)
    finally:
        writer.close()
    return Path(log_dir)


def summarise_seeds(runs: Sequence[Mapping[str, Any]], keys: Sequence[str] | None = None) -> dict[str, dict]:
    """Mean and sample standard deviation of scalar metrics over runs (e.g. seeds 1-3).

    Returns:
        ``{metric: {"mean": m, "std": s, "n": k, "text": "m ± s"}}`` for every scalar present in all runs.
    """
    if not runs:
        raise ValueError("No runs to summarise.")
    keys = keys or [k for k, v in runs[0].items() if isinstance(v, (int, float)) and k != "n"]
    out: dict[str, dict] = {}
    for key in keys:
        values = np.array([float(r[key]) if r.get(key) is not None else np.nan for r in runs])
        mean = float(np.mean(values))
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        out[key] = {"mean": mean, "std": std, "n": len(values), "text": f"{100 * mean:.2f} ± {100 * std:.2f}"}
    return out
