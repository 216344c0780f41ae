"""MONAI Ignite engines for CILMP and its baselines: a ``SupervisedTrainer`` with the paper's recipe and a
``SupervisedEvaluator``.

A run is declared by the bundle's ``train.json`` (and the overlays of the methods, ``multi_gpu_train.json``,
``demo.json``): :func:`~monai_cilmp.engines.prepare_training` (folder, network), the recipe's optimiser, schedule
and loss (``train#optimizer``, ``train#lr_scheduler``, ``train#loss_function``), the handlers (``train#handlers``,
``validate#handlers``) and a :class:`RunFolderTrainer`. :func:`create_trainer` builds that very
trainer from those configs for code that brings its own network and loaders (``monai-cilmp compare``, ``bench``,
notebooks, tests), so there is one recipe. At the end of an epoch the handlers run in this order: learning-rate
schedule, validation (which writes ``best.pt`` and ``models/model.pt`` on a new best accuracy), GPA (accumulate; at
the end install the aggregate), ``last.pt`` (and at the end ``final.pt``, which holds the aggregated prompts),
TensorBoard, then one log line per epoch (:class:`~monai_cilmp.engines.progress.EpochSummary`).
The loss is cross-entropy plus the network's ``regularization_loss()`` when it has one (KgCoOp). Two optional
network hooks: ``uses_training_features`` (built from the training set's features before training: Tip-Adapter,
LP++) and ``guide_loss()`` (gradients projected off its conflicting direction: ProGrad). A network with
nothing to train (zero-shot CLIP) gets a trainer that takes no training step but still writes its checkpoints.

This module imports no handler (MONAI's rule: handlers may import engines, not the other way): the handlers are
components of the config, and the trainer recognises the two it needs to know by what they declare
(``runs_without_training``, ``checkpointed_state``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from ignite.engine import Events
from ignite.metrics import Accuracy, Loss
from monai.bundle import ConfigParser
from monai.engines import SupervisedTrainer
from monai.handlers import ValidationHandler
from torch import nn

from monai_cilmp.engines.checkpoint import TrainingCheckpoint
from monai_cilmp.engines.distributed import ShardedEvaluator, rank_seed, reduce_logged_loss
from monai_cilmp.engines.outputs import scores_and_labels
from monai_cilmp.engines.progress import LOGGER_NAME
from monai_cilmp.engines.recipe import TrainingRecipe
from monai_cilmp.engines.run_setup import TrainingSetup, amp_options, default_device, reseed
from monai_cilmp.engines.runs import run_lock
from monai_cilmp.engines.stopping import StopOnSignal
from monai_cilmp.utils.bundle import bundle_config
from monai_cilmp.utils.config import literal_overrides

__all__ = [
    "RegularizedLoss",
    "RunFolderTrainer",
    "create_evaluator",
    "create_trainer",
    "default_device",
    "predict",
    "reseed",
    "scores_and_labels",
]


class RegularizedLoss(nn.Module):
    """A classification loss plus the network's :meth:`regularization_loss` term, when it returns a tensor.

    Called by the trainer right after the forward pass, so a network may reuse what that pass computed (KgCoOp's
    class text features). The network is held by reference only (not a sub-module: nothing is registered twice).

    Args:
        network: the trained network (unwrapped from DDP).
        loss: the classification loss (default cross-entropy).

    Attributes:
        last_regularization: the detached term of the last call (``None`` when the network has none).
    """

    def __init__(self, network: nn.Module, loss: nn.Module | None = None) -> None:
        super().__init__()
        self.loss = loss if loss is not None else nn.CrossEntropyLoss()
        self.__dict__["network"] = network
        self.last_regularization: torch.Tensor | None = None

    def forward(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        loss = self.loss(pred, label)
        term = getattr(self.network, "regularization_loss", lambda: None)()
        self.last_regularization = term.detach() if isinstance(term, torch.Tensor) else None
        return loss + term.to(loss.dtype) if isinstance(term, torch.Tensor) else loss


def create_evaluator(
    network: nn.Module,
    data_loader: Any,
    device: torch.device | str | None = None,
    amp: bool | str | None = None,
    handlers: Sequence[Any] = (),
    with_metric: bool = True,
    compile: bool = False,
):
    """A ``SupervisedEvaluator`` whose ``val_accuracy`` key metric (with ``val_loss`` beside it) drives validation.

    Args:
        network: the classifier.
        data_loader: batches of ``{"image": (B, 3, H, W), "label": (B,)}``.
        device: where to run (default: GPU if any).
        amp: ``None``/``True``: bf16 (or fp16) autocast on GPU; ``False``: fp32.
        handlers: extra evaluation handlers.
        with_metric: compute the accuracy (needs labels); ``False`` for unlabelled data.
        compile: run the network through ``torch.compile`` (MONAI's ``compile`` option).
    """
    device = torch.device(device) if device is not None else default_device()
    use_amp, amp_kwargs = amp_options(device, amp)
    metrics = None
    if with_metric:
        metrics = {"val_loss": Loss(nn.CrossEntropyLoss(), output_transform=scores_and_labels)}
    evaluator = ShardedEvaluator(
        device=device,
        val_data_loader=data_loader,
        network=network,
        key_val_metric={"val_accuracy": Accuracy(output_transform=scores_and_labels)} if with_metric else None,
        additional_metrics=metrics,
        val_handlers=list(handlers),
        amp=use_amp,
        amp_kwargs=amp_kwargs,
        non_blocking=device.type == "cuda",
        compile=compile,
    )
    StopOnSignal().attach(evaluator)  # Ctrl-C and SIGTERM go on up (Ignite swallows exceptions that have handlers)
    return evaluator


def _no_step(engine: Any, batch: Any) -> dict:
    return {}


class RunFolderTrainer(SupervisedTrainer):
    """MONAI's ``SupervisedTrainer`` for a run prepared by :func:`~monai_cilmp.engines.prepare_training`.

    Besides the handlers it is given, it keeps what the run's correctness rests on, which no config should turn off:
    it holds the run folder's lock while it runs; it reseeds Python, NumPy, torch and the training transforms at every
    epoch start from (seed, epoch, rank), so that a resumed run replays exactly what an uninterrupted one does and the
    ranks of a distributed run draw different augmentations (:func:`~monai_cilmp.engines.distributed.rank_seed`); the
    logged loss is the mean over ranks (:func:`~monai_cilmp.engines.distributed.reduce_logged_loss`); it logs where
    Ctrl-C or SIGTERM stopped it (:class:`~monai_cilmp.engines.StopOnSignal`; it installs no signal handler); with
    ``setup.resume`` it restores ``last.pt`` into the network, optimiser, schedule, GPA, engine position and the
    validation's best metric. A setup with nothing to train (zero-shot CLIP) gets one epoch of one step that does
    nothing and reads no data, and only the :class:`~monai_cilmp.handlers.RunCheckpointSaver` handlers run
    (``final.pt`` holds the metadata, as for any run).

    Args:
        setup: the run's :class:`~monai_cilmp.engines.TrainingSetup`.
        checkpoint: the run's :class:`~monai_cilmp.engines.TrainingCheckpoint` (restored on resume; it is handed the
            :class:`~monai_cilmp.handlers.GaussianPromptAggregation` of ``train_handlers`` when it has none).
        kwargs: ``SupervisedTrainer``'s arguments.

    Attributes:
        evaluator: the validator of the ``ValidationHandler`` among the handlers (``None``: no validation).
        trains: whether the trainer takes training steps.
    """

    def __init__(self, setup: TrainingSetup, checkpoint: TrainingCheckpoint | None = None, **kwargs: Any) -> None:
        handlers = list(kwargs.pop("train_handlers", None) or [])
        if not setup.trains:
            handlers = [h for h in handlers if getattr(h, "runs_without_training", False)]
            no_training = dict(max_epochs=1, train_data_loader=[{}], epoch_length=1, optimizer=None, loss_function=None)
            kwargs.update(no_training, iteration_update=_no_step, decollate=False)
        super().__init__(train_handlers=handlers, **kwargs)
        self.setup, self.checkpoint, self.trains = setup, checkpoint, setup.trains
        self.run_folder = setup.out_dir if setup.main_process else None
        self.evaluator = next((h.validator for h in handlers if isinstance(h, ValidationHandler)), None)
        if checkpoint is not None and checkpoint.gpa is None:
            checkpoint.gpa = next((h for h in handlers if getattr(h, "checkpointed_state", False)), None)
        if self.trains:
            from monai.engines.utils import IterationEvents

            dataset, seed = getattr(self.data_loader, "dataset", None), setup.recipe.seed
            # each rank its own streams (rank 0 and a single process: the run's own), the same on every run
            self.add_event_handler(
                Events.EPOCH_STARTED, lambda e: reseed(rank_seed(seed * 100_003 + e.state.epoch), dataset)
            )
            # before any handler logs it: the loss of the global batch, not this rank's shard
            self.add_event_handler(IterationEvents.MODEL_COMPLETED, reduce_logged_loss)
        hint = f"{checkpoint.last_path} holds the last complete epoch: resume to continue" if checkpoint else ""
        StopOnSignal(LOGGER_NAME if setup.main_process else None, hint).attach(self)
        if setup.resume and checkpoint is not None:
            checkpoint.restore(self)
            if self.evaluator is not None and checkpoint.best is not None:  # best.pt is only replaced by a better one
                self.evaluator.state.best_metric = checkpoint.best["metric"]
                self.evaluator.state.best_metric_epoch = checkpoint.best["epoch"]

    def run(self) -> None:
        if self.run_folder is None:
            return super().run()
        with run_lock(self.run_folder):
            return super().run()


def create_trainer(
    network: nn.Module,
    train_loader: Any,
    out_dir: str | os.PathLike,
    recipe: TrainingRecipe | None = None,
    val_loader: Any | None = None,
    device: torch.device | str | None = None,
    amp: bool | str | None = None,
    metadata: dict[str, Any] | None = None,
    progress: bool = True,
    resume: bool = False,
    max_epochs: int | None = None,
    overwrite: bool = False,
    compile: bool = False,
    frozen_in_compute_dtype: bool = False,
) -> RunFolderTrainer:
    """The trainer the bundle's ``train.json`` declares, for ``network`` and loaders built in Python.

    ``train.json`` is parsed with the given network, loaders and device in place of its own (``network``,
    ``train#dataloader``, ``validate#dataloader``), the recipe's fields as ``recipe#<field>``, and the other arguments
    as its entries (``output_dir``, ``mixed_precision``, ``resume``, ``overwrite``, ``compile``,
    ``frozen_in_compute_dtype``, ``train#setup#metadata``); its ``train#trainer`` is returned. So ``monai-cilmp
    compare``, ``bench``, notebooks and tests run the very recipe of the CLI and the bundle: one place to change it.

    The loss is cross-entropy plus ``network.regularization_loss()`` when that returns a tensor (see
    :class:`RegularizedLoss`). Gaussian prompt aggregation runs when ``recipe.gpa_std > 0`` and the network names
    prompt parameters. A network without trainable parameters (zero-shot CLIP) gets a trainer whose run takes no
    training step (see :class:`RunFolderTrainer`).

    A linear probe trains on cached image features: pass a loader of feature batches (see
    :func:`~monai_cilmp.engines.cached_feature_loader`); the network still evaluates on images.

    Args:
        network: a :class:`~monai_cilmp.networks.nets.CLIPClassifier` (``trainable_state_dict``,
            ``prompt_parameter_names``, ``regularization_loss``).
        train_loader: training batches of ``{"image", "label"}``.
        out_dir: run folder (checkpoints in ``checkpoints/``, the best trained state in ``models/model.pt``,
            TensorBoard logs in ``tensorboard/``).
        recipe: training hyper-parameters (default: the paper's).
        val_loader: validation batches; validated every ``recipe.val_interval`` epochs.
        device: where to train (default: GPU if any).
        amp: ``None``/``True``: bf16 (or fp16) autocast on GPU; ``False``: fp32. CPU always trains in fp32.
        metadata: facts stored in every checkpoint (class names, backbone, ...); JSON data.
        progress: show a progress bar.
        resume: continue from ``out_dir/checkpoints/last.pt``; the run's recorded settings must be the same.
        max_epochs: overrides ``recipe.max_epochs``.
        overwrite: replace a run of other settings in ``out_dir`` (see
            :func:`~monai_cilmp.engines.runs.prepare_run_folder`; a run of the same settings is always replaced).
        compile: run the network through ``torch.compile`` (MONAI's ``compile`` option of the trainer and the
            validation evaluator); the first steps then take the compilation time.
        frozen_in_compute_dtype: see :func:`~monai_cilmp.engines.prepare_training`.

    Host-to-device copies of the batches are non-blocking on a GPU (give the loader ``pin_memory=True``).

    Returns:
        the trainer; ``trainer.checkpoint`` is its :class:`TrainingCheckpoint`, ``trainer.evaluator`` the
        validation evaluator (or ``None``), ``trainer.trains`` whether it takes training steps at all.

    Training stops with a :class:`~monai_cilmp.handlers.NonFiniteError` naming the files of the first batch with
    non-finite images or loss, before that batch changes any weight. ``out_dir`` is locked while the trainer runs and
    records the run's settings in ``run.json`` (see :mod:`monai_cilmp.engines.runs`).

    Raises:
        FileNotFoundError: ``resume`` without a checkpoint in ``out_dir``.
        RunFolderError: ``out_dir`` holds a run of other settings, is in use, or cannot be written.
    """
    recipe = recipe or TrainingRecipe()
    if max_epochs is not None:
        recipe = dataclasses.replace(recipe, max_epochs=int(max_epochs))
    # the objects reach the parser as globals of our own expressions: it never walks into them (a batch may hold
    # file names, which are data)
    given = SimpleNamespace(
        network=network,
        train_loader=train_loader,
        val_loader=val_loader,
        device=torch.device(device) if device is not None else default_device(),
    )
    parser = ConfigParser(globals={"given": given})
    parser.read_config(bundle_config("train.json"))
    parser.update(
        {
            "network": "$given.network",
            "device": "$given.device",
            "train#dataloader": "$given.train_loader",
            "validate#dataloader": "$given.val_loader",
        }
    )
    settings: dict[str, Any] = {f"recipe#{key}": value for key, value in recipe.to_dict().items()}
    settings.update(
        {
            "output_dir": str(Path(out_dir)),
            "mixed_precision": amp,
            "resume": resume,
            "overwrite": overwrite,
            "compile": compile,
            "frozen_in_compute_dtype": frozen_in_compute_dtype,
            "train#setup#metadata": dict(metadata or {}),
            "validate#enabled": val_loader is not None and recipe.val_interval > 0,
        }
    )
    if not progress:
        targets = [str(handler.get("_target_", "")) for handler in parser["train#handlers"]]
        settings[f"train#handlers#{targets.index('monai_cilmp.engines.LossProgressBar')}#_disabled_"] = True
    parser.update(literal_overrides(settings))
    try:
        return parser.get_parsed_content("train#trainer")
    except RuntimeError as wrapped:  # MONAI wraps what the config's code raised: raise that (a clear sentence)
        error: BaseException = wrapped
        while isinstance(error, RuntimeError) and str(error).startswith("Failed to") and error.__cause__ is not None:
            error = error.__cause__
        if error is wrapped:
            raise
        raise error from None


def predict(
    network: nn.Module, data_loader: Any, device: torch.device | str | None = None, amp: bool | str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities ``(N, C)`` and labels ``(N,)`` (``-1`` where a batch has none) over ``data_loader``.

    Runs a MONAI ``SupervisedEvaluator`` and collects its outputs.
    """
    evaluator = create_evaluator(network, data_loader, device, amp, with_metric=False)
    probs: list[np.ndarray] = []
    labels: list[int] = []

    def collect(engine) -> None:
        for item in engine.state.output:
            probs.append(torch.softmax(torch.as_tensor(item["pred"]).float(), dim=-1).cpu().numpy())
            label = item.get("label")
            labels.append(int(torch.as_tensor(label).view(-1)[0]) if label is not None else -1)

    evaluator.add_event_handler(Events.ITERATION_COMPLETED, collect)
    evaluator.run()
    return np.stack(probs), np.asarray(labels)
