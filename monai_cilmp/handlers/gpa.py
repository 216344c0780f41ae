"""Gaussian prompt aggregation (GPA, from PromptSRC) as an Ignite handler."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["GaussianPromptAggregation", "gaussian_epoch_weights"]


def gaussian_epoch_weights(max_epochs: int, mean: float | None = None, std: float = 30.0) -> list[float]:
    """Weights ``N(e; mean, std)`` of epochs ``e = 1..max_epochs``, normalised to sum to one.

    Args:
        max_epochs: number of training epochs.
        mean: centre of the Gaussian (default: ``max_epochs``, so late epochs weigh most).
        std: its standard deviation, in epochs.
    """
    if max_epochs < 1 or std <= 0:
        raise ValueError(f"GPA needs max_epochs >= 1 and std > 0, got {max_epochs} and {std}.")
    mean = float(max_epochs if mean is None else mean)
    density = [math.exp(-0.5 * ((e - mean) / std) ** 2) for e in range(1, max_epochs + 1)]
    total = sum(density)
    return [d / total for d in density]


class GaussianPromptAggregation:
    """Average prompt parameters over epochs with Gaussian weights and install the average when training ends.

    At the end of every epoch ``e`` the named parameters are accumulated with weight ``w_e`` (see
    :func:`gaussian_epoch_weights`); when the last epoch completes, the aggregate replaces them. Other trainable
    parameters (CILMP's interventions and projections) keep their last values, as in the paper's code. The running
    aggregate is part of :meth:`state_dict`, so checkpoints resume it.

    Args:
        network: the trained network.
        parameter_names: parameters to aggregate (default: ``network.prompt_parameter_names()``); may be empty (then
            the handler does nothing).
        mean: Gaussian centre in epochs (default: the engine's ``max_epochs``).
        std: Gaussian standard deviation in epochs.
    """

    #: the run's checkpoints save and restore this handler's state (``state_dict``)
    checkpointed_state = True

    def __init__(
        self,
        network: nn.Module,
        parameter_names: Sequence[str] | None = None,
        mean: float | None = None,
        std: float = 30.0,
    ) -> None:
        self.network = network
        names = list(parameter_names) if parameter_names is not None else list(network.prompt_parameter_names())
        params = dict(network.named_parameters())
        unknown = [n for n in names if n not in params]
        if unknown:
            raise ValueError(f"GPA: the network has no parameters named {unknown}; it has {sorted(params)}.")
        self.parameter_names = names
        self.mean, self.std = mean, std
        self.aggregate: dict[str, torch.Tensor] = {}
        self.epochs_accumulated = 0

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self.accumulate)
        engine.add_event_handler(Events.COMPLETED, self.apply)

    def _params(self) -> dict[str, nn.Parameter]:
        params = dict(self.network.named_parameters())
        return {n: params[n] for n in self.parameter_names}

    def accumulate(self, engine: Engine) -> None:
        """Add the current prompts with the weight of the epoch that just completed."""
        epoch, max_epochs = engine.state.epoch, engine.state.max_epochs
        weight = gaussian_epoch_weights(max_epochs, self.mean, self.std)[epoch - 1]
        with torch.no_grad():
            for name, p in self._params().items():
                value = p.detach().float() * weight
                self.aggregate[name] = value if name not in self.aggregate else self.aggregate[name] + value
        self.epochs_accumulated = epoch

    def apply(self, engine: Engine) -> None:
        """Replace the prompts by the aggregate, once every epoch has been accumulated."""
        if not self.aggregate or self.epochs_accumulated < engine.state.max_epochs:
            return  # an interrupted run keeps its last prompts; its aggregate lives on in the checkpoint
        with torch.no_grad():
            for name, p in self._params().items():
                p.copy_(self.aggregate[name].to(p.dtype))

    def state_dict(self) -> dict[str, Any]:
        return {"aggregate": {k: v.cpu() for k, v in self.aggregate.items()}, "epochs": self.epochs_accumulated}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        params = self._params()
        self.aggregate = {k: v.to(params[k].device) if k in params else v for k, v in state["aggregate"].items()}
        self.epochs_accumulated = int(state["epochs"])
