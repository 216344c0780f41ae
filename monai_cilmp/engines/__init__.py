"""Training and evaluation on MONAI's Ignite engines, with the paper's recipe, for CILMP and its baselines."""

from __future__ import annotations

from .checkpoint import TrainingCheckpoint, atomic_torch_save, load_checkpoint
from .evaluation import evaluate_split, write_predictions
from .features import cached_feature_loader
from .progress import EpochSummary
from .recipe import TrainingRecipe, build_optimizer, build_scheduler, lr_factor
from .stopping import StopOnSignal, Terminated
from .trainer import (
    RegularizedLoss,
    create_evaluator,
    create_trainer,
    default_device,
    predict,
    reseed,
    scores_and_labels,
)

__all__ = [
    "EpochSummary",
    "RegularizedLoss",
    "StopOnSignal",
    "Terminated",
    "TrainingCheckpoint",
    "TrainingRecipe",
    "atomic_torch_save",
    "build_optimizer",
    "build_scheduler",
    "cached_feature_loader",
    "create_evaluator",
    "create_trainer",
    "default_device",
    "evaluate_split",
    "load_checkpoint",
    "lr_factor",
    "predict",
    "reseed",
    "scores_and_labels",
    "write_predictions",
]
