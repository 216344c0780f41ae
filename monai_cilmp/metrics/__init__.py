"""Classification metrics, their files (JSON, confusion matrix CSV/PNG) and summaries over seeds; calibration errors,
temperature scaling and conformal prediction sets."""

from __future__ import annotations

from .calibration import (
    CalibrationBinning,
    brier_score,
    calibration_errors,
    calibration_metrics,
    negative_log_likelihood,
    reliability_bins,
    save_reliability_diagram,
)
from .classification import classification_metrics, save_confusion_matrix, save_metrics, summarise_seeds
from .collapse import learning_warnings
from .conformal import (
    ConformalScore,
    SplitConformal,
    conformal_quantile,
    conformal_scores,
    coverage_curve,
    save_coverage_plot,
    set_coverage,
)
from .temperature import fit_temperature, softmax, temperature_nll

__all__ = [
    "CalibrationBinning",
    "ConformalScore",
    "SplitConformal",
    "brier_score",
    "calibration_errors",
    "calibration_metrics",
    "classification_metrics",
    "conformal_quantile",
    "conformal_scores",
    "coverage_curve",
    "fit_temperature",
    "learning_warnings",
    "negative_log_likelihood",
    "reliability_bins",
    "save_confusion_matrix",
    "save_metrics",
    "save_reliability_diagram",
    "save_coverage_plot",
    "set_coverage",
    "softmax",
    "summarise_seeds",
    "temperature_nll",
]
