"""LP++ (Huang, Shakeri, Dolz, Boudiaf, Bahig, Ben Ayed, "LP++: A Surprisingly Strong Linear Probe for Few-Shot
CLIP", CVPR 2024).

A linear probe whose class weights blend a learned visual part with CLIP's fixed text embeddings, each class with
its own learned blending factor::

    logits_c = f . w_c + b_c + alpha_c * (f . t_c)

``w_c`` starts at the sum of class ``c``'s training features (data-driven, not random; ``shots`` times their
centroid: the code's ``compute_centroids`` leaves its division by the class count commented out), ``t_c`` is the
frozen zero-shot class embedding, and every ``alpha_c`` starts at one shared, data-driven value: ``kappa`` times the
mean over classes ``c`` of the mean zero-shot similarity ``f . t_c`` of class ``c``'s own features (its
``compute_centroids_alpha`` keeps only the matching class; ``kappa = 250`` in the public implementation, which brings
the text term to the order of CLIP's own logit scale). Both as HealthX-Lab/BiomedCoOp's LP++ trainer
(``trainers/LP2``) computes them (checked by ``scripts/fidelity.py``). ``w``, ``b`` and
``alpha`` train with cross-entropy on cached features. The paper derives its step sizes from Lipschitz constants
(block majorise-minimise) and updates ``alpha`` less often; here the engine's SGD recipe trains all three jointly.
The centroids and ``alpha`` are set from the training features by the engine before training
(:func:`~monai_cilmp.engines.fit_training_features`); before that the network is zero-shot CLIP (``w = b = 0``,
``alpha_c = s``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from monai_cilmp.networks.backbone_spec import BackboneLike

from .feature_head import FrozenFeatureClassifier
from .zeroshot import DEFAULT_TEMPLATE

__all__ = ["LPPlusPlus", "lp_plus_plus_init"]


def lp_plus_plus_init(
    features: torch.Tensor, labels: torch.Tensor, text_weights: torch.Tensor, kappa: float = 250.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """LP++'s initial visual weights (class sums of the features, ``(C, D)``) and blending factor (a scalar).

    Args:
        features: ``(N, D)`` normalised training features.
        labels: ``(N,)`` labels in ``0..C-1``; every class must occur.
        text_weights: ``(C, D)`` zero-shot class embeddings.
        kappa: scale of the blending factor.

    Raises:
        ValueError: a class without training features.
    """
    n_cls = text_weights.shape[0]
    onehot = torch.nn.functional.one_hot(labels.long(), n_cls).to(features.dtype)  # (N, C)
    counts = onehot.sum(dim=0)
    if (counts == 0).any():
        missing = [int(c) for c in torch.nonzero(counts == 0).view(-1)]
        raise ValueError(f"LP++ needs training features of every class; classes {missing} have none.")
    class_sums = onehot.T @ features  # (C, D): the code's "centroids" are sums
    similarity_centroids = (onehot.T @ (features @ text_weights.to(features.dtype).T)) / counts[:, None]  # (C, C)
    return class_sums, kappa * similarity_centroids.diagonal().mean()


class LPPlusPlus(FrozenFeatureClassifier):
    """Linear probe with class weights blended from visual centroids and text embeddings (LP++).

    ``forward`` takes images ``(B, 3, H, W)`` or cached features ``(B, D)``.

    Args:
        class_names: class names in label order; ``_`` reads as a space.
        backbone: the frozen backbone: a :class:`~monai_cilmp.networks.BackboneSpec`, a loaded ``Backbone``, or a
            model name with ``pretrained`` and ``backbone_options`` (:func:`~monai_cilmp.networks.resolve_backbone`).
        kappa: scale of the initial blending factor (250, as in the public implementation).
        text: zero-shot text kind of the class embeddings.
        template: the template of ``text="template"``.
        templates: the templates of ``text="ensemble"``.
        prompts: class -> texts for ``text="descriptions"``.
    """

    uses_training_features = True

    def __init__(
        self,
        class_names: Sequence[str],
        backbone: BackboneLike = "ViT-B-16",
        pretrained: str | None = "openai",
        *,
        kappa: float = 250.0,
        text: str = "template",
        template: str = DEFAULT_TEMPLATE,
        templates: Sequence[str] | None = None,
        prompts: Mapping[str, Sequence[str] | str] | None = None,
        **backbone_options: Any,
    ) -> None:
        super().__init__()
        self._init_features(class_names, backbone, pretrained, text, template, templates, prompts, **backbone_options)
        self.kappa = float(kappa)
        n_cls = len(self.class_names)
        self.visual_weight = nn.Parameter(torch.zeros(n_cls, self.feature_dim))
        self.bias = nn.Parameter(torch.zeros(n_cls))
        self.alpha = nn.Parameter(torch.full((n_cls,), float(self.logit_scale.exp())))

    def fit_training_features(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Initialise the visual weights at the class centroids and ``alpha`` from the zero-shot similarities."""
        centroids, alpha = lp_plus_plus_init(features.float(), torch.as_tensor(labels), self.text_weights, self.kappa)
        with torch.no_grad():
            self.visual_weight.copy_(centroids)
            self.bias.zero_()
            self.alpha.fill_(float(alpha))

    def classify(self, f: torch.Tensor) -> torch.Tensor:
        text_logits = f @ self.text_weights.to(f.dtype).T
        return f @ self.visual_weight.to(f.dtype).T + self.bias + self.alpha * text_logits
