"""CILMP: Conditional Intervention of Large language models for Medical image Prompt tuning (Du et al., IEEE TMI 2025).

See ``docs/method.md`` for the method. In short: each class's LLM knowledge ``K_c`` (a knowledge bank) is
edited by low-rank interventions conditioned on the image, projected into CLIP's text space and placed in the
class prompt at every text layer, next to deep learnable context tokens; the image side gets deep visual
prompts. Only those prompts, interventions and projections train; CLIP stays frozen.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_cilmp.knowledge import KnowledgeBank
from monai_cilmp.networks.backbone_spec import BackboneLike
from monai_cilmp.networks.blocks.fused_block import shared_prefix_pays
from monai_cilmp.networks.blocks.knowledge_prompt import KnowledgePrompt
from monai_cilmp.networks.blocks.towers import build_text_tower, build_vision_tower

from .base import CLIPClassifier, as_plain_tensor

__all__ = ["CILMP"]


class CILMP(CLIPClassifier):
    """The CILMP classifier on a frozen open_clip backbone.

    Args:
        class_names: class names in label order (label ``i`` is ``class_names[i]``); ``_`` reads as a space.
        knowledge: a :class:`~monai_cilmp.knowledge.KnowledgeBank` or the path of a saved one; it must hold
            exactly ``class_names``. ``None`` removes the knowledge tokens (independent V-L prompting; the prompts
            are then the same for every image, whatever ``conditional`` says).
        backbone: the frozen backbone: a :class:`~monai_cilmp.networks.BackboneSpec`, a loaded ``Backbone``, or a
            model name with ``pretrained`` and ``backbone_options`` (:func:`~monai_cilmp.networks.resolve_backbone`).
        n_ctx: number of learnable text context tokens.
        ctx_init: text whose token embeddings initialise the input context (``None``: random init); it must have
            ``n_ctx`` tokens.
        text_prompt_depth: number of text layers that get their own context tokens (>= 1).
        knowledge_depth: number of text layers that get their own knowledge tokens, between 1 and
            ``text_prompt_depth`` (``None``: ``text_prompt_depth``, the paper; ``1``: the shallow ablation, knowledge
            only at the input layer, later layers carry those positions on like ordinary tokens).
        vision_prompt_depth: number of image layers that get their own visual prompts (0 disables them).
        n_ctx_vision: number of visual prompt tokens.
        prefix_length: knowledge positions edited by the prefix intervention.
        suffix_length: knowledge positions (the last of each class) edited by the suffix intervention.
        rank: rank of the interventions and of the projection.
        dropout: dropout after each intervention, in training.
        conditional: condition the interventions on the image embedding (CILMP); ``False`` gives one prompt per
            class shared by all images (and runs the text encoder ``B`` times less).
        truncate_context: run the text encoder only up to the longest prompt (exact, as CLIP's text attention
            is causal); ``False`` runs the full context, for checking.
        shared_prefix: run the start of the prompts that every prompt shares (the start token and the context
            tokens) once per layer instead of once per prompt (exact, as the text attention is causal): ``True``
            always, ``False`` never, ``None`` where it pays, decided from the device the prompts run on
            (:func:`~monai_cilmp.networks.blocks.fused_block.shared_prefix_pays`: CUDA, not the CPU). Used when the
            text tower supports it (open_clip's causal text transformer), ignored otherwise.

    Raises:
        KnowledgeClassMismatchError: the bank's classes are not ``class_names``.
        ValueError: a hyper-parameter does not fit the backbone (depths, prompt length, ``ctx_init``).
    """

    prompt_parameters = ("text_prompts", "vision_prompts")

    #: fixed words between the context tokens and the class name (MaPLe's code keeps the rest of its ``ctx_init``)
    words_before_class: str = ""

    def __init__(
        self,
        class_names: Sequence[str],
        knowledge: KnowledgeBank | str | os.PathLike | None,
        backbone: BackboneLike = "ViT-B-16",
        pretrained: str | None = "openai",
        *,
        n_ctx: int = 4,
        ctx_init: str | None = "a photo of a",
        text_prompt_depth: int = 12,
        knowledge_depth: int | None = None,
        vision_prompt_depth: int = 12,
        n_ctx_vision: int = 4,
        prefix_length: int = 4,
        suffix_length: int = 4,
        rank: int = 8,
        dropout: float = 0.1,
        conditional: bool = True,
        truncate_context: bool = True,
        shared_prefix: bool | None = None,
        **backbone_options: Any,
    ) -> None:
        super().__init__()
        backbone = self._init_classifier(class_names, backbone, pretrained, **backbone_options)
        class_names = self.class_names
        bank = None
        if knowledge is not None:
            bank = knowledge if isinstance(knowledge, KnowledgeBank) else KnowledgeBank.load(knowledge)
            bank.check_classes(class_names)
        self.text_tower = build_text_tower(backbone.model, backbone.tokenizer)
        self.vision_tower = build_vision_tower(backbone.model)
        self.n_ctx, self.conditional = int(n_ctx), bool(conditional) and bank is not None
        self.text_prompt_depth, self.vision_prompt_depth = int(text_prompt_depth), int(vision_prompt_depth)
        self.knowledge_depth = self.text_prompt_depth if knowledge_depth is None else int(knowledge_depth)
        self._check_depths(n_ctx_vision)

        width = self.text_tower.width
        texts = [f"{self.words_before_class}{name.replace('_', ' ')}." for name in class_names]
        if bank is not None:
            padded, lengths = bank.padded(class_names)
        else:
            padded, lengths = None, torch.zeros(len(class_names), dtype=torch.long)
        self._build_prompts(texts, (self.n_ctx + lengths).tolist(), truncate=truncate_context)
        self.max_knowledge = int(lengths.max())
        self.text_prompts = nn.Parameter(self._init_text_prompts(ctx_init, width))
        self.text_tower.release_embeddings()
        self.vision_prompts = (
            nn.Parameter(torch.randn(self.vision_prompt_depth, n_ctx_vision, self.vision_tower.width) * 0.02)
            if self.vision_prompt_depth and n_ctx_vision
            else None
        )
        self.knowledge = (
            KnowledgePrompt(
                padded,
                lengths,
                out_dim=width,
                num_layers=self.knowledge_depth,
                prefix_length=prefix_length,
                suffix_length=suffix_length,
                rank=rank,
                cond_dim=self._embed_dim(backbone.model) if self.conditional else None,
                dropout=dropout,
            )
            if bank is not None
            else None
        )
        supported = getattr(self.text_tower, "supports_shared_prefix", False)
        self.shared_prefix = (None if shared_prefix is None else bool(shared_prefix)) if supported else False
        self._register_slot_index()
        self.knowledge_metadata: dict[str, Any] = (
            {k: v for k, v in bank.metadata.items() if k != "texts"} if bank is not None else {}
        )

    def _check_depths(self, n_ctx_vision: int) -> None:
        text_layers, vision_layers = self.text_tower.num_layers, self.vision_tower.num_layers
        if not 1 <= self.text_prompt_depth <= text_layers:
            raise ValueError(
                f"text_prompt_depth must be between 1 and the text encoder's {text_layers} layers, "
                f"got {self.text_prompt_depth}."
            )
        if not 0 <= self.vision_prompt_depth <= vision_layers:
            raise ValueError(
                f"vision_prompt_depth must be between 0 and the image encoder's {vision_layers} layers, "
                f"got {self.vision_prompt_depth}."
            )
        if not 1 <= self.knowledge_depth <= self.text_prompt_depth:
            raise ValueError(
                f"knowledge_depth must be between 1 and text_prompt_depth ({self.text_prompt_depth}), "
                f"got {self.knowledge_depth}."
            )
        if self.n_ctx < 0 or n_ctx_vision < 0:
            raise ValueError(f"n_ctx and n_ctx_vision must be >= 0, got {self.n_ctx} and {n_ctx_vision}.")

    def _init_text_prompts(self, ctx_init: str | None, width: int) -> torch.Tensor:
        prompts = torch.randn(self.text_prompt_depth, self.n_ctx, width) * 0.02
        if ctx_init:
            prompts[0] = self._context_init(ctx_init, self.n_ctx, width)
        return prompts

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised embeddings ``(B, embed_dim)`` of a normalised ``(B, 3, H, W)`` batch, with visual prompts."""
        return F.normalize(self.vision_tower(images, self.vision_prompts), dim=-1)

    def encode_prompts(self, image_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised class text features ``(B, C, embed_dim)``, or ``(1, C, embed_dim)`` when unconditional.

        Args:
            image_embeddings: ``(B, embed_dim)`` normalised image embeddings; needed when conditional.
        """
        z = image_embeddings if self.conditional else None
        if self.conditional and z is None:
            raise ValueError("A conditional CILMP needs the image embeddings to build its prompts.")
        n_img = 1 if z is None else z.shape[0]
        n_cls, length, width = self.prompt_embeddings.shape
        # every layer's knowledge tokens in one batched pass: (knowledge_depth, B, N, width)
        tokens = self.knowledge.all_layers(z) if self.knowledge is not None else None
        if self.uses_shared_prefix(self.prompt_embeddings.device):
            return self._encode_prompts_shared_prefix(tokens, n_img)

        def inject(layer: int, x: torch.Tensor) -> torch.Tensor:
            if layer >= self.text_prompt_depth:
                return x
            return self._inject(x.view(n_img, n_cls * length, width), layer, tokens).view(n_img * n_cls, length, width)

        x = self.prompt_embeddings.view(1, n_cls * length, width).expand(n_img, -1, -1)
        x = self._inject(x, 0, tokens).view(n_img * n_cls, length, width)
        features = self.text_tower(x, self.pool_index.repeat(n_img), inject)
        return F.normalize(features.view(n_img, n_cls, -1), dim=-1)

    def uses_shared_prefix(self, device: torch.device | str) -> bool:
        """Whether :meth:`encode_prompts` runs the shared prompt start once on ``device`` (see ``shared_prefix``)."""
        return shared_prefix_pays(device) if self.shared_prefix is None else self.shared_prefix

    def _encode_prompts_shared_prefix(self, tokens: torch.Tensor | None, n_img: int) -> torch.Tensor:
        """:meth:`encode_prompts` with the start token and context tokens (the same in every prompt) run once."""
        n_cls, length, width = self.prompt_embeddings.shape
        shared = self.slot_start + self.n_ctx
        rest = length - shared

        def context(layer: int, prefix: torch.Tensor) -> torch.Tensor:
            if layer >= self.text_prompt_depth:
                return prefix
            ctx = self.text_prompts[layer].to(prefix.dtype).unsqueeze(0)
            return torch.cat([prefix[:, : self.slot_start], ctx], dim=1)

        def knowledge(layer: int, x: torch.Tensor) -> torch.Tensor:
            if tokens is None or layer >= self.knowledge_depth:
                return x
            values = tokens[layer].to(x.dtype).expand(n_img, -1, -1)
            flat = x.reshape(n_img, n_cls * rest, width).index_copy(1, self.slot_index_after_prefix, values)
            return flat.view(n_img * n_cls, rest, width)

        prefix = context(0, self.prompt_embeddings[:1, :shared])
        x = self.prompt_embeddings[:, shared:].unsqueeze(0).expand(n_img, -1, -1, -1).reshape(-1, rest, width)
        x = knowledge(0, x)
        features = self.text_tower(x, self.pool_index.repeat(n_img) - shared, knowledge, prefix, context)
        return F.normalize(features.view(n_img, n_cls, -1), dim=-1)

    def _register_slot_index(self) -> None:
        """Buffers of the positions, in the flattened ``(C * T)`` prompt sequence, of the tokens :meth:`_inject` writes,
        in order: every class's context tokens, then the knowledge tokens in the order :class:`KnowledgePrompt`
        returns them."""
        n_cls, length, _ = self.prompt_embeddings.shape
        ctx = (torch.arange(n_cls)[:, None] * length + self.slot_start + torch.arange(self.n_ctx)).flatten()
        self.register_buffer("slot_index_context", ctx, persistent=False)
        if self.knowledge is not None:
            k = self.knowledge
            tokens = k.token_class * length + self.slot_start + self.n_ctx + k.token_position
            self.register_buffer("slot_index_knowledge", torch.cat([ctx, tokens]), persistent=False)
            after_prefix = k.token_class * (length - self.slot_start - self.n_ctx) + k.token_position
            self.register_buffer("slot_index_after_prefix", after_prefix, persistent=False)

    def _inject(self, x: torch.Tensor, layer: int, tokens: torch.Tensor | None) -> torch.Tensor:
        """Write layer ``layer``'s context and knowledge tokens (``tokens[layer]``, from
        :meth:`KnowledgePrompt.all_layers`) into ``x`` of shape ``(B, C * T, width)``.

        One ``index_copy`` per layer puts every prompt's tokens at their positions (padding beyond a class's
        knowledge keeps the prompt's own tokens).
        """
        n_img, _, width = x.shape
        n_cls = self.prompt_embeddings.shape[0]
        with_knowledge = tokens is not None and layer < self.knowledge_depth
        ctx = self.text_prompts[layer].to(x.dtype).expand(n_img, n_cls, -1, -1).reshape(n_img, -1, width)
        values = ctx
        if with_knowledge:
            values = torch.cat([ctx, tokens[layer].to(x.dtype).expand(n_img, -1, -1)], dim=1)
        index = self.slot_index_knowledge if with_knowledge else self.slot_index_context
        return x.index_copy(1, index, values)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, C)`` for a normalised image batch ``(B, 3, H, W)``."""
        z = self.encode_image(as_plain_tensor(images))
        return self._logits(z, self.encode_prompts(z))
