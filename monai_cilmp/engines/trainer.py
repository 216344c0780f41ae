"""MONAI Ignite engines for CILMP and its baselines: a ``SupervisedTrainer`` with the paper's recipe and a
``SupervisedEvaluator``.

The trainer's handlers, in the order they run at the end of an epoch: learning-rate schedule, validation, GPA
(accumulate; at the end install the aggregate), ``best.pt`` when validation set a new best accuracy, ``last.pt``
(and at the end ``final.pt``, which holds the aggregated prompts), then TensorBoard and one log line per epoch
(:class:`~monai_cilmp.engines.progress.EpochSummary`).
The loss is cross-entropy plus the network's ``regularization_loss()`` when it has one (KgCoOp). Two optional
network hooks: ``uses_training_features`` (built from the training set's features before training: Tip-Adapter,
LP++) and ``guide_loss()`` (gradients projected off its conflicting direction: ProGrad). A network with
nothing to train (zero-shot CLIP) gets a trainer that takes no training step but still writes its checkpoints.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.engines import SupervisedTrainer
from torch import nn

from monai_cilmp.engines.bundle_metadata import write_run_metadata
from monai_cilmp.engines.checkpoint import TrainingCheckpoint
from monai_cilmp.engines.features import fit_training_features
from monai_cilmp.engines.progress import LOGGER_NAME, EpochSummary
from monai_cilmp.engines.recipe import TrainingRecipe, build_optimizer, build_scheduler
from monai_cilmp.engines.runs import prepare_run_folder, record_run_inputs, run_lock
from monai_cilmp.engines.stopping import StopOnSignal
from monai_cilmp.handlers import GaussianPromptAggregation, GradientProjection, NonFiniteGuard

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


def default_device() -> torch.device:
    """The first GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def reseed(seed: int, dataset: Any | None = None) -> None:
    """Seed Python, NumPy, torch and the random transforms of ``dataset`` (if it has any)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    transform = getattr(dataset, "transform", None)
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(seed=seed % 2**32)


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


def _has_trainable_parameters(network: nn.Module) -> bool:
    return any(p.requires_grad for p in network.parameters())


def _amp_kwargs(device: torch.device, amp: bool | str | None) -> tuple[bool, dict]:
    """Mixed precision on GPU only: bf16 where supported, else fp16; the CPU path stays fp32."""
    if device.type != "cuda" or amp is False:
        return False, {}
    if amp in (None, True, "auto"):
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return True, {"dtype": {"bf16": torch.bfloat16, "fp16": torch.float16}[str(amp)]}


def scores_and_labels(output: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, C)`` float32 class scores and ``(B,)`` long labels of a decollated engine output, on the scores' device.

    The output transform of every metric of :func:`create_evaluator`. MONAI decollates a batch's labels into Python
    numbers (0-d tensors become ``.item()``), so they must be put back on the device of the scores: on a GPU the
    metrics would otherwise compare ``cuda`` scores with ``cpu`` labels. Scores are cast to float32 (under autocast
    they are bf16/fp16). Returning scores rather than argmax indices keeps Ignite in its multi-class case.
    """
    from monai.handlers import from_engine

    pred, label = from_engine(["pred", "label"])(output)
    scores = torch.stack([torch.as_tensor(p) for p in pred]).float()
    labels = torch.stack([torch.as_tensor(t).reshape(()) for t in label]).to(device=scores.device, dtype=torch.long)
    return scores.as_subclass(torch.Tensor), labels.as_subclass(torch.Tensor)


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
    from ignite.metrics import Accuracy, Loss
    from monai.engines import SupervisedEvaluator

    device = torch.device(device) if device is not None else default_device()
    use_amp, amp_kwargs = _amp_kwargs(device, amp)
    metrics = None
    if with_metric:
        metrics = {"val_loss": Loss(nn.CrossEntropyLoss(), output_transform=scores_and_labels)}
    evaluator = SupervisedEvaluator(
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
    StopOnSignal().attach(evaluator)  # SIGTERM ends the loader's workers too
    return evaluator


class RunFolderTrainer(SupervisedTrainer):
    """MONAI's ``SupervisedTrainer`` that holds its run folder's lock while it runs.

    Args:
        run_folder: the folder to lock (``None``: nothing to lock, e.g. a non-main DDP process).
        kwargs: passed to ``SupervisedTrainer``.
    """

    def __init__(self, run_folder: Path | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_folder = run_folder

    def run(self) -> None:
        if self.run_folder is None:
            return super().run()
        with run_lock(self.run_folder):
            return super().run()


def _prepare_out_dir(
    out_dir: Path,
    recipe: TrainingRecipe,
    metadata: dict[str, Any] | None,
    resume: bool,
    overwrite: bool,
    main_process: bool,
) -> dict[str, Any]:
    """The run's settings (recipe, metadata, input paths and hashes); the main process also checks and records them
    in ``out_dir`` (see :func:`~monai_cilmp.engines.runs.prepare_run_folder`)."""
    settings = record_run_inputs({"recipe": recipe.to_dict(), **(metadata or {})}, out_dir)
    if main_process:
        with run_lock(out_dir):
            prepare_run_folder(out_dir, settings, resume=resume, overwrite=overwrite)
    return settings


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
):
    """A MONAI ``SupervisedTrainer`` for ``network`` with the paper's recipe and the toolkit's handlers.

    The loss is cross-entropy plus ``network.regularization_loss()`` when that returns a tensor (see
    :class:`RegularizedLoss`). Gaussian prompt aggregation runs when ``recipe.gpa_std > 0`` and the network names
    prompt parameters. A network without trainable parameters (zero-shot CLIP) gets a trainer whose run takes no
    training step: one empty epoch, after which ``final.pt`` (holding no parameters, and the metadata) is written as
    for any run, so that the evaluation config works the same for every method.

    A linear probe trains on cached image features: pass a loader of feature batches (see
    :func:`~monai_cilmp.engines.cached_feature_loader`); the network still evaluates on images.

    Args:
        network: a :class:`~monai_cilmp.networks.nets.CLIPClassifier` (``trainable_state_dict``,
            ``prompt_parameter_names``, ``regularization_loss``).
        train_loader: training batches of ``{"image", "label"}``.
        out_dir: run folder (checkpoints in ``checkpoints/``, TensorBoard logs in ``tensorboard/``).
        recipe: training hyper-parameters (default: the paper's).
        val_loader: validation batches; validated every ``recipe.val_interval`` epochs.
        device: where to train (default: GPU if any).
        amp: ``None``/``True``: bf16 (or fp16) autocast on GPU; ``False``: fp32. CPU always trains in fp32.
        metadata: facts stored in every checkpoint (class names, backbone, ...).
        progress: show a progress bar.
        resume: continue from ``out_dir/checkpoints/last.pt``; the run's recorded settings must be the same.
        max_epochs: overrides ``recipe.max_epochs`` (so bundle configs can set ``train#trainer#max_epochs``).
        overwrite: replace a run of other settings in ``out_dir`` (see
            :func:`~monai_cilmp.engines.runs.prepare_run_folder`; a run of the same settings is always replaced).
        compile: run the network through ``torch.compile`` (MONAI's ``compile`` option of the trainer and the
            validation evaluator); the first steps then take the compilation time.
        frozen_in_compute_dtype: under mixed precision on a GPU, keep the frozen weights in the autocast dtype
            (:meth:`~monai_cilmp.networks.nets.CLIPClassifier.to_compute_dtype`: bitwise the same results, without
            re-casting them every step); the network must afterwards run under that autocast (as the engines do).

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
    from ignite.engine import Events
    from monai.handlers import LrScheduleHandler, TensorBoardStatsHandler, ValidationHandler, from_engine

    recipe = recipe or TrainingRecipe()
    if max_epochs is not None:
        recipe = dataclasses.replace(recipe, max_epochs=int(max_epochs))
    device = torch.device(device) if device is not None else default_device()
    out_dir = Path(out_dir)
    reseed(recipe.seed)
    network = network.to(device)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    main_process = not distributed or torch.distributed.get_rank() == 0
    settings = _prepare_out_dir(out_dir, recipe, metadata, resume, overwrite, main_process)
    # built from the training features first: this may create the parameters that train (Tip-Adapter-F's keys)
    fit_training_features(network, train_loader, device)
    if main_process:  # the run's own bundle metadata: the versions and network format it used
        write_run_metadata(out_dir, network, settings)
    if not _has_trainable_parameters(network):
        return _frozen_trainer(network, out_dir, recipe, device, settings, resume, main_process)
    # DDP averages the gradients of the trainable parameters only (the frozen CLIP has none); everything that reads
    # or writes state (GPA, checkpoints, the regulariser) works on the unwrapped network.
    engine_network = (
        torch.nn.parallel.DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)
        if distributed
        else network
    )
    optimizer = build_optimizer(network, recipe)
    scheduler = build_scheduler(optimizer, recipe)
    use_amp, amp_kwargs = _amp_kwargs(device, amp)
    if use_amp and frozen_in_compute_dtype and hasattr(network, "to_compute_dtype"):
        network.to_compute_dtype(amp_kwargs["dtype"])

    loss_output = from_engine(["loss"], first=True)
    # the learning rate goes into the one line per epoch of EpochSummary, not into MONAI's own log lines
    handlers: list[Any] = [LrScheduleHandler(lr_scheduler=scheduler, print_lr=False, epoch_level=True)]
    writer = _summary_writer(out_dir / "tensorboard") if main_process else None
    evaluator = None
    if val_loader is not None and recipe.val_interval > 0:
        val_handlers = [] if writer is None else [TensorBoardStatsHandler(summary_writer=writer, iteration_log=False)]
        evaluator = create_evaluator(network, val_loader, device, amp, handlers=val_handlers, compile=compile)
        handlers.append(ValidationHandler(validator=evaluator, interval=recipe.val_interval, epoch_level=True))
    prompt_names = list(getattr(network, "prompt_parameter_names", lambda: [])())
    gpa = None
    if recipe.gpa_std > 0 and prompt_names:  # nothing to aggregate otherwise (e.g. a linear probe)
        gpa = GaussianPromptAggregation(network, prompt_names, mean=recipe.gpa_mean, std=recipe.gpa_std)
        handlers.append(gpa)
    checkpoint = TrainingCheckpoint(out_dir / "checkpoints", network, optimizer, scheduler, gpa, metadata=settings)
    if main_process:  # one writer of checkpoints and logs
        if evaluator is not None:  # before last.pt, which then records the best so far (for resume)
            handlers.append(_BestCheckpoint(checkpoint, evaluator))
        handlers.append(checkpoint)
        handlers.append(
            TensorBoardStatsHandler(summary_writer=writer, tag_name="train_loss", output_transform=loss_output)
        )

    trainer = RunFolderTrainer(
        out_dir if main_process else None,
        device=device,
        max_epochs=recipe.max_epochs,
        train_data_loader=train_loader,
        network=engine_network,
        optimizer=optimizer,
        loss_function=RegularizedLoss(network),
        train_handlers=handlers,
        amp=use_amp,
        amp_kwargs=amp_kwargs,
        optim_set_to_none=True,
        non_blocking=device.type == "cuda",
        compile=compile,
    )
    NonFiniteGuard().attach(trainer)
    if callable(getattr(network, "guide_loss", None)):  # a no-op for networks whose guide_loss() is None
        GradientProjection(network).attach(trainer)
    dataset = getattr(train_loader, "dataset", None)
    # Each epoch's shuffling, augmentation and dropout depend only on (seed, epoch): a resumed run replays exactly
    # what an uninterrupted one would have done.
    trainer.add_event_handler(
        Events.EPOCH_STARTED, lambda engine: reseed(recipe.seed * 100_003 + engine.state.epoch, dataset)
    )
    sampler = getattr(train_loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):  # a DistributedSampler shuffles by (its seed, epoch)
        trainer.add_event_handler(Events.EPOCH_STARTED, lambda engine: sampler.set_epoch(engine.state.epoch))
    if progress and main_process:
        from ignite.handlers import ProgressBar

        ProgressBar(persist=False).attach(trainer, output_transform=lambda output: {"loss": loss_output(output)})
    if main_process:  # after the progress bar, which clears its line at the end of an epoch
        EpochSummary(optimizer, evaluator, writer, checkpoint_dir=checkpoint.directory).attach(trainer)
    hint = f"{checkpoint.last_path} holds the last complete epoch: resume to continue"
    StopOnSignal(LOGGER_NAME if main_process else None, hint).attach(trainer)
    if resume:
        checkpoint.restore(trainer)
        if evaluator is not None and checkpoint.best is not None:  # best.pt is only replaced by a better epoch
            evaluator.state.best_metric = checkpoint.best["metric"]
            evaluator.state.best_metric_epoch = checkpoint.best["epoch"]
    trainer.checkpoint, trainer.evaluator, trainer.trains = checkpoint, evaluator, True
    return trainer


def _summary_writer(log_dir: Path):
    """One TensorBoard writer shared by every handler of a run (one event file per run rather than per handler)."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir))


class _BestCheckpoint:
    """Write ``best.pt`` whenever the validation that just ran set a new best key metric (MONAI tracks it)."""

    def __init__(self, checkpoint: TrainingCheckpoint, evaluator: Any) -> None:
        self.checkpoint, self.evaluator = checkpoint, evaluator

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        state = self.evaluator.state
        if state.epoch == engine.state.epoch and state.best_metric_epoch == engine.state.epoch:
            self.checkpoint.save_best(engine, float(state.best_metric))


def _frozen_trainer(
    network: nn.Module,
    out_dir: Path,
    recipe: TrainingRecipe,
    device: torch.device,
    settings: dict[str, Any],
    resume: bool,
    main_process: bool,
):
    """The trainer of a network with nothing to train: one epoch of one step that does nothing, then checkpoints.

    Ignite cannot run zero epochs; this keeps the contract of :func:`create_trainer` (``run()``, ``checkpoint``,
    ``final.pt`` with the metadata) without reading any data.
    """
    settings = {**settings, "recipe": dataclasses.replace(recipe, max_epochs=0, gpa_std=0.0).to_dict()}
    checkpoint = TrainingCheckpoint(out_dir / "checkpoints", network, None, metadata=settings)
    trainer = RunFolderTrainer(
        out_dir if main_process else None,
        device=device,
        max_epochs=1,
        train_data_loader=[{}],
        epoch_length=1,
        network=network,
        optimizer=None,
        loss_function=None,
        iteration_update=lambda engine, batch: {},
        train_handlers=[checkpoint] if main_process else [],
        decollate=False,
    )
    if resume:
        checkpoint.restore(trainer)
    trainer.checkpoint, trainer.evaluator, trainer.trains = checkpoint, None, False
    return trainer


def predict(
    network: nn.Module, data_loader: Any, device: torch.device | str | None = None, amp: bool | str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities ``(N, C)`` and labels ``(N,)`` (``-1`` where a batch has none) over ``data_loader``.

    Runs a MONAI ``SupervisedEvaluator`` and collects its outputs.
    """
    from ignite.engine import Events

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
