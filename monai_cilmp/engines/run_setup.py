"""What a training run is made of before its optimiser and handlers: the run folder checked, recorded and locked, the
network on its device, fitted from the training features, wrapped for DDP.

:func:`prepare_training` does the part of setting up a run that has to happen in this order and that a config cannot
express (it depends on what the network turns out to have once fitted: Tip-Adapter-F creates its trained keys from
the training set; a zero-shot network has nothing to train). It returns a :class:`TrainingSetup`, which the bundle's
``train.json`` lists as ``train#setup``: the components that must wait for it (the optimiser, which trains the
parameters the fitting made; the TensorBoard writer, which writes into the checked folder) name it, and the trainer
is handed it (``train#trainer``); :func:`~monai_cilmp.engines.create_trainer` builds that trainer from ``train.json``
for a network and loaders made in Python.
"""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from monai_cilmp.engines.bundle_metadata import write_run_metadata
from monai_cilmp.engines.features import fit_training_features
from monai_cilmp.engines.recipe import TrainingRecipe
from monai_cilmp.engines.runs import prepare_run_folder, record_run_inputs, run_lock

__all__ = ["TrainingSetup", "amp_options", "default_device", "is_main_process", "prepare_training", "reseed"]


def default_device() -> torch.device:
    """The first GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def is_main_process() -> bool:
    """Whether this process writes the run's files: rank 0 of an initialised process group, or a single process."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return not distributed or torch.distributed.get_rank() == 0


def reseed(seed: int, dataset: Any | None = None) -> None:
    """Seed Python, NumPy, torch and the random transforms of ``dataset`` (if it has any)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    transform = getattr(dataset, "transform", None)
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(seed=seed % 2**32)


def amp_options(device: torch.device, amp: bool | str | None) -> tuple[bool, dict]:
    """MONAI's ``amp`` and ``amp_kwargs`` of an engine: autocast on GPU only, bf16 where supported, else fp16; the CPU
    path stays fp32.

    Args:
        device: where the engine runs.
        amp: ``None``/``True``/``"auto"``: the GPU's best; ``"bf16"`` or ``"fp16"``; ``False``: fp32.
    """
    if device.type != "cuda" or amp is False:
        return False, {}
    if amp in (None, True, "auto"):
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return True, {"dtype": {"bf16": torch.bfloat16, "fp16": torch.float16}[str(amp)]}


@dataclass
class TrainingSetup:
    """The parts of a training run, ready for its handlers and trainer (see :func:`prepare_training`).

    Attributes:
        network: the trained network on ``device`` (unwrapped: GPA, checkpoints and the regulariser use it).
        engine_network: what the engine runs (``network`` wrapped in ``DistributedDataParallel`` under DDP).
        device: the training device.
        recipe: the recipe, with the run's ``max_epochs``.
        out_dir: the run folder.
        settings: what the checkpoints record (``run.json``'s settings; a run that trains nothing records a recipe of
            zero epochs).
        main_process: whether this process writes the run's files (rank 0, or no DDP).
        trains: whether the network has parameters to train (zero-shot CLIP does not).
        resume: continue from ``out_dir/checkpoints/last.pt``.
        amp: autocast on (GPU only; off when nothing trains).
        amp_kwargs: its dtype.
    """

    network: nn.Module
    engine_network: nn.Module
    device: torch.device
    recipe: TrainingRecipe
    out_dir: Path
    settings: dict[str, Any]
    main_process: bool
    trains: bool
    resume: bool = False
    amp: bool = False
    amp_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def non_blocking(self) -> bool:
        """Asynchronous host-to-device copies (on a GPU, with pinned loader memory)."""
        return self.device.type == "cuda"

    @property
    def aggregates_prompts(self) -> bool:
        """Whether Gaussian prompt aggregation has something to do: a positive ``gpa_std`` and named prompts."""
        names = getattr(self.network, "prompt_parameter_names", lambda: [])()
        return self.trains and self.recipe.gpa_std > 0 and bool(list(names))

    @property
    def projects_gradients(self) -> bool:
        """Whether the network has a guide loss whose conflicts the gradients are projected off (ProGrad)."""
        return self.trains and callable(getattr(self.network, "guide_loss", None))


def _has_trainable_parameters(network: nn.Module) -> bool:
    return any(p.requires_grad for p in network.parameters())


def prepare_training(
    network: nn.Module,
    train_loader: Any,
    out_dir: str | os.PathLike,
    recipe: TrainingRecipe | None = None,
    device: torch.device | str | None = None,
    amp: bool | str | None = None,
    metadata: dict[str, Any] | None = None,
    resume: bool = False,
    max_epochs: int | None = None,
    overwrite: bool = False,
    frozen_in_compute_dtype: bool = False,
) -> TrainingSetup:
    """Prepare a training run: check, record and lock its folder, then fit and place the network its optimiser trains.

    In this order: the recipe gets ``max_epochs``; Python, NumPy and torch are seeded with the recipe's seed; the
    network moves to ``device``; the main process checks ``out_dir`` and records the run's settings in ``run.json``
    (see :func:`~monai_cilmp.engines.runs.prepare_run_folder`: another run's folder is refused unless ``overwrite``,
    a resume with other settings is refused); the network is fitted from the training features when it uses them
    (:func:`~monai_cilmp.engines.fit_training_features`: this may create the parameters that train); the run's bundle
    metadata is written; then, when something trains, the network is wrapped for DDP when a process group is
    initialised, and mixed precision is chosen (bf16, else fp16, on a GPU; fp32 on the CPU). The optimiser, schedule
    and TensorBoard writer are the config's (``train#optimizer``, ``train#lr_scheduler``, ``train#summary_writer``),
    built after this.

    Args:
        network: a :class:`~monai_cilmp.networks.nets.CLIPClassifier`.
        train_loader: the training batches (read here only by networks fitted from the training features).
        out_dir: the run folder.
        recipe: training hyper-parameters (default: the paper's).
        device: where to train (default: GPU if any).
        amp: ``None``/``True``: bf16 (or fp16) autocast on GPU; ``False``: fp32. CPU always trains in fp32.
        metadata: facts stored in every checkpoint (class names, backbone, method, ...).
        resume: continue from ``out_dir/checkpoints/last.pt`` (the trainer restores it); the settings must match.
        max_epochs: overrides ``recipe.max_epochs`` (the bundle passes ``train#trainer#max_epochs``).
        overwrite: replace a run of other settings in ``out_dir``.
        frozen_in_compute_dtype: under mixed precision on a GPU, keep the frozen weights in the autocast dtype
            (:meth:`~monai_cilmp.networks.nets.CLIPClassifier.to_compute_dtype`: bitwise the same results without
            re-casting them every step).

    Raises:
        RunFolderError: ``out_dir`` holds a run of other settings, is in use, or cannot be written.
    """
    from monai.utils import str2bool

    # flags may come from a command line as text ("false" must not count as true)
    resume, overwrite = (str2bool(flag) if isinstance(flag, str) else bool(flag) for flag in (resume, overwrite))
    recipe = recipe or TrainingRecipe()
    if max_epochs is not None:
        recipe = dataclasses.replace(recipe, max_epochs=int(max_epochs))
    device = torch.device(device) if device is not None else default_device()
    out_dir = Path(out_dir)
    reseed(recipe.seed)
    network = network.to(device)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    main_process = is_main_process()
    settings = record_run_inputs({"recipe": recipe.to_dict(), **(metadata or {})}, out_dir)
    if main_process:
        with run_lock(out_dir):
            prepare_run_folder(out_dir, settings, resume=resume, overwrite=overwrite)
    # built from the training features first: this may create the parameters that train (Tip-Adapter-F's keys)
    fit_training_features(network, train_loader, device)
    if main_process:  # the run's own bundle metadata: the versions and network format it used
        write_run_metadata(out_dir, network, settings)
    setup = TrainingSetup(
        network=network,
        engine_network=network,
        device=device,
        recipe=recipe,
        out_dir=out_dir,
        settings=settings,
        main_process=main_process,
        trains=_has_trainable_parameters(network),
        resume=resume,
    )
    if not setup.trains:  # its checkpoints say what ran: no epoch, no aggregation
        frozen = dataclasses.replace(recipe, max_epochs=0, gpa_std=0.0)
        setup.settings = {**settings, "recipe": frozen.to_dict()}
        return setup
    # DDP averages the gradients of the trained parameters only (the frozen CLIP has none)
    if distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        setup.engine_network = torch.nn.parallel.DistributedDataParallel(network, device_ids=device_ids)
    setup.amp, setup.amp_kwargs = amp_options(device, amp)
    if setup.amp and frozen_in_compute_dtype and hasattr(network, "to_compute_dtype"):
        network.to_compute_dtype(setup.amp_kwargs["dtype"])
    return setup
