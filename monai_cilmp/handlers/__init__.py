"""Ignite handlers for training CILMP with MONAI engines."""

from __future__ import annotations

from .gpa import GaussianPromptAggregation, gaussian_epoch_weights
from .gradient_projection import GradientProjection, project_conflicting

__all__ = ["GaussianPromptAggregation", "GradientProjection", "gaussian_epoch_weights", "project_conflicting"]
