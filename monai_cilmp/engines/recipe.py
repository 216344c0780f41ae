"""The paper's training recipe: its hyper-parameters, the optimiser they choose and the constant warm-up then cosine
learning-rate schedule.

The bundle's ``train.json`` lists both as components (``train#optimizer``: :func:`create_optimizer`;
``train#lr_scheduler``: ``torch.optim.lr_scheduler.LambdaLR`` of :func:`warmup_cosine`), each hyper-parameter a
``recipe#<field>`` entry; :func:`build_optimizer` and :func:`build_scheduler` build the same from a
:class:`TrainingRecipe` in Python.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import partial

import torch
from monai.utils import look_up_option
from torch import nn

__all__ = [
    "OPTIMIZERS",
    "TrainingRecipe",
    "build_optimizer",
    "build_scheduler",
    "create_optimizer",
    "lr_factor",
    "warmup_cosine",
]

# the optimisers a recipe may name (``recipe#optimizer``), each with the recipe fields it takes: a name is data, looked
# up here, never code (a command line or an overlay chooses among these only)
OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], tuple[str, ...]]] = {
    "sgd": (torch.optim.SGD, ("lr", "momentum", "weight_decay")),  # the prompt learners' papers
    "adamw": (torch.optim.AdamW, ("lr", "weight_decay", "eps")),  # Tip-Adapter-F's code
}


@dataclass
class TrainingRecipe:
    """Hyper-parameters of CILMP training; the defaults are the paper's code.

    Attributes:
        lr: base learning rate.
        momentum: SGD momentum.
        weight_decay: weight decay (SGD's L2 term; AdamW's decoupled decay).
        max_epochs: training epochs.
        warmup_epochs: epochs at the constant ``warmup_lr`` before the cosine schedule starts.
        warmup_lr: learning rate during warm-up.
        batch_size: images per step.
        gpa_std: standard deviation (epochs) of Gaussian prompt aggregation; ``0`` disables it.
        gpa_mean: its centre (``None``: the last epoch).
        val_interval: validate every this many epochs (0: never).
        seed: random seed of the run.
        optimizer: a name of :data:`OPTIMIZERS`: ``"sgd"`` (the prompt learners' papers) or ``"adamw"``
            (Tip-Adapter-F's code).
        eps: AdamW's epsilon (Tip-Adapter-F's code uses 1e-4).
    """

    lr: float = 0.0025
    momentum: float = 0.9
    weight_decay: float = 5e-4
    max_epochs: int = 100
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    batch_size: int = 64
    gpa_std: float = 30.0
    gpa_mean: float | None = None
    val_interval: int = 1
    seed: int = 1
    optimizer: str = "sgd"
    eps: float = 1e-8

    def to_dict(self) -> dict:
        return asdict(self)


def create_optimizer(
    network: nn.Module,
    name: str = "sgd",
    lr: float = 0.0025,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    eps: float = 1e-8,
) -> torch.optim.Optimizer:
    """The optimiser ``name`` of :data:`OPTIMIZERS` over the network's trainable parameters only (frozen CLIP weights
    are never handed to it), given the recipe fields that optimiser takes (SGD: ``lr``, ``momentum``,
    ``weight_decay``; AdamW: ``lr``, ``weight_decay``, ``eps``).

    Raises:
        ValueError: ``name`` is not in :data:`OPTIMIZERS`, or the network has nothing to train.
    """
    try:
        optimizer, fields = look_up_option(str(name).lower(), OPTIMIZERS)
    except ValueError:
        raise ValueError(
            f"recipe optimizer must be {' or '.join(repr(n) for n in OPTIMIZERS)}, got '{name}': "
            "set recipe#optimizer (--set recipe#optimizer=NAME) to one of them."
        ) from None
    params = [p for p in network.parameters() if p.requires_grad]
    if not params:
        raise ValueError("The network has no trainable parameters.")
    given = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eps": eps}
    return optimizer(params, **{field: given[field] for field in fields})


def build_optimizer(network: nn.Module, recipe: TrainingRecipe) -> torch.optim.Optimizer:
    """:func:`create_optimizer` of ``recipe`` (what ``train#optimizer`` builds)."""
    return create_optimizer(network, recipe.optimizer, recipe.lr, recipe.momentum, recipe.weight_decay, recipe.eps)


def warmup_cosine(epoch: int, lr: float, warmup_lr: float, warmup_epochs: int, max_epochs: int) -> float:
    """Learning-rate multiplier for 0-based ``epoch``.

    As in Dassl (the paper's framework): ``warmup_lr`` for the warm-up epochs, then a cosine over ``max_epochs``
    epochs that starts when the warm-up ends (so the last epochs do not quite reach zero).

    ``train.json`` hands it to ``LambdaLR`` with its other arguments bound (MONAI's ``"_mode_": "callable"``): a
    ``functools.partial`` carries no state into the checkpoints, so a resumed run follows the schedule of the
    ``max_epochs`` it is resumed with.
    """
    if epoch < warmup_epochs:
        return warmup_lr / lr
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / max_epochs))


def lr_factor(epoch: int, recipe: TrainingRecipe) -> float:
    """:func:`warmup_cosine` of ``recipe`` for 0-based ``epoch``."""
    return warmup_cosine(epoch, recipe.lr, recipe.warmup_lr, recipe.warmup_epochs, recipe.max_epochs)


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: TrainingRecipe) -> torch.optim.lr_scheduler.LambdaLR:
    """Epoch-level scheduler of :func:`warmup_cosine` (step it once per epoch; what ``train#lr_scheduler`` builds)."""
    schedule = partial(
        warmup_cosine,
        lr=recipe.lr,
        warmup_lr=recipe.warmup_lr,
        warmup_epochs=recipe.warmup_epochs,
        max_epochs=recipe.max_epochs,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
