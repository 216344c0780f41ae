"""CoCoOp: conditional context optimisation (Zhou et al., "Conditional Prompt Learning for Vision-Language Models",
CVPR 2022).

CoOp's shared context plus an image-dependent shift: a small meta-network (``Linear(e, e/16) - ReLU -
Linear(e/16, width)``) maps the normalised image embedding to one vector ``pi(x)`` that is added to every context
token, so each image gets its own class prompts (the text encoder runs ``B * C`` prompts per batch). Trainable:
the context and the meta-network (35,360 scalars for ViT-B/16 with 4 context tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from monai_cilmp.networks.backbone_spec import BackboneLike
from monai_cilmp.networks.backbones import Backbone

from .coop import CoOp

__all__ = ["CoCoOp"]


class CoCoOp(CoOp):
    """Image-conditioned context on a frozen open_clip backbone.

    Args:
        class_names: class names in label order; ``_`` reads as a space.
        backbone: the frozen backbone: a :class:`~monai_cilmp.networks.BackboneSpec`, a loaded ``Backbone``, or a
            model name with ``pretrained`` and ``backbone_options`` (:func:`~monai_cilmp.networks.resolve_backbone`).
        n_ctx: number of context tokens (CoCoOp's default 4).
        ctx_init: text initialising the context (default ``"a photo of a"``; ``None``: random).
        meta_reduction: the meta-network's hidden size is ``embed_dim // meta_reduction`` (16 in the paper).
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
        meta_reduction: int = 16,
        truncate_context: bool = True,
        **backbone_options: Any,
    ) -> None:
        self._meta_reduction = int(meta_reduction)
        super().__init__(
            class_names,
            backbone,
            pretrained,
            **backbone_options,
            n_ctx=n_ctx,
            ctx_init=ctx_init,
            class_specific=False,
            truncate_context=truncate_context,
        )

    def _setup_extra(self, backbone: Backbone) -> None:
        embed_dim, width = self._embed_dim(backbone.model), self.text_tower.width
        hidden = max(1, embed_dim // self._meta_reduction)
        self.meta_net = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, width))

    def encode_prompts(self, image_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """Class text features ``(B, C, embed_dim)``, one prompt set per image.

        Args:
            image_embeddings: ``(B, embed_dim)`` normalised image embeddings.
        """
        if image_embeddings is None:
            raise ValueError("CoCoOp needs the image embeddings to build its prompts.")
        shift = self.meta_net(image_embeddings.float())
        return self.text_features(shift)
