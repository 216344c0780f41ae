"""ProGrad: prompt-aligned gradient (Zhu, Niu, Han, Wu, Zhang, "Prompt-aligned Gradient for Prompt Tuning",
ICCV 2023).

CoOp's learned context overfits the few training images and forgets what zero-shot CLIP knew. ProGrad keeps
CoOp's network and loss but changes each update: the *general direction* is the gradient ``h`` of the KL divergence
between zero-shot CLIP's prediction (hand-written prompt "a photo of a {class}.") and the model's, and the
*domain-specific direction* is the gradient ``g`` of the cross-entropy. When ``g`` agrees with ``h`` it is used as it
is; when it conflicts (``g . h < 0``), only its part orthogonal to ``h`` is used (``g - lambda (g.h/|h|^2) h``), so
that few-shot learning never pushes against the general knowledge. The KL term itself is not added to the loss.

In this package the network supplies the KL term through :meth:`ProGrad.guide_loss` and the engine's
:class:`~monai_cilmp.handlers.GradientProjection` does the projection for every trained tensor, between the
backward pass and the optimiser step. Only the context trains, as in CoOp.

The authors' code (BiomedCoOp's ``trainers/ProGrad``, after ProGrad's own) computes the soft cross-entropy
``-sum_c p_zs log p_model`` and logs it as ``kl_loss``; :meth:`ProGrad.guide_loss` is the true KL divergence, which
differs from it by the teacher's entropy, a constant of the context: the gradients, and so the projected updates,
are the same, only the number differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from monai_cilmp.networks.backbone_spec import BackboneLike
from monai_cilmp.networks.backbones import Backbone

from .base import as_plain_tensor
from .coop import CoOp
from .distillation import teacher_kl
from .kgcoop import DEFAULT_HANDCRAFTED_TEMPLATE

__all__ = ["ProGrad"]


class ProGrad(CoOp):
    """CoOp trained with prompt-aligned gradients (the engine projects; see the module docstring).

    Args:
        class_names: class names in label order; ``_`` reads as a space.
        backbone: the frozen backbone: a :class:`~monai_cilmp.networks.BackboneSpec`, a loaded ``Backbone``, or a
            model name with ``pretrained`` and ``backbone_options`` (:func:`~monai_cilmp.networks.resolve_backbone`).
        n_ctx: number of context tokens.
        ctx_init: text initialising the context (``None``: random).
        class_specific: one context per class.
        temperature: ``T`` of the KL guide (1 in the paper).
        template: the zero-shot prompt template (``{}`` is the class name).
        truncate_context: run the text encoder only up to the longest prompt (exact).
    """

    def __init__(
        self,
        class_names: Sequence[str],
        backbone: BackboneLike = "ViT-B-16",
        pretrained: str | None = "openai",
        *,
        n_ctx: int = 4,
        ctx_init: str | None = "a photo of a",
        class_specific: bool = False,
        temperature: float = 1.0,
        template: str = DEFAULT_HANDCRAFTED_TEMPLATE,
        truncate_context: bool = True,
        **backbone_options: Any,
    ) -> None:
        if "{}" not in template or temperature <= 0:
            raise ValueError(
                f"ProGrad needs a template with '{{}}' and temperature > 0, got '{template}' and {temperature}."
            )
        self.template, self.temperature = template, float(temperature)
        super().__init__(
            class_names,
            backbone,
            pretrained,
            **backbone_options,
            n_ctx=n_ctx,
            ctx_init=ctx_init,
            class_specific=class_specific,
            truncate_context=truncate_context,
        )
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def _setup_extra(self, backbone: Backbone) -> None:
        prompts = {n: [self.template.format(n.replace("_", " "))] for n in self.class_names}
        self.register_buffer("zero_shot_embeddings", self._class_text_embeddings(prompts), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, C)``; in training also keeps zero-shot CLIP's logits of the same images."""
        z = self.encode_image(as_plain_tensor(images))
        logits = self._logits(z, self.encode_prompts(z))
        if self.training and torch.is_grad_enabled():
            self._last = (logits, self._logits(z, self.zero_shot_embeddings).detach())
        else:
            self._last = None
        return logits

    def guide_loss(self) -> torch.Tensor | None:
        """``T^2 KL(p_zero-shot || p_model)`` of the last training forward (``None`` without one): the true KL, not
        the soft cross-entropy the authors' code logs under that name (same gradient)."""
        last, self._last = self._last, None
        if last is None:
            return None
        return teacher_kl(last[0], last[1], self.temperature, per="sample")
