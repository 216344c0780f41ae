"""Training and evaluation on MONAI's Ignite engines, with the paper's recipe, for CILMP and its baselines."""

from __future__ import annotations

from .bundle_metadata import bundle_metadata, record_eval_metrics, write_run_metadata
from .checkpoint import TrainingCheckpoint, atomic_torch_save, load_checkpoint
from .device_cache import device_cached_dataset, device_cached_loader, split_at_first_random
from .distributed import (
    ShardedEvaluator,
    ShardSampler,
    any_rank,
    end_process_group,
    gather_in_dataset_order,
    per_process_batch,
    rank_seed,
)
from .evaluation import (
    calibration_logits,
    evaluate_split,
    format_trust_summary,
    headline_metrics,
    predict_calibrated,
    predict_logits,
    prediction_set_names,
    write_evaluation_report,
    write_predictions,
)
from .export import ExportNetwork, export_network, export_run
from .features import cached_feature_loader, fit_training_features, training_feature_dataset, training_features
from .inference import ImagePredictions, inference_images, predict_images
from .model_zoo import ModelZooError, load_trained_state, pack_run, trained_state_file
from .progress import EpochSummary, LossProgressBar
from .recipe import (
    OPTIMIZERS,
    TrainingRecipe,
    build_optimizer,
    build_scheduler,
    create_optimizer,
    lr_factor,
    warmup_cosine,
)
from .run_calibration import CALIBRATION_FILE, RunCalibration, fit_calibration, load_calibration, save_calibration
from .run_setup import TrainingSetup, amp_options, default_device, is_main_process, prepare_training, reseed
from .runs import RunFinished, RunFolderError, TrainedRun, load_run, prepare_run_folder, run_lock
from .stopping import StopOnSignal, Terminated
from .trainer import (
    RegularizedLoss,
    RunFolderTrainer,
    create_evaluator,
    create_trainer,
    predict,
    scores_and_labels,
)

__all__ = [
    "CALIBRATION_FILE",
    "OPTIMIZERS",
    "EpochSummary",
    "ExportNetwork",
    "ImagePredictions",
    "LossProgressBar",
    "ModelZooError",
    "RegularizedLoss",
    "RunCalibration",
    "RunFinished",
    "RunFolderError",
    "RunFolderTrainer",
    "ShardSampler",
    "ShardedEvaluator",
    "StopOnSignal",
    "Terminated",
    "TrainedRun",
    "TrainingCheckpoint",
    "TrainingRecipe",
    "TrainingSetup",
    "amp_options",
    "any_rank",
    "atomic_torch_save",
    "end_process_group",
    "build_optimizer",
    "bundle_metadata",
    "build_scheduler",
    "calibration_logits",
    "cached_feature_loader",
    "create_evaluator",
    "create_optimizer",
    "create_trainer",
    "default_device",
    "device_cached_dataset",
    "device_cached_loader",
    "evaluate_split",
    "export_network",
    "export_run",
    "fit_calibration",
    "fit_training_features",
    "gather_in_dataset_order",
    "format_trust_summary",
    "headline_metrics",
    "inference_images",
    "is_main_process",
    "load_calibration",
    "load_checkpoint",
    "load_run",
    "load_trained_state",
    "lr_factor",
    "per_process_batch",
    "predict",
    "predict_calibrated",
    "predict_images",
    "predict_logits",
    "record_eval_metrics",
    "prediction_set_names",
    "prepare_run_folder",
    "pack_run",
    "prepare_training",
    "rank_seed",
    "reseed",
    "run_lock",
    "save_calibration",
    "scores_and_labels",
    "split_at_first_random",
    "training_feature_dataset",
    "training_features",
    "trained_state_file",
    "write_evaluation_report",
    "write_predictions",
    "warmup_cosine",
    "write_run_metadata",
]
