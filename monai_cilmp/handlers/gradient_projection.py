"""Prompt-aligned gradient projection (ProGrad's update rule) as an Ignite handler for MONAI's trainers.

ProGrad (Zhu et al., "Prompt-aligned Gradient for Prompt Tuning", ICCV 2023) keeps a prompt from drifting away from
CLIP's general knowledge by changing the *direction* of each update rather than adding a loss term: let ``g`` be the
gradient of the classification loss of a trained tensor and ``h`` the gradient of a *guide* loss (ProGrad: the KL
divergence from the zero-shot prediction). When the two agree (``g . h >= 0``) the update uses ``g`` unchanged;
when they conflict, it uses ``g`` minus ``lambda`` times its component along ``h``::

    g' = g - lambda * (g . h / ||h||^2) h          if g . h < 0,   else g' = g

so that (for ``lambda = 1``) a step never increases the guide loss to first order. The rule applies to each trained
tensor separately. The network names its guide loss through ``guide_loss()``
(:meth:`~monai_cilmp.networks.nets.CLIPClassifier.guide_loss`), computed from its last training forward.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["GradientProjection", "project_conflicting"]


def project_conflicting(grad: torch.Tensor, guide: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """``grad`` with ``strength`` times its component along ``guide`` removed when the two point against each other.

    Args:
        grad: the gradient of the main loss.
        guide: the gradient of the guide loss (same shape).
        strength: ``lambda`` (1: the full projection).
    """
    g, h = grad.flatten().double(), guide.flatten().double()
    dot, norm2 = torch.dot(g, h), torch.dot(h, h)
    if dot >= 0 or norm2 == 0:
        return grad
    return (g - strength * (dot / norm2) * h).view_as(grad).to(grad.dtype)


class GradientProjection:
    """Project each trained tensor's gradient off the network's guide-loss gradient where they conflict.

    Attached to a MONAI ``SupervisedTrainer``: after the loss of an iteration (``LOSS_COMPLETED``) it takes the
    gradient of ``network.guide_loss()`` (kept graph, no ``.grad`` written); after the backward pass
    (``BACKWARD_COMPLETED``, before the optimiser step) it replaces every ``p.grad`` by
    :func:`project_conflicting`. With mixed-precision loss scaling the rule is unchanged (it is linear in ``g``
    and uses only the direction of ``h``). An iteration whose guide loss is ``None`` is left alone.

    Args:
        network: the trained network (unwrapped), with ``guide_loss()``.
        strength: ``lambda`` of the projection.
    """

    def __init__(self, network: nn.Module, strength: float = 1.0) -> None:
        if strength < 0:
            raise ValueError(f"The projection strength must be >= 0, got {strength}.")
        self.network, self.strength = network, float(strength)
        self._guide: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def attach(self, engine: Engine) -> None:
        from monai.engines.utils import IterationEvents

        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self.guide_gradients)
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self.project)

    def guide_gradients(self, engine: Engine | None = None) -> None:
        """Compute and keep the guide loss's gradient of every trained tensor."""
        self._guide = None
        loss = self.network.guide_loss()
        if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
            return
        params = [p for p in self.network.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        self._guide = [(p, g) for p, g in zip(params, grads) if g is not None]

    @torch.no_grad()
    def project(self, engine: Engine | None = None) -> None:
        """Replace each gradient by its projection (when it conflicts with the guide's)."""
        for p, h in self._guide or ():
            if p.grad is not None:
                p.grad = project_conflicting(p.grad, h, self.strength)
        self._guide = None
