"""Evaluating a trained network on a split and writing what papers report: metrics, confusion matrix, predictions,
and whether the probabilities can be trusted (calibration before/after temperature scaling, conformal sets)."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from monai_cilmp.engines.bundle_metadata import record_eval_metrics
from monai_cilmp.engines.run_calibration import RunCalibration, fit_calibration, load_calibration, save_calibration
from monai_cilmp.engines.trainer import create_evaluator
from monai_cilmp.metrics import classification_metrics, save_confusion_matrix, save_metrics
from monai_cilmp.metrics.calibration import calibration_metrics, save_reliability_diagram
from monai_cilmp.metrics.classification import figure_title, log_metrics_to_tensorboard
from monai_cilmp.metrics.collapse import learning_warnings
from monai_cilmp.metrics.conformal import coverage_curve, save_coverage_plot, set_coverage
from monai_cilmp.metrics.temperature import softmax
from monai_cilmp.utils import atomic_write

__all__ = [
    "calibration_logits",
    "evaluate_split",
    "format_trust_summary",
    "headline_metrics",
    "predict_calibrated",
    "predict_logits",
    "prediction_set_names",
    "write_evaluation_report",
    "write_predictions",
]


def predict_logits(
    network: nn.Module, data_loader: Any, device: torch.device | str | None = None, amp: bool | str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Class logits ``(N, C)`` (float32) and labels ``(N,)`` (``-1`` where a batch has none) over ``data_loader``.

    Like :func:`~monai_cilmp.engines.predict` but before the softmax, which temperature scaling needs (an
    over-confident model's softmax saturates to exactly 0 and 1 in float32).
    """
    from ignite.engine import Events

    evaluator = create_evaluator(network, data_loader, device, amp, with_metric=False)
    logits: list[np.ndarray] = []
    labels: list[int] = []

    def collect(engine) -> None:
        for item in engine.state.output:
            logits.append(torch.as_tensor(item["pred"]).float().cpu().numpy())
            label = item.get("label")
            labels.append(int(torch.as_tensor(label).view(-1)[0]) if label is not None else -1)

    evaluator.add_event_handler(Events.ITERATION_COMPLETED, collect)
    evaluator.run()
    return np.stack(logits), np.asarray(labels)


def predict_calibrated(
    network: nn.Module,
    data_loader: Any,
    device: torch.device | str | None = None,
    calibration: RunCalibration | str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Probabilities with the run's temperature, labels, and conformal prediction sets.

    Args:
        network: the trained classifier.
        data_loader: the images.
        device: where to run.
        calibration: a :class:`RunCalibration`, or a run folder whose ``calibration.json`` is used when present;
            ``None``: plain softmax, no sets.

    Returns:
        ``(probabilities (N, C), labels (N,), sets (N, C) bool or None)``.
    """
    if calibration is not None and not isinstance(calibration, RunCalibration):
        calibration = load_calibration(calibration)
    logits, labels = predict_logits(network, data_loader, device)
    if calibration is None:
        return softmax(logits), labels, None
    probabilities = calibration.probabilities(logits)
    return probabilities, labels, calibration.prediction_sets(probabilities)


def prediction_set_names(sets: np.ndarray | None, class_names: Sequence[str]) -> list[list[str]] | None:
    """Each image's prediction set as class names (in label order), or ``None`` without sets."""
    if sets is None:
        return None
    return [[class_names[c] for c in np.flatnonzero(row)] for row in np.asarray(sets, dtype=bool)]


def write_predictions(
    path: str | os.PathLike,
    images: Sequence[Any],
    probabilities: Any,
    class_names: Sequence[str],
    sets: np.ndarray | None = None,
) -> Path:
    """Per-image class probabilities and the predicted class as CSV (``image, predicted, p(<class>)...``), plus a
    ``prediction_set`` column (class names joined by ``|``) when conformal ``sets`` ``(N, C)`` are given."""
    named = prediction_set_names(sets, class_names)

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            extra = ["prediction_set"] if named is not None else []
            writer.writerow(["image", "predicted", *[f"p({name})" for name in class_names], *extra])
            for i, (image, row) in enumerate(zip(images, probabilities)):
                cells = [str(image), class_names[int(np.argmax(row))], *[f"{float(p):.6f}" for p in row]]
                writer.writerow(cells + (["|".join(named[i])] if named is not None else []))

    return atomic_write(path, write)


def calibration_logits(
    network: nn.Module, calibration_loader: Any | None, split: str, device: Any | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Logits and labels of ``calibration_loader`` (the validation split) to fit a calibration on, or ``None`` when
    there is none or ``split`` is ``"validation"`` itself (a calibration cannot be assessed on the data it was fitted
    to)."""
    if calibration_loader is None or split == "validation":
        return None
    return predict_logits(network, calibration_loader, device=device)


def evaluate_split(
    network: nn.Module,
    data_loader: Any,
    class_names: Sequence[str],
    out_dir: str | os.PathLike,
    items: Sequence[dict] | None = None,
    ordinal: bool = False,
    split: str = "test",
    device: Any | None = None,
    calibration_loader: Any | None = None,
    calibration: RunCalibration | str | os.PathLike | None = None,
    alpha: float = 0.1,
    conformal_method: str = "lac",
    class_conditional: bool = False,
    n_bins: int = 15,
    tensorboard_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Predict ``data_loader`` and write the report of :func:`write_evaluation_report` into ``out_dir``.

    The bundle's ``evaluate.json`` writes the same report from its ``SupervisedEvaluator`` through the
    :class:`~monai_cilmp.handlers.EvaluationReport` handler; this function is the same without a config (comparisons,
    the demo, tests).

    Args:
        network: the trained classifier.
        data_loader: batches of ``{"image", "label"}`` in the order of ``items`` (no shuffling).
        class_names: class names in label order.
        out_dir: where the files go.
        items: the datalist items behind the loader, to name images in the predictions file.
        ordinal: quadratic-weighted kappa (ordered grades).
        split: name used in the file names.
        device: where to run.
        calibration_loader: labelled validation batches to fit the calibration on (ignored when ``split`` is
            ``"validation"``: a calibration cannot be assessed on the data it was fitted to).
        calibration: a fitted calibration or a run folder to read one from, used without ``calibration_loader``.
        alpha: conformal error rate of a new fit.
        conformal_method: conformal score of a new fit (``"lac"``, ``"aps"``, ``"raps"``).
        class_conditional: per-class conformal thresholds for a new fit.
        n_bins: bins of the calibration errors and the reliability diagram.
        tensorboard_dir: also log the metrics and the confusion matrix image here (e.g. the run's ``tensorboard/``).

    Returns:
        the metrics, with the written paths under ``"files"``.
    """
    logits, labels = predict_logits(network, data_loader, device=device)
    return write_evaluation_report(
        logits,
        labels,
        class_names,
        out_dir,
        names=[item.get("image", i) for i, item in enumerate(items)] if items is not None else None,
        ordinal=ordinal,
        split=split,
        validation=calibration_logits(network, calibration_loader, split, device),
        calibration=calibration,
        alpha=alpha,
        conformal_method=conformal_method,
        class_conditional=class_conditional,
        n_bins=n_bins,
        tensorboard_dir=tensorboard_dir,
    )


def write_evaluation_report(
    logits: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    out_dir: str | os.PathLike,
    names: Sequence[Any] | None = None,
    ordinal: bool = False,
    split: str = "test",
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    calibration: RunCalibration | str | os.PathLike | None = None,
    alpha: float = 0.1,
    conformal_method: str = "lac",
    class_conditional: bool = False,
    n_bins: int = 15,
    tensorboard_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Write what papers report on a split from its logits and labels: ``<split>_metrics.json``,
    ``<split>_confusion.{csv,png}``, ``<split>_predictions.csv`` and ``<split>_reliability.png`` into ``out_dir``
    (and, with a calibration fitted here, ``<split>_conformal.png``), the metrics and confusion matrix to TensorBoard
    with ``tensorboard_dir``, and the scores into the run's ``configs/metadata.json`` (``eval_metrics``).

    Calibration: with ``validation`` (logits and labels of the *validation* split; never the evaluated split) a
    temperature and conformal thresholds are fitted on it and saved to ``<out_dir>/calibration.json``; else
    ``calibration`` (a :class:`RunCalibration` or a run folder) is applied when given. The classification metrics and
    predictions use the calibrated probabilities (temperature scaling never changes the predicted class);
    ``calibration`` in the result holds the calibration numbers before and after scaling, ``conformal`` the sets'
    coverage and size.

    Args:
        logits: ``(N, C)`` class logits of the split.
        labels: ``(N,)`` their labels.
        class_names: class names in label order.
        out_dir: where the files go (the run folder).
        names: how to name each image in the predictions file (default: its index).
        ordinal: quadratic-weighted kappa (ordered grades).
        split: name used in the file names.
        validation: ``(logits, labels)`` of the validation split to fit a new calibration on (see
            :func:`calibration_logits`; ignored when ``split`` is ``"validation"``).
        calibration: a fitted calibration or a run folder to read one from, used without ``validation``.
        alpha: conformal error rate of a new fit.
        conformal_method: conformal score of a new fit (``"lac"``, ``"aps"``, ``"raps"``).
        class_conditional: per-class conformal thresholds for a new fit.
        n_bins: bins of the calibration errors and the reliability diagram.
        tensorboard_dir: also log the metrics and the confusion matrix image here (e.g. the run's ``tensorboard/``).

    Returns:
        the metrics, with the written paths under ``"files"``.
    """
    out_dir = Path(out_dir)
    logits, labels = np.asarray(logits, dtype=np.float32), np.asarray(labels)
    files: dict[str, Path] = {}
    val_probs = val_labels = None
    if validation is not None and split != "validation":  # never calibrated on the split it is assessed on
        val_logits, val_labels = validation
        calibration = fit_calibration(
            val_logits, val_labels, alpha=alpha, method=conformal_method, class_conditional=class_conditional
        )
        files["calibration"] = save_calibration(calibration, out_dir)
        val_probs = calibration.probabilities(val_logits)
    elif calibration is not None and not isinstance(calibration, RunCalibration):
        calibration = load_calibration(calibration)
    raw = softmax(logits)
    probs = calibration.probabilities(logits) if calibration is not None else raw
    metrics = classification_metrics(labels, probs, class_names, ordinal=ordinal)
    before = calibration_metrics(labels, raw, n_bins)
    metrics["calibration"] = {"before": before, "temperature": 1.0, "fitted_on": None}
    curves = {"softmax": raw}
    if calibration is not None:
        metrics["calibration"].update(
            temperature=calibration.temperature,
            fitted_on=calibration.fitted_on,
            n_calibration=calibration.n,
            after=calibration_metrics(labels, probs, n_bins),
        )
        curves[f"temperature-scaled (T = {calibration.temperature:.2f})"] = probs
    files["reliability"] = save_reliability_diagram(
        labels, curves, out_dir / f"{split}_reliability.png", n_bins, title=f"Reliability on the {split} split"
    )
    sets = calibration.prediction_sets(probs) if calibration is not None else None
    if sets is not None:
        predictor = calibration.conformal
        metrics["conformal"] = {
            "alpha": predictor.alpha,
            "method": predictor.method,
            "class_conditional": predictor.class_conditional,
            "target_coverage": 1.0 - predictor.alpha,
            **set_coverage(sets, labels, class_names),
        }
        if val_probs is not None:
            curve = coverage_curve(
                val_probs,
                val_labels,
                probs,
                labels,
                method=predictor.method,
                class_conditional=predictor.class_conditional,
                lam=predictor.lam,
                k_reg=predictor.k_reg,
            )
            metrics["conformal"]["curve"] = curve
            files["conformal_png"] = save_coverage_plot(
                curve,
                out_dir / f"{split}_conformal.png",
                n_classes=len(class_names),
                chosen_alpha=predictor.alpha,
                title=f"{predictor.method.upper()} sets on the {split} split",
            )
    fitted = calibration is not None
    metrics["warnings"] = learning_warnings(
        probs,
        labels,
        class_names,
        split,
        temperature=calibration.temperature if fitted else None,
        n_calibration=calibration.n if fitted else None,
        fitted_on=calibration.fitted_on if fitted else None,
    )
    names = list(names) if names is not None else list(range(len(probs)))
    files["metrics"] = out_dir / f"{split}_metrics.json"
    files["predictions"] = write_predictions(out_dir / f"{split}_predictions.csv", names, probs, class_names, sets)
    files["confusion_csv"], files["confusion_png"] = save_confusion_matrix(
        metrics["confusion_matrix"], class_names, out_dir / f"{split}_confusion", title=figure_title(split, metrics)
    )
    if tensorboard_dir is not None:
        files["tensorboard"] = log_metrics_to_tensorboard(metrics, tensorboard_dir, split)
    metrics["files"] = {k: str(v) for k, v in files.items()}
    save_metrics(metrics, files["metrics"])
    record_eval_metrics(out_dir, split, metrics)
    return metrics


#: the entries of a report too large for a console summary (the files hold them)
DETAIL_KEYS = ("confusion_matrix", "per_class", "calibration", "conformal", "warnings")


def headline_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The report's metrics without its large entries (:data:`DETAIL_KEYS`) and file list, for a console summary (the
    command says where the files are)."""
    return {k: v for k, v in metrics.items() if k not in (*DETAIL_KEYS, "files")}


def format_trust_summary(metrics: dict[str, Any]) -> str:
    """A few lines for people: calibration before/after temperature scaling and the conformal sets' coverage/size.

    Args:
        metrics: what :func:`evaluate_split` returned.
    """
    c = metrics.get("calibration") or {}
    before, after = c.get("before"), c.get("after")
    if before is None:
        return "No calibration numbers."
    header = f"calibration ({before['n_bins']} bins)"
    lines = [f"  {header:26s}{'ECE':>6s}{'adapt. ECE':>11s}{'MCE':>8s}{'Brier':>8s}{'NLL':>7s}"]

    def row(name: str, m: dict[str, float]) -> str:
        return f"  {name:26s}{m['ece']:6.3f}{m['ece_adaptive']:11.3f}{m['mce']:8.3f}{m['brier']:8.3f}{m['nll']:7.3f}"

    lines.append(row("softmax", before))
    if after is not None:
        lines.append(row(f"temperature T = {c['temperature']:.2f}", after))
        lines.append(f"  (T fitted on the {c['fitted_on']} split, {c.get('n_calibration', '?')} images)")
    else:
        lines.append("  (no temperature: the run has no validation split or calibration.json)")
    conformal = metrics.get("conformal")
    if conformal:
        kind = "class-conditional " if conformal["class_conditional"] else ""
        lines.append(
            f"Conformal {kind}{conformal['method'].upper()} sets at alpha = {conformal['alpha']:g}: coverage "
            f"{conformal['coverage']:.3f} (target >= {conformal['target_coverage']:.2f}), mean set size "
            f"{conformal['mean_set_size']:.2f} of {len(conformal['per_class'])} classes, "
            f"{100 * conformal['singleton']:.0f} % single-class, {100 * conformal['empty']:.0f} % empty"
        )
    lines += [f"WARNING: {w}" for w in metrics.get("warnings") or []]
    return "\n".join(lines)
