"""Ignite handlers for training and evaluating CILMP with MONAI engines."""

from __future__ import annotations

from .checkpoint_saver import BestCheckpointSaver, RunCheckpointSaver
from .evaluation_report import EvaluationReport, item_files
from .gpa import GaussianPromptAggregation, gaussian_epoch_weights
from .gradient_projection import GradientProjection, project_conflicting
from .nonfinite import NonFiniteError, NonFiniteGuard, batch_files
from .probabilities_saver import ProbabilitiesSaver

__all__ = [
    "BestCheckpointSaver",
    "EvaluationReport",
    "GaussianPromptAggregation",
    "GradientProjection",
    "NonFiniteError",
    "NonFiniteGuard",
    "ProbabilitiesSaver",
    "RunCheckpointSaver",
    "batch_files",
    "gaussian_epoch_weights",
    "item_files",
    "project_conflicting",
]
