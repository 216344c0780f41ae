"""Evaluating a trained network on a split and writing what papers report: metrics, confusion matrix, predictions."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from monai_cilmp.engines.trainer import predict
from monai_cilmp.metrics import classification_metrics, save_confusion_matrix, save_metrics
from monai_cilmp.metrics.classification import figure_title, log_metrics_to_tensorboard
from monai_cilmp.utils import atomic_write

__all__ = ["evaluate_split", "write_predictions"]


def write_predictions(
    path: str | os.PathLike, images: Sequence[Any], probabilities: Any, class_names: Sequence[str]
) -> Path:
    """Per-image class probabilities and the predicted class as CSV (``image, predicted, p(<class>)...``)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "predicted", *[f"p({name})" for name in class_names]])
            for image, row in zip(images, probabilities):
                writer.writerow([str(image), class_names[int(row.argmax())], *[f"{float(p):.6f}" for p in row]])

    return atomic_write(path, write)


def evaluate_split(
    network: nn.Module,
    data_loader: Any,
    class_names: Sequence[str],
    out_dir: str | os.PathLike,
    items: Sequence[dict] | None = None,
    ordinal: bool = False,
    split: str = "test",
    device: Any | None = None,
    tensorboard_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Predict ``data_loader`` and write ``<split>_metrics.json``, ``<split>_confusion.{csv,png}`` and
    ``<split>_predictions.csv`` into ``out_dir`` (and the metrics and confusion matrix to TensorBoard).

    Args:
        network: the trained classifier.
        data_loader: batches of ``{"image", "label"}`` in the order of ``items`` (no shuffling).
        class_names: class names in label order.
        out_dir: where the files go.
        items: the datalist items behind the loader, to name images in the predictions file.
        ordinal: quadratic-weighted kappa (ordered grades).
        split: name used in the file names.
        device: where to run.
        tensorboard_dir: also log the metrics and the confusion matrix image here (e.g. the run's ``tensorboard/``).

    Returns:
        the metrics, with the written paths under ``"files"``.
    """
    out_dir = Path(out_dir)
    probs, labels = predict(network, data_loader, device=device)
    metrics = classification_metrics(labels, probs, class_names, ordinal=ordinal)
    names = [item.get("image", i) for i, item in enumerate(items)] if items is not None else list(range(len(probs)))
    files = {
        "metrics": save_metrics(metrics, out_dir / f"{split}_metrics.json"),
        "predictions": write_predictions(out_dir / f"{split}_predictions.csv", names, probs, class_names),
    }
    files["confusion_csv"], files["confusion_png"] = save_confusion_matrix(
        metrics["confusion_matrix"], class_names, out_dir / f"{split}_confusion", title=figure_title(split, metrics)
    )
    if tensorboard_dir is not None:
        files["tensorboard"] = log_metrics_to_tensorboard(metrics, tensorboard_dir, split)
    metrics["files"] = {k: str(v) for k, v in files.items()}
    return metrics
