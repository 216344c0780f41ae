"""The project's open_clip model configurations: the tiny one of every tower family and BiomedCLIP's architecture.

``CILMP-Tiny`` (open_clip's own ViT and text transformer), ``CILMP-Tiny-Timm`` (a timm ViT trunk, ``cilmp_tiny_vit``,
and open_clip's text transformer) and ``CILMP-Tiny-BERT`` (the timm trunk and a Hugging Face BERT text encoder, the
family of BiomedCLIP) build offline with random weights; ``BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`` is
BiomedCLIP's architecture at full size. Their configs are in ``model_configs/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import open_clip
import torch

__all__ = [
    "BIOMEDCLIP",
    "BIOMEDCLIP_ARCHITECTURE",
    "TINY_BACKBONE",
    "TINY_BACKBONES",
    "TINY_BERT_BACKBONE",
    "TINY_TIMM_BACKBONE",
    "TINY_TIMM_VIT",
    "register_model_configs",
]

TINY_BACKBONE = "CILMP-Tiny"
TINY_TIMM_BACKBONE = "CILMP-Tiny-Timm"
TINY_BERT_BACKBONE = "CILMP-Tiny-BERT"
#: the tiny configuration of every tower family (tests and benchmarks run each method on each of them)
TINY_BACKBONES = (TINY_BACKBONE, TINY_TIMM_BACKBONE, TINY_BERT_BACKBONE)
#: BiomedCLIP's architecture at full size (registered here, random weights) and its Hugging Face Hub id
BIOMEDCLIP_ARCHITECTURE = "BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
BIOMEDCLIP = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
#: the timm ViT trunk of the tiny configurations (registered with timm; no pretrained weights)
TINY_TIMM_VIT = "cilmp_tiny_vit"
_TINY_VIT_ARGS = {"img_size": 64, "patch_size": 16, "embed_dim": 64, "depth": 12, "num_heads": 4}
_MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"


def register_model_configs() -> None:
    """Make the project's open_clip configurations (:data:`TINY_BACKBONES`, :data:`BIOMEDCLIP_ARCHITECTURE`) and the
    tiny timm trunk known to open_clip and timm; safe to call twice."""
    _register_timm_models()
    known = set(open_clip.list_models())
    if any(name not in known for name in (*TINY_BACKBONES, BIOMEDCLIP_ARCHITECTURE)):
        open_clip.add_model_config(_MODEL_CONFIG_DIR)


def _register_timm_models() -> None:
    """Register :data:`TINY_TIMM_VIT` (CILMP-Tiny's image tower as a timm ``VisionTransformer``) with timm."""
    import timm

    if timm.is_model(TINY_TIMM_VIT):
        return
    from timm.models import build_model_with_cfg, register_model
    from timm.models.vision_transformer import VisionTransformer

    def cilmp_tiny_vit(pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
        if pretrained:
            raise ValueError(f"{TINY_TIMM_VIT} has no pretrained weights: build it with pretrained=False.")
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(key, None)
        cfg = {"input_size": (3, 64, 64), "num_classes": 0, "mean": open_clip.OPENAI_DATASET_MEAN}
        cfg["std"] = open_clip.OPENAI_DATASET_STD
        return build_model_with_cfg(
            VisionTransformer, TINY_TIMM_VIT, False, pretrained_cfg=cfg, **{**_TINY_VIT_ARGS, **kwargs}
        )

    cilmp_tiny_vit.__name__ = TINY_TIMM_VIT
    register_model(cilmp_tiny_vit)


def _model_config(source: str) -> dict[str, Any]:
    """open_clip's model config of a registered name or a ``local-dir:`` folder."""
    if source.startswith("local-dir:"):
        with open(Path(source[len("local-dir:") :]) / "open_clip_config.json", encoding="utf-8") as f:
            return dict(json.load(f).get("model_cfg", {}))
    return dict(open_clip.get_model_config(source) or {})
