"""Ignite handlers for training CILMP with MONAI engines."""

from __future__ import annotations

from .checkpoint_saver import BestCheckpointSaver, RunCheckpointSaver
from .gpa import GaussianPromptAggregation, gaussian_epoch_weights
from .gradient_projection import GradientProjection, project_conflicting
from .nonfinite import NonFiniteError, NonFiniteGuard, batch_files

__all__ = [
    "BestCheckpointSaver",
    "GaussianPromptAggregation",
    "GradientProjection",
    "NonFiniteError",
    "NonFiniteGuard",
    "RunCheckpointSaver",
    "batch_files",
    "gaussian_epoch_weights",
    "project_conflicting",
]
