"""ProGrad's projection rule, and the handler that applies it between the backward pass and the optimiser step."""

from __future__ import annotations

import torch
from torch import nn

from monai_cilmp.handlers import GradientProjection, project_conflicting


def test_projection_against_a_hand_written_reading():
    g, h = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, 1.0])
    dot = 1 * 0 + (-2) * 1 + 0.5 * 1  # -1.5 < 0: conflict
    expected = g - (dot / 2.0) * h  # |h|^2 = 2
    torch.testing.assert_close(project_conflicting(g, h), expected)
    assert float(torch.dot(project_conflicting(g, h), h)) == 0.0  # nothing left against the guide
    torch.testing.assert_close(project_conflicting(g, h, strength=0.5), g - 0.5 * (dot / 2.0) * h)
    agreeing = torch.tensor([1.0, 2.0, 0.0])
    assert project_conflicting(agreeing, h) is agreeing  # no conflict: unchanged
    assert project_conflicting(g, torch.zeros(3)) is g


class Toy(nn.Module):
    """Two parameters; the main loss pulls ``w`` one way, the guide another."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 1.0]))
        self.v = nn.Parameter(torch.tensor([2.0]))

    def guide_loss(self):
        return (self.w * torch.tensor([0.0, 1.0])).sum() + self.v.sum()


def test_handler_projects_each_trained_tensor_off_the_guide_gradient():
    net = Toy()
    main = (net.w * torch.tensor([1.0, -1.0])).sum() - net.v.sum()  # grad w: (1, -1); grad v: (-1)
    handler = GradientProjection(net)
    handler.guide_gradients()  # guide grads: w (0, 1), v (1)
    main.backward()
    handler.project()
    torch.testing.assert_close(net.w.grad, torch.tensor([1.0, 0.0]))  # (1,-1) - (-1/1)(0,1)
    torch.testing.assert_close(net.v.grad, torch.tensor([0.0]))  # -1 - (-1/1) 1
    net.zero_grad()
    handler.guide_gradients()
    (net.w.sum() + net.v.sum()).backward()  # agrees with the guide: unchanged
    handler.project()
    torch.testing.assert_close(net.w.grad, torch.tensor([1.0, 1.0]))
