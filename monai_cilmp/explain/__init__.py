"""Explanations of a trained classifier's predictions: saliency maps on the image and knowledge-word attributions."""

from __future__ import annotations

from .images import (
    explain_images,
    format_explanation,
    saliency_for_file,
    saliency_in_image_geometry,
    save_saliency_map,
)
from .knowledge import KnowledgeAttribution, group_words, knowledge_attributions, save_knowledge_plot
from .saliency import (
    SaliencyMethod,
    SaliencyTarget,
    TokenGradCAM,
    find_saliency_target,
    last_reading_target,
    saliency_targets,
    save_saliency_overlay,
    unnormalise,
)

__all__ = [
    "KnowledgeAttribution",
    "SaliencyMethod",
    "SaliencyTarget",
    "TokenGradCAM",
    "explain_images",
    "find_saliency_target",
    "format_explanation",
    "group_words",
    "knowledge_attributions",
    "last_reading_target",
    "saliency_for_file",
    "saliency_in_image_geometry",
    "saliency_targets",
    "save_knowledge_plot",
    "save_saliency_map",
    "save_saliency_overlay",
    "unnormalise",
]
