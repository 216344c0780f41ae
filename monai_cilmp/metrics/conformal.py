"""Split-conformal prediction sets: for each image, a set of classes that contains the true one with probability at
least ``1 - alpha``.

The guarantee needs only that the calibration images (the validation split) and the new images are exchangeable
(drawn alike); it holds for any classifier, good or bad, and a bad one pays with larger sets. How it works: a
*non-conformity score* ``s(x, y)`` says how unusual class ``y`` is for image ``x`` according to the model; on the
``n`` calibration images the scores of the true classes are computed, and ``q`` is their
``ceil((n + 1)(1 - alpha))``-th smallest value (the finite-sample corrected quantile; ``+inf`` when that rank
exceeds ``n``, i.e. too few calibration images for this ``alpha``). A new image's set is ``{y : s(x, y) <= q}``.
Then ``P(y_true in set) >= 1 - alpha``, and (for scores without ties) ``<= 1 - alpha + 1 / (n + 1)``, on average
over calibration splits.

Scores (:class:`ConformalScore`):

- ``lac`` (least ambiguous set-valued classifier, Sadinle et al. 2019): ``1 - p_y``; the smallest sets on average,
  but images that are hard get the same threshold as easy ones (sets may be empty for them).
- ``aps`` (adaptive prediction sets, Romano et al. 2020): the probability mass of the classes ranked at or above
  ``y``; sets grow with the image's uncertainty. Here without randomisation (sets are deterministic and coverage
  is conservative, never below ``1 - alpha``).
- ``raps`` (regularised APS, Angelopoulos et al. 2021): APS plus ``lam * max(0, rank(y) - k_reg)``, which keeps
  unlikely tail classes out and the sets small.

``class_conditional=True`` computes one ``q`` per class from that class's calibration images (Mondrian conformal
prediction), so the guarantee holds for every class separately, e.g. for a rare disease that the marginal
guarantee could ignore; it needs enough validation images of every class (about ``1 / alpha`` each at least).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from monai.utils import StrEnum, look_up_option

from monai_cilmp.utils.files import atomic_write

__all__ = [
    "ConformalScore",
    "SplitConformal",
    "conformal_quantile",
    "conformal_scores",
    "coverage_curve",
    "save_coverage_plot",
    "set_coverage",
]


class ConformalScore(StrEnum):
    """Non-conformity scores of split-conformal classification."""

    LAC = "lac"
    APS = "aps"
    RAPS = "raps"


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"The conformal error rate alpha must lie strictly between 0 and 1, got {alpha}.")
    return alpha


def conformal_scores(
    probabilities: Sequence[Sequence[float]] | np.ndarray,
    labels: Sequence[int] | np.ndarray | None = None,
    method: str | ConformalScore = ConformalScore.LAC,
    lam: float = 0.01,
    k_reg: int = 1,
) -> np.ndarray:
    """Non-conformity scores (larger: the class fits the image less).

    Args:
        probabilities: class probabilities ``(N, C)``.
        labels: ``(N,)`` classes to score (the true ones, for calibration); ``None`` scores every class.
        method: ``"lac"``, ``"aps"`` or ``"raps"``.
        lam: RAPS penalty per rank beyond ``k_reg``.
        k_reg: RAPS ranks without penalty.

    Returns:
        ``(N,)`` scores of ``labels``, or ``(N, C)`` scores of every class.
    """
    method = look_up_option(method, ConformalScore)
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"Expected probabilities of shape (N, C), got {p.shape}.")
    if method == ConformalScore.LAC:
        scores = 1.0 - p
    else:
        order = np.argsort(-p, axis=1, kind="stable")
        ranked = np.take_along_axis(p, order, axis=1)
        cumulative = np.cumsum(ranked, axis=1)
        if method == ConformalScore.RAPS:
            rank = np.arange(1, p.shape[1] + 1)
            cumulative = cumulative + float(lam) * np.maximum(0, rank - int(k_reg))[None, :]
        scores = np.empty_like(p)
        np.put_along_axis(scores, order, cumulative, axis=1)
    if labels is None:
        return scores
    y = np.asarray(labels, dtype=int).reshape(-1)
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"Got {y.shape[0]} labels for {p.shape[0]} probability rows.")
    return scores[np.arange(y.size), y]


def conformal_quantile(scores: Sequence[float] | np.ndarray, alpha: float) -> float:
    """The ``ceil((n + 1)(1 - alpha))``-th smallest of ``n`` calibration scores; ``+inf`` when that exceeds ``n``."""
    alpha = _check_alpha(alpha)
    s = np.sort(np.asarray(scores, dtype=np.float64).reshape(-1))
    n = s.size
    # the small tolerance keeps e.g. (99 + 1) * 0.9 = 90.00000000000001 from becoming rank 91
    rank = math.ceil((n + 1) * (1.0 - alpha) - 1e-9)
    return float(s[rank - 1]) if rank <= n else float("inf")


@dataclass
class SplitConformal:
    """Split-conformal prediction sets fitted on a calibration (validation) split.

    Args:
        alpha: the error rate; sets contain the true class with probability ``>= 1 - alpha``.
        method: the non-conformity score (see :class:`ConformalScore`).
        class_conditional: one threshold per class (coverage per class) instead of one for all.
        lam: RAPS penalty.
        k_reg: RAPS free ranks.

    Attributes:
        thresholds: ``(C,)`` score thresholds after :meth:`fit` (all equal unless class-conditional).
        counts: calibration images per class after :meth:`fit`.
    """

    alpha: float = 0.1
    method: str = ConformalScore.LAC.value
    class_conditional: bool = False
    lam: float = 0.01
    k_reg: int = 1
    thresholds: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.alpha = _check_alpha(self.alpha)
        self.method = look_up_option(self.method, ConformalScore).value

    def fit(self, probabilities: Any, labels: Any) -> SplitConformal:
        """Compute the thresholds from calibration probabilities ``(n, C)`` and their true labels ``(n,)``."""
        p = np.asarray(probabilities, dtype=np.float64)
        y = np.asarray(labels, dtype=int).reshape(-1)
        if p.ndim != 2 or p.shape[0] != y.shape[0] or y.size == 0:
            raise ValueError(
                f"Conformal calibration needs probabilities (n, C) and n labels with n > 0, got {p.shape} and {y.size}."
            )
        n_cls = p.shape[1]
        scores = conformal_scores(p, y, self.method, self.lam, self.k_reg)
        self.counts = [int(np.sum(y == c)) for c in range(n_cls)]
        if self.class_conditional:
            self.thresholds = [conformal_quantile(scores[y == c], self.alpha) for c in range(n_cls)]
        else:
            self.thresholds = [conformal_quantile(scores, self.alpha)] * n_cls
        return self

    @property
    def fitted(self) -> bool:
        return bool(self.thresholds)

    def predict_sets(self, probabilities: Any) -> np.ndarray:
        """``(N, C)`` boolean membership of every class in every image's prediction set."""
        if not self.fitted:
            raise RuntimeError("SplitConformal.predict_sets needs fit() (or thresholds from a saved calibration).")
        p = np.asarray(probabilities, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != len(self.thresholds):
            raise ValueError(f"Expected probabilities of shape (N, {len(self.thresholds)}), got {p.shape}.")
        scores = conformal_scores(p, None, self.method, self.lam, self.k_reg)
        return scores <= np.asarray(self.thresholds, dtype=np.float64)[None, :]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (infinite thresholds as ``null``)."""
        return {
            "alpha": self.alpha,
            "method": self.method,
            "class_conditional": self.class_conditional,
            "lam": self.lam,
            "k_reg": self.k_reg,
            "thresholds": [None if math.isinf(t) else float(t) for t in self.thresholds],
            "counts": list(self.counts),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> SplitConformal:
        """Rebuild from :meth:`to_dict` (raises ``ValueError``/``KeyError`` on a malformed state)."""
        thresholds = [float("inf") if t is None else float(t) for t in state.get("thresholds", [])]
        return cls(
            alpha=float(state["alpha"]),
            method=str(state["method"]),
            class_conditional=bool(state.get("class_conditional", False)),
            lam=float(state.get("lam", 0.01)),
            k_reg=int(state.get("k_reg", 1)),
            thresholds=thresholds,
            counts=[int(c) for c in state.get("counts", [])],
        )


def set_coverage(
    sets: np.ndarray, labels: Sequence[int] | np.ndarray, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Empirical coverage and set sizes of prediction sets on labelled data.

    Args:
        sets: ``(N, C)`` boolean membership.
        labels: true labels ``(N,)``.
        class_names: names for the per-class entries (default ``"0"``, ``"1"``, ...).

    Returns:
        ``coverage`` (fraction of sets containing the true class), ``mean_set_size``, ``empty`` (fraction of empty
        sets), ``singleton`` (fraction of one-class sets), ``n``, and ``per_class`` (``coverage``,
        ``mean_set_size`` and ``n`` of the images of each true class; coverage is NaN for an absent class).
    """
    s = np.asarray(sets, dtype=bool)
    y = np.asarray(labels, dtype=int).reshape(-1)
    if s.ndim != 2 or s.shape[0] != y.size:
        raise ValueError(f"Expected sets of shape ({y.size}, C), got {s.shape}.")
    names = list(class_names) if class_names is not None else [str(c) for c in range(s.shape[1])]
    covered = s[np.arange(y.size), y]
    size = s.sum(axis=1)
    per_class = {}
    for c, name in enumerate(names):
        mask = y == c
        per_class[name] = {
            "coverage": float(covered[mask].mean()) if mask.any() else float("nan"),
            "mean_set_size": float(size[mask].mean()) if mask.any() else float("nan"),
            "n": int(mask.sum()),
        }
    return {
        "coverage": float(covered.mean()),
        "mean_set_size": float(size.mean()),
        "empty": float((size == 0).mean()),
        "singleton": float((size == 1).mean()),
        "n": int(y.size),
        "per_class": per_class,
    }


def coverage_curve(
    calibration_probabilities: Any,
    calibration_labels: Any,
    test_probabilities: Any,
    test_labels: Any,
    alphas: Sequence[float] | None = None,
    **conformal: Any,
) -> dict[str, list[float]]:
    """Test coverage and mean set size of sets calibrated at each ``alpha`` (same score and options for all).

    Args:
        calibration_probabilities: validation probabilities ``(n, C)``.
        calibration_labels: validation labels.
        test_probabilities: test probabilities ``(N, C)``.
        test_labels: test labels.
        alphas: error rates (default 0.01, 0.02, ..., 0.5).
        conformal: keywords of :class:`SplitConformal` other than ``alpha``.

    Returns:
        ``{"alpha": [...], "coverage": [...], "mean_set_size": [...]}``.
    """
    alphas = [float(a) for a in (alphas if alphas is not None else np.round(np.arange(0.01, 0.505, 0.01), 2))]
    curve: dict[str, list[float]] = {"alpha": alphas, "coverage": [], "mean_set_size": []}
    for alpha in alphas:
        predictor = SplitConformal(alpha=alpha, **conformal).fit(calibration_probabilities, calibration_labels)
        result = set_coverage(predictor.predict_sets(test_probabilities), test_labels)
        curve["coverage"].append(result["coverage"])
        curve["mean_set_size"].append(result["mean_set_size"])
    return curve


def save_coverage_plot(
    curve: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    n_classes: int | None = None,
    chosen_alpha: float | None = None,
    title: str | None = None,
) -> Path:
    """Plot test coverage (against the ``1 - alpha`` target) and mean set size against ``alpha`` as a PNG.

    Args:
        curve: what :func:`coverage_curve` returned.
        path: the PNG file.
        n_classes: drawn as the largest possible set size.
        chosen_alpha: marked with a vertical line (the run's ``alpha``).
        title: the figure's title.

    Returns:
        ``path``.
    """
    from matplotlib.figure import Figure

    alpha = np.asarray(curve["alpha"], dtype=float)

    def write(tmp: str) -> None:
        fig = Figure(figsize=(6.5, 4))
        left = fig.subplots()
        left.plot(alpha, 1 - alpha, "--", color="grey", label="target 1 - alpha")
        left.plot(alpha, curve["coverage"], "o-", color="C0", markersize=3, label="test coverage")
        left.set_xlabel("alpha (error rate the sets may make)")
        left.set_ylabel("coverage", color="C0")
        left.set_ylim(min(0.4, float(np.min(curve["coverage"])) - 0.05), 1.01)
        right = left.twinx()
        right.plot(alpha, curve["mean_set_size"], "s-", color="C1", markersize=3, label="mean set size")
        right.set_ylabel("mean set size (classes)", color="C1")
        if n_classes:
            right.axhline(n_classes, color="C1", linestyle=":", linewidth=1)
            right.set_ylim(0, n_classes + 0.3)
        if chosen_alpha is not None:
            left.axvline(chosen_alpha, color="black", linewidth=0.8)
        lines = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        left.legend(lines, [line.get_label() for line in lines], loc="lower left", fontsize=8)
        if title:
            left.set_title(title)
        fig.tight_layout()
        fig.savefig(tmp, format="png", dpi=120)

    return atomic_write(path, write)
