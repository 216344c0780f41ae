"""Tip-Adapter and Tip-Adapter-F (Zhang et al., "Tip-Adapter: Training-free Adaption of CLIP for Few-shot
Classification", ECCV 2022).

The few-shot training set itself becomes a key-value cache: the keys ``F`` ``(N, D)`` are the normalised image
features of the ``N`` training images, the values ``L`` ``(N, C)`` their one-hot labels. A test feature ``f``
attends to the cache with the affinity ``A = exp(-beta (1 - f F^T))`` (a sharpened cosine similarity), and the
retrieved label mass is added to zero-shot CLIP's logits::

    logits = s * f W^T + alpha * A L          W the frozen class text embeddings, s = 100

As in the authors' code (gaopengcuhk/Tip-Adapter, ``main.py``) the zero-shot scale ``s`` is the constant 100, not
the checkpoint's ``exp(logit_scale)`` (100.0 vs 100.03 for OpenAI's ViT-B/16; ``scale=None`` takes the checkpoint's).
Tip-Adapter uses the cache as it is: no training at all. ``alpha`` and ``beta`` are hyper-parameters: the defaults
are fixed (1 and 5.5); the authors' code grid-searches them on the validation split after building the cache
(:meth:`TipAdapter.search_alpha_beta`, :func:`search_alpha_beta`; ``monai-cilmp compare --benchmark biomedcoop``
runs it on each cell's validation split). Tip-Adapter-F makes the keys a trainable parameter initialised from ``F`` (the
values stay fixed) and fine-tunes them with cross-entropy, which is a few epochs on cached features; its registry
recipe is the code's optimiser, AdamW (lr 0.001, eps 1e-4). The cache is built by the engine from the training
loader before training (:func:`~monai_cilmp.engines.fit_training_features`); the paper averages the keys over ten
augmented views of each image, we take one view through the evaluation transforms. Before the cache is built the
network is exactly zero-shot CLIP (an empty cache adds nothing). Checkpoints keep the cache (keys and values) and
``alpha``/``beta``, so an evaluation run rebuilds the same classifier.
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

__all__ = ["TipAdapter", "cache_logits", "search_alpha_beta", "search_grid"]


def cache_logits(f: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, beta: float) -> torch.Tensor:
    """Tip-Adapter's cache prediction ``exp(-beta (1 - f keys^T)) @ values``, ``(B, C)``.

    Args:
        f: ``(B, D)`` normalised image features.
        keys: ``(N, D)`` cache keys.
        values: ``(N, C)`` cache values (one-hot labels).
        beta: sharpness of the affinity.
    """
    affinity = torch.exp(-beta * (1.0 - f @ keys.to(f.dtype).T))
    return affinity @ values.to(f.dtype)


def search_grid(scale: float, steps: int, start: float = 0.1) -> list[float]:
    """The authors' search values ``start + i (scale - start) / steps`` for ``i < steps`` (``scale`` excluded)."""
    return [start + i * (float(scale) - start) / int(steps) for i in range(int(steps))]


@torch.no_grad()
def search_alpha_beta(
    zero_shot: torch.Tensor,
    affinity: torch.Tensor,
    values: torch.Tensor,
    labels: torch.Tensor,
    betas: Sequence[float],
    alphas: Sequence[float],
) -> tuple[float, float, float]:
    """Grid search of ``(alpha, beta)`` by accuracy, as the authors' ``search_hp``: betas outer, alphas inner, the
    first best kept (a later pair must be strictly better, the first one better than accuracy 0).

    Args:
        zero_shot: ``(N, C)`` zero-shot logits of the search images.
        affinity: ``(N, K)`` cosine ``f keys^T`` of the search images to the cache keys.
        values: ``(K, C)`` cache values.
        labels: ``(N,)`` labels.
        betas: beta values, in search order.
        alphas: alpha values, in search order.

    Returns:
        ``(alpha, beta, accuracy)`` of the best pair (accuracy in [0, 1]).
    """
    labels = torch.as_tensor(labels).view(-1).to(zero_shot.device)
    best = (0.0, 0.0, 0.0)  # as their code: a pair must beat accuracy 0, else alpha = beta = 0 (zero-shot CLIP)
    for beta in betas:
        cache = torch.exp(-float(beta) * (1.0 - affinity)) @ values.to(affinity.dtype)
        for alpha in alphas:
            accuracy = ((zero_shot + float(alpha) * cache).argmax(dim=-1) == labels).float().mean().item()
            if accuracy > best[2]:
                best = (float(alpha), float(beta), accuracy)
    return best


class TipAdapter(FrozenFeatureClassifier):
    """Zero-shot CLIP plus a cache model of the training features (Tip-Adapter; ``fine_tune=True``: Tip-Adapter-F).

    Args:
        class_names: class names in label order; ``_`` reads as a space.
        backbone: the frozen backbone: a :class:`~monai_cilmp.networks.BackboneSpec`, a loaded ``Backbone``, or a
            model name with ``pretrained`` and ``backbone_options`` (:func:`~monai_cilmp.networks.resolve_backbone`).
        fine_tune: train the cache keys (Tip-Adapter-F); otherwise nothing trains.
        alpha: weight of the cache prediction (1.0 in the paper).
        beta: sharpness of the affinity (5.5 in the paper's ImageNet setting).
        scale: the zero-shot logits' scale, 100 as in the authors' code (``None``: the backbone's
            ``exp(logit_scale)``).
        text: zero-shot text kind of the class embeddings.
        template: the template of ``text="template"``.
        templates: the templates of ``text="ensemble"``.
        prompts: class -> texts for ``text="descriptions"``.

    Attributes:
        cache_keys: ``(N, D)`` keys (a parameter with ``fine_tune``, else a buffer); ``N = 0`` until fitted.
        cache_values: ``(N, C)`` one-hot values (a buffer).
    """

    uses_training_features = True

    def __init__(
        self,
        class_names: Sequence[str],
        backbone: BackboneLike = "ViT-B-16",
        pretrained: str | None = "openai",
        *,
        fine_tune: bool = False,
        alpha: float = 1.0,
        beta: float = 5.5,
        scale: float | None = 100.0,
        text: str = "template",
        template: str = DEFAULT_TEMPLATE,
        templates: Sequence[str] | None = None,
        prompts: Mapping[str, Sequence[str] | str] | None = None,
        **backbone_options: Any,
    ) -> None:
        super().__init__()
        if alpha < 0 or beta < 0:
            raise ValueError(f"Tip-Adapter needs alpha >= 0 and beta >= 0, got {alpha} and {beta}.")
        self._init_features(class_names, backbone, pretrained, text, template, templates, prompts, **backbone_options)
        self.fine_tune, self.alpha, self.beta = bool(fine_tune), float(alpha), float(beta)
        self.scale = None if scale is None else float(scale)
        keys = torch.zeros(0, self.feature_dim)
        if self.fine_tune:
            self.cache_keys = nn.Parameter(keys)
        else:
            self.register_buffer("cache_keys", keys)
        self.register_buffer("cache_values", torch.zeros(0, len(self.class_names)))

    def _set_cache(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        device = self.text_weights.device
        if self.fine_tune:
            self._set_parameter(self, "cache_keys", keys)
        else:
            self.cache_keys = keys.detach().to(device, torch.float32).clone()
        self.cache_values = values.detach().to(device, torch.float32).clone()

    def fit_training_features(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Build the cache: keys the normalised features ``(N, D)``, values the one-hot ``labels`` ``(N,)``.

        Raises:
            ValueError: shapes that do not match, or a label outside the classes.
        """
        labels = torch.as_tensor(labels).long().view(-1)
        if features.ndim != 2 or features.shape != (len(labels), self.feature_dim):
            raise ValueError(
                f"Tip-Adapter's cache needs ({len(labels)}, {self.feature_dim}) features, got {tuple(features.shape)}."
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise ValueError(f"Cache labels must lie in 0..{len(self.class_names) - 1}.")
        values = F.one_hot(labels, len(self.class_names)).float()
        self._set_cache(F.normalize(features.float(), dim=-1), values)

    def zero_shot_logits(self, f: torch.Tensor) -> torch.Tensor:
        """CLIP's logits ``s * f . t_c`` with the fixed scale (``scale=None``: the backbone's)."""
        if self.scale is None:
            return super().zero_shot_logits(f)
        return self.scale * f @ self.text_weights.to(f.dtype).T

    @torch.no_grad()
    def search_alpha_beta(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        beta_scale: float = 7.0,
        alpha_scale: float = 3.0,
        beta_steps: int = 200,
        alpha_steps: int = 20,
    ) -> dict[str, float]:
        """Set ``alpha`` and ``beta`` to the pair of the authors' grid most accurate on ``features``/``labels`` (a
        validation split's images or cached features; never the test split).

        The grids are :func:`search_grid`: ``beta`` over ``[0.1, beta_scale)`` in ``beta_steps`` steps, ``alpha`` over
        ``[0.1, alpha_scale)`` in ``alpha_steps`` (the authors' per-dataset configs use scales 7-13 and 3-13, steps 200
        and 20; BiomedCoOp's 50, 50 and 200, 200). With Tip-Adapter-F the learned keys are searched, as in their code.

        Returns:
            ``{"alpha", "beta", "accuracy"}`` of the chosen pair (accuracy on the search split, in [0, 1]).

        Raises:
            ValueError: the cache is empty (fit the training features first) or no search images.
        """
        if self.cache_keys.shape[0] == 0 or len(features) == 0:
            raise ValueError("Tip-Adapter's alpha/beta search needs a built cache and at least one validation image.")
        f = self.features(features)
        alpha, beta, accuracy = search_alpha_beta(
            self.zero_shot_logits(f),
            f @ self.cache_keys.to(f.dtype).T,
            self.cache_values,
            labels,
            search_grid(beta_scale, beta_steps),
            search_grid(alpha_scale, alpha_steps),
        )
        self.alpha, self.beta = alpha, beta
        return {"alpha": alpha, "beta": beta, "accuracy": accuracy}

    def classify(self, f: torch.Tensor) -> torch.Tensor:
        return self.zero_shot_logits(f) + self.alpha * cache_logits(f, self.cache_keys, self.cache_values, self.beta)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained parameters, the cache (keys and values: the cache *is* the method's fitted state) and
        ``alpha_beta``."""
        state = super().trainable_state_dict()
        state["cache_keys"] = self.cache_keys.detach().clone()
        state["cache_values"] = self.cache_values.detach().clone()
        state["alpha_beta"] = torch.tensor([self.alpha, self.beta])  # searched on validation or the defaults
        return state

    def load_trainable_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load what :meth:`trainable_state_dict` returned (the cache takes the saved size).

        Raises:
            ValueError: no cache in ``state``, or keys that do not fit.
        """
        state = dict(state)
        keys, values = state.get("cache_keys"), state.pop("cache_values", None)
        alpha_beta = state.pop("alpha_beta", None)
        if alpha_beta is not None:  # checkpoints before the validation search lack it: the constructor's values stay
            self.alpha, self.beta = (float(v) for v in alpha_beta.tolist())
        if keys is None or values is None or keys.ndim != 2 or keys.shape[1] != self.feature_dim:
            raise ValueError(
                f"The trained state does not fit this {type(self).__name__}: it needs cache_keys "
                f"(N, {self.feature_dim}) and cache_values; load a checkpoint of a Tip-Adapter run on this backbone."
            )
        if values.shape != (keys.shape[0], len(self.class_names)):
            raise ValueError(
                f"The trained state does not fit this {type(self).__name__}: cache_values has shape "
                f"{tuple(values.shape)}, expected ({keys.shape[0]}, {len(self.class_names)}) for these classes."
            )
        self._set_cache(keys, values)
        if not self.fine_tune:
            state.pop("cache_keys")
        super().load_trainable_state_dict(state)
