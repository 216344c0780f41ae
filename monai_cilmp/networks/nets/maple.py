"""MaPLe: multi-modal prompt learning (Khattak, Rasheed, Maaz, Khan, Khan, "MaPLe: Multi-modal Prompt Learning",
CVPR 2023).

Deep prompts on both encoders, as in independent V-L prompting (:class:`~monai_cilmp.networks.nets.IVLP`), but the
visual prompts are not learned on their own: at each of the first ``J`` layers the image prompts are a linear
function of that layer's text prompts, ``P_v^j = F_j(P_t^j)`` with ``F_j`` a learned ``Linear(d_t, d_v)`` (the
vision-language *coupling function*). Gradients of the image side therefore flow into the text prompts too, which
keeps the two modalities' prompts in step. The defaults are the paper's: ``J = 9`` layers, 2 context tokens. Trainable:
the deep text prompts and the ``J`` coupling layers (about 3.55 M scalars for ViT-B/16).

As the authors' code (muzairkhattak/multimodal-prompt-learning, ``trainers/maple.py``) does:

- the prompt is ``ctx_init`` with its first ``n_ctx`` words learned and the rest kept before the class name: with
  ``ctx_init="a photo of a"`` and 2 tokens, ``[ctx ctx] of a {class}.`` (``keep_init_words=False`` drops the rest:
  ``[ctx ctx] {class}.``);
- the first layer's coupling is initialised on its own, and the couplings of layers 2..J start as copies of one
  random layer (``copy_deep_couplings=False``: each initialised independently).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_cilmp.networks.backbone_spec import BackboneLike

from .ivlp import IVLP

__all__ = ["MaPLe"]


class MaPLe(IVLP):
    """Deep text prompts coupled to deep image prompts by per-layer linear maps.

    Args:
        class_names: class names in label order; ``_`` reads as a space.
        backbone: the frozen backbone: a :class:`~monai_cilmp.networks.BackboneSpec`, a loaded ``Backbone``, or a
            model name with ``pretrained`` and ``backbone_options`` (:func:`~monai_cilmp.networks.resolve_backbone`).
        n_ctx: number of prompt tokens per layer (both modalities).
        ctx_init: text initialising the input text prompts: its first ``n_ctx`` words (which must be ``n_ctx``
            tokens); the words after them stay in the prompt before the class name with ``keep_init_words``.
        prompt_depth: ``J``, the number of layers of each encoder with prompts.
        keep_init_words: keep the words of ``ctx_init`` after the first ``n_ctx`` in the prompt (the authors' code).
        copy_deep_couplings: layers 2..J's couplings start as copies of one random layer (the authors' code).
        truncate_context: run the text encoder only up to the longest prompt (exact).

    Raises:
        ValueError: ``prompt_depth`` larger than an encoder, or ``ctx_init`` that does not have ``n_ctx`` tokens.
    """

    prompt_parameters = ("text_prompts",)

    def __init__(
        self,
        class_names: Sequence[str],
        backbone: BackboneLike = "ViT-B-16",
        pretrained: str | None = "openai",
        *,
        n_ctx: int = 2,
        ctx_init: str | None = "a photo of a",
        prompt_depth: int = 9,
        keep_init_words: bool = True,
        copy_deep_couplings: bool = True,
        truncate_context: bool = True,
        **backbone_options: Any,
    ) -> None:
        if ctx_init:
            words = ctx_init.replace("_", " ").split()
            ctx_init = " ".join(words[:n_ctx])
            if keep_init_words and len(words) > n_ctx:
                self.words_before_class = " ".join(words[n_ctx:]) + " "
        super().__init__(
            class_names,
            backbone,
            pretrained,
            **backbone_options,
            n_ctx=n_ctx,
            ctx_init=ctx_init,
            text_prompt_depth=prompt_depth,
            vision_prompt_depth=0,
            n_ctx_vision=0,
            truncate_context=truncate_context,
        )
        if prompt_depth > self.vision_tower.num_layers:
            raise ValueError(
                f"prompt_depth must be at most the image encoder's {self.vision_tower.num_layers} layers, "
                f"got {prompt_depth}."
            )
        self.prompt_depth = int(prompt_depth)
        width_t, width_v = self.text_tower.width, self.vision_tower.width
        layers = [nn.Linear(width_t, width_v) for _ in range(self.prompt_depth if not copy_deep_couplings else 1)]
        if copy_deep_couplings and self.prompt_depth > 1:
            deep = nn.Linear(width_t, width_v)
            layers += [copy.deepcopy(deep) for _ in range(self.prompt_depth - 1)]
        self.coupling = nn.ModuleList(layers)

    def coupled_vision_prompts(self) -> torch.Tensor:
        """The image prompts ``(J, n_ctx, d_v)``: layer ``j``'s text prompts through the coupling ``F_j``."""
        return torch.stack([f(self.text_prompts[j]) for j, f in enumerate(self.coupling)])

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised embeddings ``(B, embed_dim)`` with the coupled image prompts."""
        return F.normalize(self.vision_tower(images, self.coupled_vision_prompts()), dim=-1)
