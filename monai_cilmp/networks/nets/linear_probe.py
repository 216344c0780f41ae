"""Linear probe on frozen CLIP image features, optionally initialised from the zero-shot classifier.

The image encoder is frozen, so its features can be computed once and cached: :func:`extract_features` runs a
loader through the encoder, :func:`feature_items` turns the result into ``{"image": feature, "label": y}`` items,
and :class:`LinearProbe` accepts either images ``(B, 3, H, W)`` or such features ``(B, D)``. The same Ignite
engine therefore trains the head on cached feature batches (fast: no encoder pass per step) and evaluates on
images. With ``init="zero-shot"`` the head starts as the zero-shot classifier (weights = class text embeddings
times CLIP's logit scale, bias zero), in the spirit of LP++ (Huang et al., CVPR 2024) and CLAP (Silva-Rodriguez
et al., CVPR 2024); ``anchor_weight > 0`` adds CLAP's idea of a penalty for leaving the zero-shot prototypes.

The head trains by gradient descent on the mean cross-entropy, without penalty. BiomedCoOp's and CoOp's linear probes
instead fit scikit-learn's L2 logistic regression to convergence, with C searched on validation accuracy; the features
and the classifier's form are theirs (checked against BiomedCoOp's code in ``tests/networks/test_fidelity.py``), the
trained weights are not (docs/compare.md, "Fidelity to the authors' code").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_cilmp.networks.backbone_spec import BackboneLike
from monai_cilmp.networks.backbones import Backbone
from monai_cilmp.networks.blocks.towers import build_text_tower, build_vision_tower

from .base import CLIPClassifier, OptionEnum, as_plain_tensor, look_up
from .zeroshot import DEFAULT_TEMPLATE, zero_shot_texts

__all__ = ["LinearProbe", "ProbeInit", "extract_features", "feature_items"]


class ProbeInit(OptionEnum):
    """How a linear probe's head starts."""

    RANDOM = "random"
    ZERO_SHOT = "zero-shot"


def _device_of(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def extract_features(
    network: nn.Module | Backbone,
    loader: Iterable[Mapping[str, Any]],
    image_key: str = "image",
    label_key: str | None = "label",
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Normalised image features of every batch of ``loader``, computed once (no gradients, eval mode).

    Args:
        network: a network with ``encode_image`` (e.g. :class:`LinearProbe`), or a loaded
            :class:`~monai_cilmp.networks.backbones.Backbone` (plain CLIP image features).
        loader: batches of ``{image_key: (B, 3, H, W) normalised images, label_key: (B,) labels}``; use the
            evaluation transforms (features are extracted once, so random augmentation would be frozen in).
        image_key: key of the images.
        label_key: key of the labels (``None`` or absent: no labels).
        device: where to run (default: the network's device).

    Returns:
        ``(N, D)`` float32 features on the CPU and ``(N,)`` long labels (``None`` without labels).
    """
    if isinstance(network, Backbone):
        model = network.model
        encode = lambda x: F.normalize(model.encode_image(x), dim=-1)  # noqa: E731
        module: nn.Module = model
    else:
        encode, module = network.encode_image, network
    device = torch.device(device) if device is not None else _device_of(module)
    was_training = module.training
    module.eval()
    features, labels = [], []
    try:
        for batch in loader:
            images = as_plain_tensor(batch[image_key]).to(device)
            features.append(encode(images).float().cpu())
            label = batch.get(label_key) if label_key else None
            if label is not None:
                labels.append(torch.as_tensor(as_plain_tensor(label)).reshape(len(images), -1)[:, 0].long().cpu())
    finally:
        module.train(was_training)
    if not features:
        raise ValueError("The loader gave no batches to extract features from.")
    out_labels = torch.cat(labels) if labels and len(labels) == len(features) else None
    return torch.cat(features), out_labels


def feature_items(
    features: torch.Tensor, labels: torch.Tensor | None, image_key: str = "image", label_key: str = "label"
) -> list[dict[str, torch.Tensor]]:
    """One ``{image_key: (D,) feature, label_key: label}`` item per sample, for a ``DataLoader`` of cached features."""
    if labels is not None and len(labels) != len(features):
        raise ValueError(f"{len(features)} features but {len(labels)} labels.")
    return [
        {image_key: features[i]} if labels is None else {image_key: features[i], label_key: labels[i]}
        for i in range(len(features))
    ]


class LinearProbe(CLIPClassifier):
    """A linear classifier on frozen, normalised CLIP image features.

    ``forward`` takes images ``(B, 3, H, W)`` or cached features ``(B, D)`` (2-D inputs are features).

    Args:
        class_names: class names in label order; ``_`` reads as a space.
        backbone: the frozen backbone: a :class:`~monai_cilmp.networks.BackboneSpec`, a loaded ``Backbone``, or a
            model name with ``pretrained`` and ``backbone_options`` (:func:`~monai_cilmp.networks.resolve_backbone`).
        init: ``"random"`` (PyTorch's default for ``nn.Linear``) or ``"zero-shot"`` (starts as the zero-shot
            classifier: its logits at initialisation are :class:`~monai_cilmp.networks.nets.ZeroShotCLIP`'s).
        text: zero-shot text kind for ``init="zero-shot"`` (see :class:`~monai_cilmp.networks.nets.ZeroShotText`).
        template: zero-shot template.
        templates: zero-shot template ensemble.
        prompts: class -> texts for ``text="descriptions"``.
        anchor_weight: with ``init="zero-shot"``, weight of ``mean_c ||W_c / s - t_c||^2`` (``s`` the logit scale,
            ``t_c`` the zero-shot class embedding), returned by :meth:`regularization_loss`; ``0`` disables it.

    Raises:
        ValueError: unknown ``init``, or ``anchor_weight`` without the zero-shot initialisation.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        backbone: BackboneLike = "ViT-B-16",
        pretrained: str | None = "openai",
        *,
        init: str = ProbeInit.RANDOM,
        text: str = "template",
        template: str = DEFAULT_TEMPLATE,
        templates: Sequence[str] | None = None,
        prompts: Mapping[str, Sequence[str] | str] | None = None,
        anchor_weight: float = 0.0,
        **backbone_options: Any,
    ) -> None:
        super().__init__()
        backbone = self._init_classifier(class_names, backbone, pretrained, **backbone_options)
        self.init = look_up(init, ProbeInit)
        if anchor_weight and self.init != ProbeInit.ZERO_SHOT:
            raise ValueError("anchor_weight needs init='zero-shot': the anchor is the zero-shot classifier.")
        self.anchor_weight = float(anchor_weight)
        self.vision_tower = build_vision_tower(backbone.model)
        self.feature_dim = self._embed_dim(backbone.model)
        self.head = nn.Linear(self.feature_dim, len(self.class_names))
        if self.init == ProbeInit.ZERO_SHOT:
            self.text_tower = build_text_tower(backbone.model, backbone.tokenizer)
            texts = zero_shot_texts(self.class_names, text, template, templates, prompts)
            embeddings = self._class_text_embeddings(texts)
            del self.text_tower
            with torch.no_grad():
                self.head.weight.copy_(embeddings * self.logit_scale.exp())
                self.head.bias.zero_()
            if self.anchor_weight:
                self.register_buffer("zero_shot_embeddings", embeddings, persistent=False)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised frozen image features ``(B, D)`` (never with gradients: nothing before the head trains)."""
        with torch.no_grad():
            return super().encode_image(images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, C)`` from images ``(B, 3, H, W)`` or cached features ``(B, D)``."""
        x = as_plain_tensor(x)
        if x.ndim != 2:
            x = self.encode_image(x)
        elif x.shape[1] != self.feature_dim:
            raise ValueError(f"Cached features must be (B, {self.feature_dim}), got {tuple(x.shape)}.")
        return self.head(x.to(self.head.weight.dtype))

    def regularization_loss(self) -> torch.Tensor | None:
        """``anchor_weight * mean_c ||W_c / s - t_c||^2``, or ``None`` without an anchor."""
        if not self.anchor_weight:
            return None
        drift = self.head.weight / self.logit_scale.exp() - self.zero_shot_embeddings
        return self.anchor_weight * drift.pow(2).sum(dim=-1).mean()
