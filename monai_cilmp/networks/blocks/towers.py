"""Prompt injection into frozen open_clip towers.

A *tower* wraps the frozen modules of one encoder of an open_clip model (no copies) and runs them layer by layer
so that a method can put learned tokens into the sequence before any block. The towers know the encoder
family's conventions (special tokens, pooling, causal or padding masks); the methods (CILMP, ...) know what to
inject. Families: open_clip's own text transformer and ViT (:class:`OpenCLIPTextTower`, :class:`OpenCLIPVisionTower`),
open_clip's Hugging Face text encoder (:class:`HFTextTower`: BERT-style, e.g. BiomedCLIP's PubMedBERT) and its timm
image trunk (:class:`TimmVisionTower`), one family a module (``openclip_tower.py``, ``hf_tower.py``,
``timm_tower.py``); :func:`build_text_tower` / :func:`build_vision_tower` here choose. A new family is one more module
plus one line in those functions; the methods do not change. The fused block the towers run is in ``fused_block.py``,
the prompts' token layout in ``prompt_layout.py``; their names stay importable from here.
"""

from __future__ import annotations

from torch import nn

from .fused_block import quick_gelu, run_block, run_block_shared_prefix
from .hf_tower import HFTextTower
from .openclip_tower import OpenCLIPTextTower, OpenCLIPVisionTower
from .prompt_layout import PromptLayout
from .timm_tower import TimmVisionTower

__all__ = [
    "HFTextTower",
    "OpenCLIPTextTower",
    "OpenCLIPVisionTower",
    "PromptLayout",
    "TimmVisionTower",
    "build_text_tower",
    "build_vision_tower",
    "quick_gelu",
    "run_block",
    "run_block_shared_prefix",
]


def build_text_tower(model: nn.Module, tokenizer) -> nn.Module:
    """The prompt-injection tower for ``model``'s text encoder: open_clip's own transformer or a Hugging Face one.

    Raises:
        NotImplementedError: the text encoder family has no tower.
    """
    if hasattr(model, "transformer") and hasattr(model, "token_embedding"):
        return OpenCLIPTextTower(model, tokenizer)
    text = getattr(model, "text", None)
    if text is not None and hasattr(text, "transformer") and hasattr(text, "pooler") and hasattr(text, "proj"):
        return HFTextTower(model, tokenizer)
    kind = type(text if text is not None else model).__name__
    raise NotImplementedError(
        f"Prompt injection into a {kind} text encoder is not available; use a backbone with open_clip's own text "
        "transformer (e.g. ViT-B-16 with the 'openai' weights) or a Hugging Face BERT-style one (e.g. BiomedCLIP)."
    )


def build_vision_tower(model: nn.Module) -> nn.Module:
    """The prompt-injection tower for ``model``'s image encoder: open_clip's ViT or a timm ViT trunk."""
    if hasattr(model.visual, "trunk"):
        return TimmVisionTower(model.visual)
    return OpenCLIPVisionTower(model.visual)
