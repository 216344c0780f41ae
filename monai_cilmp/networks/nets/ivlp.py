"""Independent vision-language prompting (IVLP): deep text and deep visual prompts, no knowledge.

The baseline of MaPLe (Khattak et al., CVPR 2023): learnable context tokens at the first ``text_prompt_depth``
text layers and visual prompt tokens at the first ``vision_prompt_depth`` image layers, learned independently.
It is exactly :class:`~monai_cilmp.networks.nets.CILMP` with the knowledge tokens removed (``knowledge=None``),
so comparing the two isolates what the LLM knowledge adds; this class only fixes that option.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai_cilmp.networks.backbone_spec import BackboneLike

from .cilmp import CILMP

__all__ = ["IVLP"]


class IVLP(CILMP):
    """CILMP's deep vision-language prompts without knowledge tokens (and so without conditioning).

    Args:
        class_names: class names in label order; ``_`` reads as a space.
        backbone: the frozen backbone: a :class:`~monai_cilmp.networks.BackboneSpec`, a loaded ``Backbone``, or a
            model name with ``pretrained`` and ``backbone_options`` (:func:`~monai_cilmp.networks.resolve_backbone`).
        n_ctx: number of text context tokens per layer.
        ctx_init: text initialising the input context (``None``: random); must have ``n_ctx`` tokens.
        text_prompt_depth: text layers with their own context tokens.
        vision_prompt_depth: image layers with their own visual prompts.
        n_ctx_vision: number of visual prompt tokens.
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
        text_prompt_depth: int = 12,
        vision_prompt_depth: int = 12,
        n_ctx_vision: int = 4,
        truncate_context: bool = True,
        **backbone_options: Any,
    ) -> None:
        super().__init__(
            class_names,
            None,
            backbone,
            pretrained,
            **backbone_options,
            n_ctx=n_ctx,
            ctx_init=ctx_init,
            text_prompt_depth=text_prompt_depth,
            vision_prompt_depth=vision_prompt_depth,
            n_ctx_vision=n_ctx_vision,
            conditional=False,
            truncate_context=truncate_context,
        )
