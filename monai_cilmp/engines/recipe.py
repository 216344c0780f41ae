"""The paper's training recipe: SGD, constant warm-up then cosine, Gaussian prompt aggregation."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = ["TrainingRecipe", "build_optimizer", "build_scheduler", "lr_factor"]


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
        optimizer: ``"sgd"`` (the prompt learners' papers) or ``"adamw"`` (Tip-Adapter-F's code).
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


def build_optimizer(network: nn.Module, recipe: TrainingRecipe) -> torch.optim.Optimizer:
    """SGD (or AdamW, ``recipe.optimizer``) over the network's trainable parameters only (frozen CLIP weights are never
    handed to it)."""
    params = [p for p in network.parameters() if p.requires_grad]
    if not params:
        raise ValueError("The network has no trainable parameters.")
    if str(recipe.optimizer).lower() == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay, eps=recipe.eps)
    if str(recipe.optimizer).lower() != "sgd":
        raise ValueError(f"recipe optimizer must be 'sgd' or 'adamw', got '{recipe.optimizer}'.")
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


def lr_factor(epoch: int, recipe: TrainingRecipe) -> float:
    """Learning-rate multiplier for 0-based ``epoch``.

    As in Dassl (the paper's framework): ``warmup_lr`` for the warm-up epochs, then a cosine over ``max_epochs``
    epochs that starts when the warm-up ends (so the last epochs do not quite reach zero).
    """
    if epoch < recipe.warmup_epochs:
        return recipe.warmup_lr / recipe.lr
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - recipe.warmup_epochs) / recipe.max_epochs))


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: TrainingRecipe) -> torch.optim.lr_scheduler.LambdaLR:
    """Epoch-level scheduler of :func:`lr_factor` (step it once per epoch)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(epoch, recipe))
