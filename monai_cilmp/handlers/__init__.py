"""Ignite handlers for training CILMP with MONAI engines."""

from __future__ import annotations

from .gpa import GaussianPromptAggregation, gaussian_epoch_weights

__all__ = ["GaussianPromptAggregation", "gaussian_epoch_weights"]
