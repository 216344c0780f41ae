"""Linear probe: cached features give the image path's logits, the zero-shot init is the zero-shot classifier."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from monai_cilmp.networks.nets import LinearProbe, ZeroShotCLIP, extract_features, feature_items
from tests.conftest import CLASSES


def _loader(n=6, batch_size=4):
    g = torch.Generator().manual_seed(0)
    items = [{"image": torch.randn(3, 64, 64, generator=g), "label": i % len(CLASSES)} for i in range(n)]
    return DataLoader(items, batch_size=batch_size)


def test_cached_features_give_the_same_logits_as_images(shared_backbone):
    torch.manual_seed(0)
    net = LinearProbe(CLASSES, shared_backbone).train()
    loader = _loader()
    features, labels = extract_features(net, loader)
    assert net.training  # restored after extraction
    assert features.shape == (6, net.feature_dim) and labels.tolist() == [0, 1, 2, 3, 0, 1]
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(6))
    from_backbone, _ = extract_features(shared_backbone, loader)
    torch.testing.assert_close(from_backbone, features, rtol=1e-5, atol=1e-5)
    images = torch.cat([b["image"] for b in loader])
    with torch.no_grad():
        torch.testing.assert_close(net(features), net(images), rtol=1e-5, atol=1e-5)


def test_head_trains_on_cached_feature_batches(shared_backbone):
    torch.manual_seed(0)
    net = LinearProbe(CLASSES, shared_backbone)
    items = feature_items(*extract_features(net, _loader()))
    batch = next(iter(DataLoader(items, batch_size=6)))
    assert batch["image"].shape == (6, net.feature_dim)
    optimizer = torch.optim.SGD(net.trainable_parameters().values(), lr=1.0)
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(net(batch["image"]), batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_zero_shot_init_reproduces_zero_shot_logits(shared_backbone):
    probe = LinearProbe(CLASSES, shared_backbone, init="zero-shot", text="ensemble").eval()
    zero_shot = ZeroShotCLIP(CLASSES, shared_backbone, text="ensemble").eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(probe(x), zero_shot(x), rtol=1e-4, atol=1e-4)
    assert torch.count_nonzero(probe.head.bias) == 0


def test_anchor_regulariser(shared_backbone):
    assert LinearProbe(CLASSES, shared_backbone).regularization_loss() is None
    probe = LinearProbe(CLASSES, shared_backbone, init="zero-shot", anchor_weight=1.0)
    assert probe.regularization_loss().item() == pytest.approx(0.0, abs=1e-10)
    with torch.no_grad():
        probe.head.weight.add_(1.0)
    assert probe.regularization_loss().item() > 0
    with pytest.raises(ValueError, match="anchor_weight needs init='zero-shot'"):
        LinearProbe(CLASSES, shared_backbone, anchor_weight=1.0)


def test_wrong_feature_size_is_explained(shared_backbone):
    net = LinearProbe(CLASSES, shared_backbone)
    with pytest.raises(ValueError, match=r"Cached features must be \(B, 64\)"):
        net(torch.zeros(2, 5))
