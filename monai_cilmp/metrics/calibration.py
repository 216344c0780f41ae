"""Whether predicted probabilities mean what they say: calibration errors, Brier score, NLL and reliability diagrams.

A classifier is calibrated when, among the images it predicts with confidence ``p``, a fraction ``p`` is right. The
*expected calibration error* (ECE) measures the gap: the predictions are grouped by their top-class confidence
into bins, and the absolute difference between each bin's accuracy and its mean confidence is averaged, weighted
by the bin's share of the predictions. Two binnings are offered:

- ``uniform``: ``n_bins`` equal-width bins ``(0, 1/M], (1/M, 2/M], ..., ((M-1)/M, 1]`` (Guo et al., ICML 2017);
- ``adaptive``: ``n_bins`` bins holding (as nearly as possible) the same number of predictions, so that no bin is
  estimated from a handful of images (Nixon et al., CVPR workshops 2019).

The *maximum calibration error* (MCE) is the largest gap over non-empty bins. The *Brier score* is the mean squared
distance between the probability vector and the one-hot label, summed over classes (Brier 1950: 0 is perfect, a
uniform guess over ``C`` classes scores ``1 - 1/C``). The *negative log-likelihood* (NLL) is the mean of
``-log p(true class)``, the quantity temperature scaling minimises.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.utils import StrEnum, look_up_option

from monai_cilmp.utils.files import atomic_write

__all__ = [
    "CalibrationBinning",
    "brier_score",
    "calibration_errors",
    "calibration_metrics",
    "negative_log_likelihood",
    "reliability_bins",
    "save_reliability_diagram",
]


class CalibrationBinning(StrEnum):
    """How predictions are grouped by confidence."""

    UNIFORM = "uniform"
    ADAPTIVE = "adaptive"


def _check(labels: Any, probabilities: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=int).reshape(-1)
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"Expected probabilities of shape ({y.shape[0]}, C) for {y.shape[0]} labels, got {p.shape}.")
    if y.size == 0:
        raise ValueError("No predictions to evaluate: the split is empty.")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"Labels must lie in 0..{p.shape[1] - 1} for {p.shape[1]} classes, got {y.min()}..{y.max()}.")
    return y, p


def reliability_bins(
    labels: Sequence[int] | np.ndarray,
    probabilities: Sequence[Sequence[float]] | np.ndarray,
    n_bins: int = 15,
    binning: str | CalibrationBinning = CalibrationBinning.UNIFORM,
) -> dict[str, np.ndarray]:
    """Group predictions by top-class confidence.

    Args:
        labels: true labels ``(N,)``.
        probabilities: class probabilities ``(N, C)``.
        n_bins: number of bins ``M``.
        binning: ``"uniform"`` (equal width) or ``"adaptive"`` (equal mass).

    Returns:
        ``edges`` ``(M + 1,)`` (for adaptive bins: the confidence range each bin covers), and per bin ``count``,
        ``confidence`` (mean top-class probability) and ``accuracy`` (fraction right); the last two are NaN for an
        empty bin.
    """
    y, p = _check(labels, probabilities)
    binning = look_up_option(binning, CalibrationBinning)
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}.")
    n_bins = int(n_bins)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    if binning == CalibrationBinning.UNIFORM:
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        # bins are (lo, hi]: a confidence of exactly 1 is in the last bin, 0 (impossible for a top class) in the first
        index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
        members = [np.flatnonzero(index == b) for b in range(n_bins)]
    else:
        order = np.argsort(confidence, kind="stable")
        members = np.array_split(order, n_bins)
        edges = np.array([0.0] + [float(confidence[m].max()) if m.size else np.nan for m in members], dtype=np.float64)
        edges = np.fmax.accumulate(np.nan_to_num(edges, nan=0.0))
        edges[-1] = 1.0
    count = np.array([m.size for m in members], dtype=np.int64)
    mean_conf = np.array([confidence[m].mean() if m.size else np.nan for m in members])
    accuracy = np.array([correct[m].mean() if m.size else np.nan for m in members])
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": accuracy}


def calibration_errors(
    labels: Sequence[int] | np.ndarray,
    probabilities: Sequence[Sequence[float]] | np.ndarray,
    n_bins: int = 15,
    binning: str | CalibrationBinning = CalibrationBinning.UNIFORM,
) -> tuple[float, float]:
    """Expected and maximum calibration error of the top-class confidence.

    Returns:
        ``(ece, mce)``: the count-weighted mean and the maximum of ``|accuracy - confidence|`` over non-empty bins.
    """
    bins = reliability_bins(labels, probabilities, n_bins, binning)
    used = bins["count"] > 0
    gap = np.abs(bins["accuracy"][used] - bins["confidence"][used])
    weight = bins["count"][used] / bins["count"].sum()
    return float(np.sum(weight * gap)), float(gap.max())


def brier_score(labels: Sequence[int] | np.ndarray, probabilities: Sequence[Sequence[float]] | np.ndarray) -> float:
    """Mean over images of ``sum_c (p_c - [c = y])^2`` (0 is perfect, 2 the worst)."""
    y, p = _check(labels, probabilities)
    onehot = np.eye(p.shape[1])[y]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def negative_log_likelihood(
    labels: Sequence[int] | np.ndarray, probabilities: Sequence[Sequence[float]] | np.ndarray
) -> float:
    """Mean of ``-log p(true class)``; a probability of exactly 0 counts as the smallest positive float64."""
    y, p = _check(labels, probabilities)
    picked = np.clip(p[np.arange(y.size), y], np.finfo(np.float64).tiny, 1.0)
    return float(-np.mean(np.log(picked)))


def calibration_metrics(
    labels: Sequence[int] | np.ndarray, probabilities: Sequence[Sequence[float]] | np.ndarray, n_bins: int = 15
) -> dict[str, Any]:
    """Every calibration number of this module for one set of predictions.

    Returns:
        ``ece`` (uniform bins), ``ece_adaptive`` (equal-mass bins), ``mce`` (uniform bins), ``brier``, ``nll``,
        ``confidence`` (mean top-class probability), ``accuracy`` and ``n_bins``.
    """
    y, p = _check(labels, probabilities)
    ece, mce = calibration_errors(y, p, n_bins, CalibrationBinning.UNIFORM)
    ece_adaptive, _ = calibration_errors(y, p, n_bins, CalibrationBinning.ADAPTIVE)
    return {
        "ece": ece,
        "ece_adaptive": ece_adaptive,
        "mce": mce,
        "brier": brier_score(y, p),
        "nll": negative_log_likelihood(y, p),
        "confidence": float(p.max(axis=1).mean()),
        "accuracy": float((p.argmax(axis=1) == y).mean()),
        "n_bins": int(n_bins),
    }


def save_reliability_diagram(
    labels: Sequence[int] | np.ndarray,
    probabilities: Mapping[str, Any] | Any,
    path: str | os.PathLike,
    n_bins: int = 15,
    title: str | None = None,
) -> Path:
    """Write a reliability diagram (accuracy against confidence per equal-width bin) over a confidence histogram.

    Args:
        labels: true labels ``(N,)``.
        probabilities: ``(N, C)`` probabilities, or ``{curve name: (N, C) probabilities}`` to compare several
            (e.g. before and after temperature scaling).
        path: the PNG file.
        n_bins: number of equal-width bins.
        title: the figure's title.

    Returns:
        ``path``.
    """
    # a bare Figure (no pyplot): saving must not switch the backend of a notebook or program that imported us
    from matplotlib.figure import Figure

    curves = dict(probabilities) if isinstance(probabilities, Mapping) else {"model": probabilities}
    binned = {name: reliability_bins(labels, p, n_bins) for name, p in curves.items()}
    centres = (np.arange(n_bins) + 0.5) / n_bins
    width = 1.0 / n_bins

    def write(tmp: str) -> None:
        fig = Figure(figsize=(5.5, 6.5))
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
        shift = width / (len(binned) + 1)
        for i, (name, bins) in enumerate(binned.items()):
            used = bins["count"] > 0
            ece, _ = calibration_errors(labels, curves[name], n_bins)
            x = centres - width / 2 + shift * (i + 1)
            top.bar(x[used], bins["accuracy"][used], width=shift, alpha=0.8, label=f"{name} (ECE {ece:.3f})")
            top.plot(bins["confidence"][used], bins["accuracy"][used], "o", markersize=3, color=f"C{i}")
            bottom.bar(x, bins["count"] / bins["count"].sum(), width=shift, color=f"C{i}", alpha=0.8)
        top.set_ylabel("accuracy in bin")
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.legend(loc="upper left", fontsize=8)
        if title:
            top.set_title(title)
        bottom.set_xlabel("confidence (top-class probability)")
        bottom.set_ylabel("share of images")
        fig.tight_layout()
        fig.savefig(tmp, format="png", dpi=120)

    return atomic_write(path, write)
