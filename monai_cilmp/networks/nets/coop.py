"""CoOp: context optimisation (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022).

The hand-written words of a prompt template ("a photo of a") are replaced by ``n_ctx`` learnable token embeddings
at the input of the frozen text encoder: ``[SOT] ctx_1 .. ctx_n <class name> . [EOT]``. The context is shared by
all classes ("unified") or learned per class ("class-specific", CSC). CoOp's other class-token positions put the
class name in the middle of the context (``ctx_1 .. ctx_{n/2} <name> ctx_{n/2+1} .. ctx_n .``) or in front of it
(``<name> ctx_1 .. ctx_n .``), as its code's ``CLASS_TOKEN_POSITION`` does. The image side is plain CLIP. Only
the context trains: ``n_ctx * width`` scalars (8,192 for ViT-B/16 with 16 tokens), ``C`` times that with CSC.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_cilmp.networks.backbone_spec import BackboneLike
from monai_cilmp.networks.backbones import Backbone
from monai_cilmp.networks.blocks.towers import build_text_tower, build_vision_tower

from .base import CLIPClassifier, OptionEnum, as_plain_tensor, look_up, splice_tokens

__all__ = ["ClassTokenPosition", "CoOp"]


class ClassTokenPosition(OptionEnum):
    """Where CoOp's prompt puts the class name relative to the learned context."""

    END = "end"
    MIDDLE = "middle"
    FRONT = "front"


def class_token_order(
    slot_start: int, n_ctx: int, name_lengths: Sequence[int], length: int, position: str
) -> torch.Tensor:
    """``(C, length)`` source positions that move each class's name (``name_lengths[c]`` tokens right after the
    ``n_ctx`` context slots from ``slot_start``) to ``position``; the other tokens keep their places."""
    rows = []
    for name_length in name_lengths:
        context = list(range(slot_start, slot_start + n_ctx))
        name = list(range(slot_start + n_ctx, slot_start + n_ctx + name_length))
        if position == ClassTokenPosition.FRONT:
            moved = name + context
        elif position == ClassTokenPosition.MIDDLE:
            half = n_ctx // 2
            moved = context[:half] + name + context[half:]
        else:
            moved = context + name
        rows.append(list(range(slot_start)) + moved + list(range(slot_start + n_ctx + name_length, length)))
    return torch.tensor(rows, dtype=torch.long)


class CoOp(CLIPClassifier):
    """Learnable text context on a frozen open_clip backbone.

    Args:
        class_names: class names in label order; ``_`` reads as a space.
        backbone: the frozen backbone: a :class:`~monai_cilmp.networks.BackboneSpec`, a loaded ``Backbone``, or a
            model name with ``pretrained`` and ``backbone_options`` (:func:`~monai_cilmp.networks.resolve_backbone`).
        n_ctx: number of learnable context tokens (CoOp's default 16).
        ctx_init: text whose token embeddings initialise the context (``None``: N(0, 0.02²), CoOp's default); it
            must have ``n_ctx`` tokens (``"a photo of a"`` has 4).
        class_specific: one context per class (CoOp's CSC) instead of one shared by all classes.
        truncate_context: run the text encoder only up to the longest prompt (exact: its attention is causal).
        class_token_position: ``"end"`` (CoOp's default), ``"middle"`` or ``"front"``: where the class name sits
            relative to the context (module docstring).

    Raises:
        ValueError: ``ctx_init`` does not have ``n_ctx`` tokens, a prompt does not fit the text context, or an
            unknown ``class_token_position``.
    """

    prompt_parameters = ("ctx",)

    def __init__(
        self,
        class_names: Sequence[str],
        backbone: BackboneLike = "ViT-B-16",
        pretrained: str | None = "openai",
        *,
        n_ctx: int = 16,
        ctx_init: str | None = None,
        class_specific: bool = False,
        truncate_context: bool = True,
        class_token_position: str = ClassTokenPosition.END,
        **backbone_options: Any,
    ) -> None:
        super().__init__()
        backbone = self._init_classifier(class_names, backbone, pretrained, **backbone_options)
        self.class_token_position = look_up(class_token_position, ClassTokenPosition)
        if n_ctx < 1:
            raise ValueError(f"n_ctx must be >= 1, got {n_ctx}.")
        self.n_ctx, self.class_specific = int(n_ctx), bool(class_specific)
        self.text_tower = build_text_tower(backbone.model, backbone.tokenizer)
        self.vision_tower = build_vision_tower(backbone.model)
        texts = [f"{name.replace('_', ' ')}." for name in self.class_names]
        self._build_prompts(texts, [self.n_ctx] * len(texts), truncate=truncate_context)
        self.register_buffer("token_order", None, persistent=False)
        if self.class_token_position != ClassTokenPosition.END:
            lengths = [len(self.text_tower.encode(name.replace("_", " "))) for name in self.class_names]
            order = class_token_order(
                self.slot_start, self.n_ctx, lengths, self.prompt_embeddings.shape[1], self.class_token_position
            )
            self.register_buffer("token_order", order, persistent=False)
        ctx = self._context_init(ctx_init, self.n_ctx, self.text_tower.width)
        if self.class_specific:
            ctx = ctx.expand(len(texts), -1, -1).clone()
            if not ctx_init:  # independent random contexts per class
                ctx = torch.randn_like(ctx) * 0.02
        self.ctx = nn.Parameter(ctx)
        self._setup_extra(backbone)
        self.text_tower.release_embeddings()

    def _setup_extra(self, backbone: Backbone) -> None:
        """Hook for subclasses: build what they add while the text tower still has its token table."""

    def prompt_tokens(self, ctx_shift: torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings of the class prompts, ``(N, C, T, width)``.

        Args:
            ctx_shift: ``(B, width)`` shift added to every context token per image (CoCoOp); ``None``: ``N = 1``.
        """
        ctx = self.ctx if self.class_specific else self.ctx.unsqueeze(0)  # (C or 1, n_ctx, width)
        ctx = ctx.unsqueeze(0)
        if ctx_shift is not None:
            ctx = ctx + ctx_shift[:, None, None, :].to(ctx.dtype)
        x = splice_tokens(self.prompt_embeddings.unsqueeze(0), self.slot_start, ctx)
        if self.token_order is None:
            return x
        index = self.token_order[None, :, :, None].expand(x.shape[0], -1, -1, x.shape[-1])
        return x.gather(2, index)

    def text_features(self, ctx_shift: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised class text features ``(N, C, embed_dim)`` of the learned prompts (``N = 1`` without shift)."""
        x = self.prompt_tokens(ctx_shift)
        n_img, n_cls = x.shape[:2]
        features = self.text_tower(x.flatten(0, 1), self.pool_index.repeat(n_img))
        return F.normalize(features.view(n_img, n_cls, -1), dim=-1)

    def encode_prompts(self, image_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """Class text features ``(1, C, embed_dim)``: CoOp's prompts do not depend on the image."""
        return self.text_features()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, C)`` for a normalised image batch ``(B, 3, H, W)``."""
        z = self.encode_image(as_plain_tensor(images))
        return self._logits(z, self.encode_prompts(z))
