"""Building blocks: representation interventions and prompt injection into frozen open_clip towers (each family)."""

from __future__ import annotations

from .interventions import ConditionalLoReFT, LowRankProjection
from .towers import (
    HFTextTower,
    OpenCLIPTextTower,
    OpenCLIPVisionTower,
    PromptLayout,
    TimmVisionTower,
    build_text_tower,
    build_vision_tower,
)

__all__ = [
    "ConditionalLoReFT",
    "HFTextTower",
    "LowRankProjection",
    "OpenCLIPTextTower",
    "OpenCLIPVisionTower",
    "PromptLayout",
    "TimmVisionTower",
    "build_text_tower",
    "build_vision_tower",
]
