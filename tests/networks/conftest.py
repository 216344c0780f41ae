"""Fixtures of the network tests: one tiny random backbone shared by a whole test session (CLIP stays frozen)."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch

from monai_cilmp.networks import load_backbone
from monai_cilmp.networks.backbones import TINY_BACKBONES

VIT_B16_SHAPE = "CILMP-Test-ViT-B-16-Shape"


@pytest.fixture(scope="session")
def shared_backbone():
    """CILMP-Tiny with seeded random weights, built once; tests must not modify its weights."""
    torch.manual_seed(0)
    return load_backbone("CILMP-Tiny", None)


@pytest.fixture(scope="session")
def family_backbones():
    """Every tiny tower family (CILMP-Tiny, CILMP-Tiny-Timm, CILMP-Tiny-BERT) with seeded random weights, built once."""
    backbones = {}
    for name in TINY_BACKBONES:
        torch.manual_seed(0)
        backbones[name] = load_backbone(name, None, offline=True)
    return backbones


@pytest.fixture(scope="session")
def vit_b16_shape_backbone(tmp_path_factory):
    """ViT-B/16's widths (text 512, joint 512, image 768) with one layer per tower: parameter counts, cheaply."""
    folder = tmp_path_factory.mktemp("model_configs")
    config = {
        "embed_dim": 512,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 768, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 1},
    }
    (folder / f"{VIT_B16_SHAPE}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return load_backbone(VIT_B16_SHAPE, None)
