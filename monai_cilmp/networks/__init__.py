"""Networks (CILMP and its baselines), their building blocks and the open_clip backbones they are built on."""

from __future__ import annotations

from . import blocks, nets
from .backbone_spec import BackboneSpec, resolve_backbone
from .backbones import Backbone, BackboneWeightsNotFoundError, load_backbone, register_model_configs
from .nets import CILMP, IVLP, CoCoOp, CoOp, KgCoOp, LinearProbe, ZeroShotCLIP, build_method, list_methods

register_model_configs()  # CILMP-Tiny and the other project configs, known to open_clip from here on

__all__ = [
    "Backbone",
    "BackboneSpec",
    "BackboneWeightsNotFoundError",
    "CILMP",
    "CoCoOp",
    "CoOp",
    "IVLP",
    "KgCoOp",
    "LinearProbe",
    "ZeroShotCLIP",
    "blocks",
    "build_method",
    "list_methods",
    "load_backbone",
    "nets",
    "resolve_backbone",
]
