"""Ignite handlers for training CILMP with MONAI engines."""

from __future__ import annotations

from .gpa import GaussianPromptAggregation, gaussian_epoch_weights
from .nonfinite import NonFiniteError, NonFiniteGuard, batch_files

__all__ = ["GaussianPromptAggregation", "NonFiniteError", "NonFiniteGuard", "batch_files", "gaussian_epoch_weights"]
