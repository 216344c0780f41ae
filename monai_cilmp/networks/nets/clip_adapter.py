"""CLIP-Adapter (Gao et al., "CLIP-Adapter: Better Vision-Language Models with Feature Adapters", IJCV 2024).

Instead of learning prompts, CLIP-Adapter learns a small bottleneck MLP on top of the frozen image feature and
mixes its output back into the feature with a residual ratio, so that few-shot training adjusts CLIP's feature a
little without overwriting it::

    A(f) = ReLU(W_2 ReLU(W_1 f))          W_1: D -> D/r, W_2: D/r -> D, no biases (r = 4)
    f'   = alpha * A(f) + (1 - alpha) * f  (alpha = 0.2)
    logits_c = s * cos(f', t_c)           t_c the frozen embedding of "a photo of a {class}."

Only ``W_1`` and ``W_2`` train (``2 D^2 / r`` scalars: 131,072 for ViT-B/16). The image encoder is frozen, so the
engine trains on cached image features (as for a linear probe; the paper's random augmentation of the training
images is therefore not applied). The adapter works on the normalised feature ``f``. The mixed feature is
normalised again before the cosine, as gaopengcuhk/CLIP-Adapter's code does; BiomedCoOp's CLIP-Adapter
(HealthX-Lab/BiomedCoOp, ``trainers/ClipAdapter``, its benchmark: alpha 0.5) leaves it unnormalised
(``renormalize=False``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_cilmp.networks.backbone_spec import BackboneLike

from .feature_head import FrozenFeatureClassifier
from .zeroshot import DEFAULT_TEMPLATE

__all__ = ["CLIPAdapter"]


class CLIPAdapter(FrozenFeatureClassifier):
    """A residual bottleneck adapter on frozen image features, classified against zero-shot class embeddings.

    Args:
        class_names: class names in label order; ``_`` reads as a space.
        backbone: the frozen backbone: a :class:`~monai_cilmp.networks.BackboneSpec`, a loaded ``Backbone``, or a
            model name with ``pretrained`` and ``backbone_options`` (:func:`~monai_cilmp.networks.resolve_backbone`).
        reduction: ``r``, the bottleneck is ``D // r`` wide (4 in the paper).
        ratio: ``alpha``, the weight of the adapted feature (0.2 in the paper, 0.5 in BiomedCoOp's benchmark).
        renormalize: normalise the mixed feature before the cosine (the original code); ``False``: BiomedCoOp's.
        text: zero-shot text kind of the class embeddings.
        template: the template of ``text="template"``.
        templates: the templates of ``text="ensemble"``.
        prompts: class -> texts for ``text="descriptions"``.

    Raises:
        ValueError: ``ratio`` outside ``[0, 1]`` or ``reduction < 1``.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        backbone: BackboneLike = "ViT-B-16",
        pretrained: str | None = "openai",
        *,
        reduction: int = 4,
        ratio: float = 0.2,
        renormalize: bool = True,
        text: str = "template",
        template: str = DEFAULT_TEMPLATE,
        templates: Sequence[str] | None = None,
        prompts: Mapping[str, Sequence[str] | str] | None = None,
        **backbone_options: Any,
    ) -> None:
        super().__init__()
        if not 0.0 <= ratio <= 1.0 or reduction < 1:
            raise ValueError(f"CLIP-Adapter needs 0 <= ratio <= 1 and reduction >= 1, got {ratio} and {reduction}.")
        self._init_features(class_names, backbone, pretrained, text, template, templates, prompts, **backbone_options)
        self.ratio, self.renormalize = float(ratio), bool(renormalize)
        hidden = max(1, self.feature_dim // int(reduction))
        self.adapter = nn.Sequential(
            nn.Linear(self.feature_dim, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, self.feature_dim, bias=False),
            nn.ReLU(inplace=True),
        )

    def adapt(self, f: torch.Tensor) -> torch.Tensor:
        """The residual mix ``alpha * A(f) + (1 - alpha) * f``, normalised with ``renormalize``."""
        mixed = self.ratio * self.adapter(f) + (1.0 - self.ratio) * f
        return F.normalize(mixed, dim=-1) if self.renormalize else mixed

    def classify(self, f: torch.Tensor) -> torch.Tensor:
        return self.zero_shot_logits(self.adapt(f))
