"""Networks, their building blocks and the open_clip backbones they are built on."""

from __future__ import annotations

from . import blocks, nets
from .backbones import Backbone, BackboneWeightsNotFoundError, load_backbone
from .nets import CILMP

__all__ = ["Backbone", "BackboneWeightsNotFoundError", "CILMP", "blocks", "load_backbone", "nets"]
