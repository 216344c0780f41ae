"""Training and evaluation on MONAI's Ignite engines, with the paper's recipe, for CILMP and its baselines."""

from __future__ import annotations

from .checkpoint import TrainingCheckpoint, atomic_torch_save, load_checkpoint
from .evaluation import evaluate_split, write_predictions
from .features import cached_feature_loader
from .inference import ImagePredictions, predict_images
from .recipe import TrainingRecipe, build_optimizer, build_scheduler, lr_factor
from .runs import RunFolderError, TrainedRun, load_run, prepare_run_folder, run_lock
from .trainer import (
    RegularizedLoss,
    RunFolderTrainer,
    create_evaluator,
    create_trainer,
    default_device,
    predict,
    reseed,
)

__all__ = [
    "ImagePredictions",
    "RegularizedLoss",
    "RunFolderError",
    "RunFolderTrainer",
    "TrainedRun",
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
    "load_run",
    "lr_factor",
    "predict",
    "predict_images",
    "prepare_run_folder",
    "reseed",
    "run_lock",
    "write_predictions",
]
