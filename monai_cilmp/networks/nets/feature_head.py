"""The common ground of the methods that work on frozen CLIP image features and fixed class text embeddings.

CLIP-Adapter, Tip-Adapter(-F) and LP++ never change what the image encoder computes: they combine the frozen,
normalised image feature ``f`` with the frozen zero-shot class embeddings ``t_c`` (and, for some, with the training
set's features). :class:`FrozenFeatureClassifier` holds those two and takes images ``(B, 3, H, W)`` or image
features ``(B, D)`` cached once by the engine (:func:`~monai_cilmp.engines.cached_feature_loader`), as
:class:`~monai_cilmp.networks.nets.LinearProbe` does; the methods only write :meth:`classify`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from monai_cilmp.networks.backbone_spec import BackboneLike
from monai_cilmp.networks.backbones import Backbone
from monai_cilmp.networks.blocks.towers import build_text_tower, build_vision_tower

from .base import CLIPClassifier, as_plain_tensor
from .zeroshot import DEFAULT_TEMPLATE, zero_shot_texts

__all__ = ["FrozenFeatureClassifier"]


class FrozenFeatureClassifier(CLIPClassifier):
    """Frozen image features plus frozen zero-shot class embeddings; subclasses implement :meth:`classify`.

    Args:
        class_names: class names in label order; ``_`` reads as a space.
        backbone: the frozen backbone: a :class:`~monai_cilmp.networks.BackboneSpec`, a loaded ``Backbone``, or a
            model name with ``pretrained`` and ``backbone_options`` (:func:`~monai_cilmp.networks.resolve_backbone`).
        text: zero-shot text kind of the class embeddings (:class:`~monai_cilmp.networks.nets.ZeroShotText`).
        template: the template of ``text="template"``.
        templates: the templates of ``text="ensemble"``.
        prompts: class -> texts for ``text="descriptions"``.

    Attributes:
        text_weights: ``(C, D)`` normalised zero-shot class embeddings (a buffer).
        feature_dim: ``D``.
    """

    def _init_features(
        self,
        class_names: Sequence[str],
        backbone: BackboneLike,
        pretrained: str | None,
        text: str = "template",
        template: str = DEFAULT_TEMPLATE,
        templates: Sequence[str] | None = None,
        prompts: Mapping[str, Sequence[str] | str] | None = None,
        **backbone_options: Any,
    ) -> Backbone:
        """Set up the towers and the zero-shot class embeddings; returns the backbone."""
        backbone = self._init_classifier(class_names, backbone, pretrained, **backbone_options)
        self.vision_tower = build_vision_tower(backbone.model)
        self.feature_dim = self._embed_dim(backbone.model)
        tower = build_text_tower(backbone.model, backbone.tokenizer)
        texts = zero_shot_texts(self.class_names, text, template, templates, prompts)
        self.register_buffer("text_weights", self._class_text_embeddings(texts, tower))
        return backbone

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised frozen image features ``(B, D)`` (never with gradients: the encoder does not train)."""
        with torch.no_grad():
            return super().encode_image(images)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised image features ``(B, D)`` from images ``(B, 3, H, W)`` or cached features ``(B, D)``.

        Raises:
            ValueError: 2-D input whose width is not the feature size.
        """
        x = as_plain_tensor(x)
        if x.ndim != 2:
            return self.encode_image(x)
        if x.shape[1] != self.feature_dim:
            raise ValueError(f"Cached features must be (B, {self.feature_dim}), got {tuple(x.shape)}.")
        return x.to(self.text_weights.dtype)

    def zero_shot_logits(self, f: torch.Tensor) -> torch.Tensor:
        """CLIP's logits ``s * f . t_c`` (``s`` the backbone's logit scale)."""
        return self._logits(f, self.text_weights)

    def classify(self, f: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, C)`` from normalised image features ``(B, D)``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, C)`` from images ``(B, 3, H, W)`` or cached features ``(B, D)``."""
        return self.classify(self.features(x))

    @staticmethod
    def _set_parameter(module: nn.Module, name: str, value: torch.Tensor) -> None:
        """Set parameter ``name`` to ``value``: in place when the shape is the same (an optimiser may hold it), else
        as a new parameter of the new shape, on the same device."""
        old = getattr(module, name)
        with torch.no_grad():
            if old.shape == value.shape:
                old.copy_(value)
            else:
                setattr(module, name, nn.Parameter(value.detach().to(old.device, old.dtype).clone()))
