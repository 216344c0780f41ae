"""Building blocks: representation interventions and prompt injection into frozen open_clip towers."""

from __future__ import annotations

from .interventions import ConditionalLoReFT, LowRankProjection
from .towers import (
    OpenCLIPTextTower,
    OpenCLIPVisionTower,
    PromptLayout,
    build_text_tower,
    build_vision_tower,
)

__all__ = [
    "ConditionalLoReFT",
    "LowRankProjection",
    "OpenCLIPTextTower",
    "OpenCLIPVisionTower",
    "PromptLayout",
    "build_text_tower",
    "build_vision_tower",
]
