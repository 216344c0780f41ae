"""KgCoOp: knowledge-guided context optimisation (Yao, Zhang, Xu, "Visual-Language Prompt Tuning with
Knowledge-guided Context Optimization", CVPR 2023).

CoOp whose learned class text embeddings ``w_c`` are pulled toward the frozen embeddings ``w_c^clip`` of
hand-crafted prompts ("a photo of a {class}.") so that the learned context does not forget CLIP's general
knowledge. The paper writes the term as a squared distance, its code (htyao89/KgCoOp, ``trainers/kgcoop.py``, which
produced the published numbers with ``W = 8`` in its scripts) computes one minus the mean cosine::

    paper:  L = CE(logits, y) + lambda * 1/C * sum_c || w_c - w_c^clip ||^2
    code:   L = CE(logits, y) + W * (1 - 1/C * sum_c cos(w_c, w_c^clip))

For unit vectors ``||w - w'||^2 = 2 - 2 cos(w, w')``, so the paper's term is twice the code's at the same weight.
We follow the code (``distance="cosine"``, the default, with ``kg_weight = 8``); ``distance="squared"`` is the
paper's equation. The network is CoOp; the extra term is :meth:`KgCoOp.regularization_loss`, which the engine adds
to the classification loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from monai_cilmp.networks.backbone_spec import BackboneLike
from monai_cilmp.networks.backbones import Backbone

from .base import look_up
from .coop import CoOp

__all__ = ["KG_DISTANCES", "KgCoOp"]

#: the regulariser's distance: the authors' code's (cosine) or the paper's equation (squared Euclidean).
KG_DISTANCES = ("cosine", "squared")

DEFAULT_HANDCRAFTED_TEMPLATE = "a photo of a {}."


class KgCoOp(CoOp):
    """CoOp with the knowledge-guided regulariser toward hand-crafted prompt embeddings.

    The regulariser is not part of :meth:`forward` (whose output stays ``(B, C)`` logits for MONAI's engines); add
    it to the loss::

        loss = F.cross_entropy(network(images), labels) + network.regularization_loss()

    Called right after ``forward`` in training, :meth:`regularization_loss` reuses the class text features of
    that forward (same graph, no second text-encoder pass); otherwise it computes them. It is exactly zero at
    initialisation when ``ctx_init`` is the template's text before the class name (the defaults).

    Args:
        class_names: class names in label order; ``_`` reads as a space.
        backbone: the frozen backbone: a :class:`~monai_cilmp.networks.BackboneSpec`, a loaded ``Backbone``, or a
            model name with ``pretrained`` and ``backbone_options`` (:func:`~monai_cilmp.networks.resolve_backbone`).
        n_ctx: number of context tokens (4 in the paper).
        ctx_init: text initialising the context (the paper: ``"a photo of a"``).
        class_specific: one context per class.
        kg_weight: ``W`` (``lambda``), the weight of the regulariser (8.0 in the authors' scripts).
        distance: ``"cosine"``: ``1 - mean_c cos(w_c, w_c^clip)``, what the authors' code computes (default);
            ``"squared"``: ``mean_c ||w_c - w_c^clip||^2``, the paper's equation (twice the former).
        templates: hand-crafted template(s) with ``{}`` for the class name; several are averaged (normalised mean).
        truncate_context: run the text encoder only up to the longest prompt (exact).

    Raises:
        ValueError: a template without ``{}``, a negative ``kg_weight``, or an unknown ``distance``.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        backbone: BackboneLike = "ViT-B-16",
        pretrained: str | None = "openai",
        *,
        n_ctx: int = 4,
        ctx_init: str | None = "a photo of a",
        class_specific: bool = False,
        kg_weight: float = 8.0,
        distance: str = "cosine",
        templates: str | Sequence[str] = DEFAULT_HANDCRAFTED_TEMPLATE,
        truncate_context: bool = True,
        **backbone_options: Any,
    ) -> None:
        templates = [templates] if isinstance(templates, str) else list(templates)
        if not templates or any("{}" not in t for t in templates):
            raise ValueError(f"KgCoOp templates must each contain '{{}}' for the class name, got {templates}.")
        if kg_weight < 0:
            raise ValueError(f"kg_weight must be >= 0, got {kg_weight}.")
        self.templates, self.kg_weight = templates, float(kg_weight)
        self.distance = str(look_up(distance, KG_DISTANCES))
        super().__init__(
            class_names,
            backbone,
            pretrained,
            **backbone_options,
            n_ctx=n_ctx,
            ctx_init=ctx_init,
            class_specific=class_specific,
            truncate_context=truncate_context,
        )
        self._last: tuple[torch.Tensor, int] | None = None

    def _setup_extra(self, backbone: Backbone) -> None:
        prompts = {n: [t.format(n.replace("_", " ")) for t in self.templates] for n in self.class_names}
        self.register_buffer("handcrafted_embeddings", self._class_text_embeddings(prompts), persistent=False)

    def encode_prompts(self, image_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """Class text features ``(1, C, embed_dim)``; kept for :meth:`regularization_loss` in training."""
        features = self.text_features()
        self._last = (features, self.ctx._version) if self.training and torch.is_grad_enabled() else None
        return features

    def regularization_loss(self) -> torch.Tensor:
        """``kg_weight * (1 - mean_c cos(w_c, w_c^clip))`` (``distance="squared"``: ``kg_weight * mean_c ||w_c -
        w_c^clip||^2``), a scalar with gradient to the context."""
        last = self._last
        self._last = None
        if last is not None and last[1] == self.ctx._version and last[0].requires_grad == self.ctx.requires_grad:
            features = last[0]
        else:  # no forward since the context last changed: encode the prompts now
            features = self.text_features()
        target = self.handcrafted_embeddings.to(features.device)
        features = features[0].float()
        if self.distance == "squared":
            return self.kg_weight * (features - target).pow(2).sum(dim=-1).mean()
        # both sides are unit vectors, so the cosine is their dot product (the code's CosineSimilarity)
        return self.kg_weight * (1.0 - (features * target).sum(dim=-1).mean())
