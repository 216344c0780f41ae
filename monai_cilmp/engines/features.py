"""Training on cached image features: the frozen image encoder runs once, the head trains on feature batches.

A linear probe (:class:`~monai_cilmp.networks.nets.LinearProbe`) only trains a head on frozen image features, so
its training loader can hold features instead of images: :func:`cached_feature_loader` runs a loader of images
(with the *evaluation* transforms: random augmentation would be frozen into the cache) through the network's image
encoder once and returns a shuffling loader of ``{"image": (B, D) features, "label": (B,)}`` batches, which the same
:func:`~monai_cilmp.engines.create_trainer` trains on. Evaluation still runs on images.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["cached_feature_loader"]


def cached_feature_loader(
    network: nn.Module,
    image_loader: Iterable[Mapping[str, Any]],
    batch_size: int = 64,
    shuffle: bool = True,
    device: torch.device | str | None = None,
) -> torch.utils.data.DataLoader:
    """A loader of cached image features of ``image_loader``, extracted once by ``network.encode_image``.

    Args:
        network: a network with ``encode_image`` that accepts ``(B, D)`` features in ``forward`` (a linear probe).
        image_loader: batches of ``{"image": (B, 3, H, W), "label": (B,)}`` made with the evaluation transforms.
        batch_size: feature batch size.
        shuffle: shuffle every epoch (the trainer reseeds torch per epoch, so the order is reproducible).
        device: where the encoder runs (default: the network's device).

    Returns:
        a ``DataLoader`` over ``{"image": (D,) feature, "label": label}`` items (features on the CPU, float32).

    Raises:
        ValueError: the image loader has no labelled batches.
    """
    from monai.data import DataLoader

    from monai_cilmp.networks.nets import extract_features, feature_items

    features, labels = extract_features(network, image_loader, device=device)
    if labels is None:
        raise ValueError("Training on cached features needs labels, but the image loader gave none.")
    return DataLoader(feature_items(features, labels), batch_size=int(batch_size), shuffle=shuffle, num_workers=0)
