"""PromptSRC: self-regulating prompts (Khattak, Wasim, Naseer, Khan, Yang, Khan, "Self-regulating Prompts:
Foundational Model Adaptation without Forgetting", ICCV 2023).

Deep vision-language prompts (independent V-L prompting, :class:`~monai_cilmp.networks.nets.IVLP`: 4 tokens at
the first 9 layers of each encoder) that are kept from forgetting frozen CLIP by three consistency terms against
the *same* model without prompts, added to the cross-entropy:

- text: ``lambda_t * mean |w_c - w_c^0|`` (L1) between the prompted class features and frozen CLIP's features of
  a hand-written template ensemble, ``w_c^0`` the normalised mean of the templates' *raw* text embeddings (as the
  authors' code, muzairkhattak/PromptSRC, builds it: it averages before normalising, where a zero-shot ensemble
  usually averages normalised embeddings; ``normalize_templates=True`` gives that reading);
- image: ``lambda_i * mean |z - z^0|`` (L1) between the prompted and the frozen image features of the batch;
- logits: ``KL(p^0 || p)`` summed and divided by the number of logits, between frozen CLIP's prediction
  (``z^0`` against ``w^0``) and the prompted one.

and by **Gaussian prompt aggregation**: the prompts of every epoch are averaged with Gaussian weights over the
epochs (the engine's :class:`~monai_cilmp.handlers.GaussianPromptAggregation`, which CILMP borrowed from this
paper). The paper's weights are ``lambda_t = 25`` and ``lambda_i = 10``; its template ensemble is ImageNet's, ours
the medical one (:data:`~monai_cilmp.networks.nets.MEDICAL_TEMPLATES`). The frozen image features cost one extra
pass of the image encoder per training step (without gradients). Only the prompts train.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from monai_cilmp.networks.backbone_spec import BackboneLike, resolve_backbone
from monai_cilmp.networks.blocks.towers import build_text_tower

from .base import as_plain_tensor
from .distillation import teacher_kl
from .ivlp import IVLP
from .zeroshot import MEDICAL_TEMPLATES, zero_shot_texts

__all__ = ["PromptSRC"]


class PromptSRC(IVLP):
    """Deep V-L prompts with mutual-agreement regularisation toward frozen CLIP (and GPA in the recipe).

    Args:
        class_names: class names in label order; ``_`` reads as a space.
        backbone: the frozen backbone: a :class:`~monai_cilmp.networks.BackboneSpec`, a loaded ``Backbone``, or a
            model name with ``pretrained`` and ``backbone_options`` (:func:`~monai_cilmp.networks.resolve_backbone`).
        n_ctx: number of text context tokens per layer.
        ctx_init: text initialising the input context (``None``: random); must have ``n_ctx`` tokens.
        text_prompt_depth: text layers with their own context tokens.
        vision_prompt_depth: image layers with their own visual prompts.
        n_ctx_vision: number of visual prompt tokens.
        text_weight: ``lambda_t``.
        image_weight: ``lambda_i``.
        logit_weight: weight of the KL term (1 in the paper).
        templates: the frozen text features' template ensemble (``{}`` is the class name).
        normalize_templates: normalise each template's embedding before the ensemble mean (``False``, the authors'
            code: the normalised mean of the raw embeddings).
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
        text_prompt_depth: int = 9,
        vision_prompt_depth: int = 9,
        n_ctx_vision: int = 4,
        text_weight: float = 25.0,
        image_weight: float = 10.0,
        logit_weight: float = 1.0,
        templates: Sequence[str] = MEDICAL_TEMPLATES,
        normalize_templates: bool = False,
        truncate_context: bool = True,
        **backbone_options: Any,
    ) -> None:
        if min(text_weight, image_weight, logit_weight) < 0:
            raise ValueError(
                f"PromptSRC's loss weights must be >= 0, got {text_weight}, {image_weight}, {logit_weight}."
            )
        # loaded here: the frozen text features need the token table
        backbone = resolve_backbone(backbone, pretrained, **backbone_options)
        super().__init__(
            class_names,
            backbone,
            pretrained,
            **backbone_options,
            n_ctx=n_ctx,
            ctx_init=ctx_init,
            text_prompt_depth=text_prompt_depth,
            vision_prompt_depth=vision_prompt_depth,
            n_ctx_vision=n_ctx_vision,
            truncate_context=truncate_context,
        )
        self.text_weight, self.image_weight = float(text_weight), float(image_weight)
        self.logit_weight = float(logit_weight)
        texts = zero_shot_texts(self.class_names, "ensemble", templates=list(templates))
        tower = build_text_tower(backbone.model, backbone.tokenizer)
        frozen = self._class_text_embeddings(texts, tower, normalize_texts=normalize_templates)
        self.register_buffer("frozen_text_features", frozen, persistent=False)
        self._last: tuple[torch.Tensor, ...] | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, C)``; in training also the frozen image features of the same batch."""
        images = as_plain_tensor(images)
        z = self.encode_image(images)
        text = self.encode_prompts(z)
        logits = self._logits(z, text)
        self._last = None
        if self.training and torch.is_grad_enabled():
            with torch.no_grad():
                z0 = F.normalize(self.vision_tower(images, None), dim=-1)
            self._last = (logits, z, text[0], z0)
        return logits

    def regularization_loss(self) -> torch.Tensor | None:
        """The three consistency terms of the last training forward (``None`` without one)."""
        last, self._last = self._last, None
        if last is None:
            return None
        logits, z, text, z0 = last
        frozen_text = self.frozen_text_features.to(text.device)
        loss_text = F.l1_loss(text.float(), frozen_text)
        loss_image = F.l1_loss(z.float(), z0.float())
        loss_logits = teacher_kl(logits, self._logits(z0, frozen_text), per="logit")
        return self.text_weight * loss_text + self.image_weight * loss_image + self.logit_weight * loss_logits
