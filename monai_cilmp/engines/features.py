"""Training on cached image features: the frozen image encoder runs once, the head trains on feature batches.

A linear probe (:class:`~monai_cilmp.networks.nets.LinearProbe`) only trains a head on frozen image features, so
its training loader can hold features instead of images: :func:`cached_feature_loader` runs a loader of images
(with the *evaluation* transforms: random augmentation would be frozen into the cache) through the network's image
encoder once and returns a shuffling loader of ``{"image": (B, D) features, "label": (B,)}`` batches, which the same
:func:`~monai_cilmp.engines.create_trainer` trains on. Evaluation still runs on images.

A method built *from* the training set's features (Tip-Adapter's cache, LP++'s class centroids) sets
``uses_training_features``; :func:`fit_training_features` collects the features of its training loader (images or
cached features) and hands them to the network's ``fit_training_features``, which the trainer does before training.

Under ``torch.distributed`` both gather what the ranks extracted from their shards in the dataset's order
(:func:`~monai_cilmp.engines.distributed.gather_in_dataset_order`): every rank fits on, and caches, the whole
training set, as one process does; the cached loader then shards the features again (a ``DistributedSampler``
seeded like the run), so the ranks train on disjoint parts of each global batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from monai.data import DataLoader, Dataset
from torch import nn
from torch.utils.data import DistributedSampler

from monai_cilmp.engines.distributed import gather_in_dataset_order
from monai_cilmp.engines.recipe import TrainingRecipe
from monai_cilmp.networks.nets.base import as_plain_tensor
from monai_cilmp.networks.nets.linear_probe import extract_features, feature_items

__all__ = ["cached_feature_loader", "fit_training_features", "training_feature_dataset", "training_features"]


def cached_feature_loader(
    network: nn.Module,
    image_loader: Iterable[Mapping[str, Any]],
    batch_size: int = 64,
    shuffle: bool = True,
    device: torch.device | str | None = None,
    seed: int | None = None,
) -> torch.utils.data.DataLoader:
    """A loader of cached image features of ``image_loader``, extracted once by ``network.encode_image``.

    Args:
        network: a network with ``encode_image`` that accepts ``(B, D)`` features in ``forward`` (a linear probe).
        image_loader: batches of ``{"image": (B, 3, H, W), "label": (B,)}`` made with the evaluation transforms.
        batch_size: feature batch size.
        shuffle: shuffle every epoch (the trainer reseeds torch per epoch, so the order is reproducible).
        device: where the encoder runs (default: the network's device).
        seed: the shuffling seed of the ``DistributedSampler`` under ``torch.distributed``: pass the recipe's
            (``recipe.seed``), as ``multi_gpu_train.json`` gives its sampler ``@recipe#seed``, so that the ranks shuffle
            as the bundle's run of the method does; default: the default recipe's. One process shuffles from torch's
            global random state instead, which the trainer reseeds from the recipe's seed at every epoch.

    Returns:
        a ``DataLoader`` over ``{"image": (D,) feature, "label": label}`` items (features on the CPU, float32); under
        ``torch.distributed`` it gives this rank's shard of them.

    Raises:
        ValueError: the image loader has no labelled batches.
    """
    features, labels = extract_features(network, image_loader, device=device)
    if labels is None:
        raise ValueError("Training on cached features needs labels, but the image loader gave none.")
    features, labels = gather_in_dataset_order(image_loader, features, labels)
    items = feature_items(features, labels)
    if torch.distributed.is_available() and torch.distributed.is_initialized():  # one process of torchrun included
        from monai.data import DistributedSampler

        seed = TrainingRecipe().seed if seed is None else int(seed)
        sampler = DistributedSampler(items, even_divisible=True, shuffle=shuffle, seed=seed)
        return DataLoader(items, batch_size=int(batch_size), sampler=sampler, num_workers=0)
    return DataLoader(items, batch_size=int(batch_size), shuffle=shuffle, num_workers=0)


def training_feature_dataset(
    network: nn.Module,
    data: Sequence[Mapping[str, Any]],
    transform: Callable | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | str | None = None,
) -> Sequence[dict[str, Any]]:
    """The training items of ``data`` as cached image features: ``train#dataset`` of the methods that train on them.

    The images are read in ``data``'s order with ``transform`` (the evaluation transforms: no augmentation) and encoded
    once by ``network.encode_image``; the trainer's loader (and its sampler, under DDP) then batches the features.

    Args:
        network: a network with ``encode_image`` that accepts ``(B, D)`` features in ``forward`` (a linear probe).
        data: the training items (``{"image": file, "label": int}``).
        transform: what reads and prepares an image.
        batch_size: images encoded at once.
        num_workers: image loading processes.
        device: where the encoder runs (default: the network's device).

    Returns:
        ``{"image": (D,) feature, "label": label}`` items (features on the CPU, float32).

    Raises:
        ValueError: the items have no labels.
    """
    images = DataLoader(Dataset(list(data), transform=transform), batch_size=int(batch_size), num_workers=num_workers)
    features, labels = extract_features(network, images, device=device)
    if labels is None:
        raise ValueError("Training on cached features needs labels, but the training items have none.")
    return feature_items(features, labels)


@torch.no_grad()
def training_features(
    network: nn.Module, loader: Iterable[Mapping[str, Any]], device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised image features ``(N, D)`` and labels ``(N,)`` of every batch of ``loader``, in its order (under
    ``torch.distributed`` with a sharded loader: of every rank's batches, in the dataset's order).

    Batches hold images ``(B, 3, H, W)`` (encoded with ``network.encode_image`` in eval mode) or already cached
    features ``(B, D)`` (taken as they are).

    Raises:
        ValueError: the loader gives no batches, or a batch without labels.
    """
    if device is None:
        device = next((t.device for t in (*network.parameters(), *network.buffers())), torch.device("cpu"))
    was_training = network.training
    network.eval()
    features, labels = [], []
    try:
        for batch in loader:
            x, y = as_plain_tensor(batch["image"]), batch.get("label")
            if y is None:
                raise ValueError("Training features need labels, but a training batch has none.")
            x = x.float() if x.ndim == 2 else network.encode_image(x.to(device)).float()
            features.append(x.cpu())
            labels.append(torch.as_tensor(as_plain_tensor(y)).reshape(len(x), -1)[:, 0].long().cpu())
    finally:
        network.train(was_training)
    if not features:
        raise ValueError("The training loader gave no batches to take features from.")
    return gather_in_dataset_order(loader, torch.cat(features), torch.cat(labels))


def fit_training_features(
    network: nn.Module, loader: Iterable[Mapping[str, Any]], device: torch.device | str | None = None
) -> bool:
    """Call ``network.fit_training_features`` with :func:`training_features` of ``loader`` when the network asks.

    Returns:
        whether the network uses training features (and was fitted).
    """
    if not getattr(network, "uses_training_features", False):
        return False
    if isinstance(getattr(loader, "sampler", None), DistributedSampler):  # every process fits from the whole set
        loader = DataLoader(loader.dataset, batch_size=loader.batch_size, shuffle=False, num_workers=0)
    features, labels = training_features(network, loader, device)
    network.fit_training_features(features.to(device) if device is not None else features, labels)
    return True
