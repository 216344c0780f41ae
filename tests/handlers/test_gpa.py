"""Gaussian prompt aggregation against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn

from monai_cilmp.handlers import GaussianPromptAggregation, gaussian_epoch_weights


class Prompted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.text_prompts = nn.Parameter(torch.zeros(2, 3))
        self.intervention = nn.Parameter(torch.zeros(4))

    def prompt_parameter_names(self):
        return ["text_prompts"]


def test_weights_match_the_normalised_gaussian():
    w = gaussian_epoch_weights(5, mean=5, std=2.0)
    density = [math.exp(-0.5 * ((e - 5) / 2.0) ** 2) / (2.0 * math.sqrt(2 * math.pi)) for e in range(1, 6)]
    assert w == pytest.approx([d / sum(density) for d in density])
    assert sum(w) == pytest.approx(1.0) and w == sorted(w)
    with pytest.raises(ValueError, match="max_epochs >= 1"):
        gaussian_epoch_weights(0)


def _run(net: Prompted, gpa: GaussianPromptAggregation, epochs: int, stop_after: int | None = None) -> Engine:
    def step(engine, batch):
        with torch.no_grad():  # each epoch sets the parameters to the epoch number
            net.text_prompts.fill_(float(engine.state.epoch))
            net.intervention.fill_(float(engine.state.epoch))

    engine = Engine(step)
    gpa.attach(engine)
    if stop_after is not None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(once=stop_after), lambda e: e.terminate())
    engine.run(range(2), max_epochs=epochs)
    return engine


def test_aggregate_replaces_prompts_only_and_equals_hand_computation():
    net = Prompted()
    _run(net, GaussianPromptAggregation(net, std=3.0), epochs=4)
    w = gaussian_epoch_weights(4, std=3.0)
    expected = sum(we * e for we, e in zip(w, range(1, 5)))
    torch.testing.assert_close(net.text_prompts, torch.full((2, 3), expected))
    torch.testing.assert_close(net.intervention, torch.full((4,), 4.0))  # last value, not aggregated


def test_interrupted_run_keeps_prompts_and_resumes_from_state():
    net = Prompted()
    gpa = GaussianPromptAggregation(net, std=3.0)
    engine = _run(net, gpa, epochs=4, stop_after=2)
    assert engine.state.epoch == 2 and torch.all(net.text_prompts == 2.0)
    state = gpa.state_dict()

    resumed_net = Prompted()
    resumed = GaussianPromptAggregation(resumed_net, std=3.0)
    resumed.load_state_dict(state)

    def step(e, batch):
        with torch.no_grad():
            resumed_net.text_prompts.fill_(float(e.state.epoch))

    continued = Engine(step)
    resumed.attach(continued)
    continued.state.epoch, continued.state.max_epochs = 2, 4
    continued.state.iteration = 4
    continued.run(range(2), max_epochs=4)
    w = gaussian_epoch_weights(4, std=3.0)
    torch.testing.assert_close(
        resumed_net.text_prompts, torch.full((2, 3), sum(we * e for we, e in zip(w, range(1, 5))))
    )


def test_unknown_parameter_names_are_reported():
    with pytest.raises(ValueError, match=r"no parameters named \['ctx'\]"):
        GaussianPromptAggregation(Prompted(), ["ctx"])
