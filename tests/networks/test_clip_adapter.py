"""CLIP-Adapter: the residual adapter against a hand-written reading of the paper."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_cilmp.networks.nets import CLIPAdapter

CLASSES = ["benign", "malignant"]


def test_adapter_output_is_the_residual_mix_classified_against_the_class_texts(shared_backbone):
    net = CLIPAdapter(CLASSES, shared_backbone, None, reduction=4, ratio=0.3).eval()
    assert set(net.trainable_parameters()) == {"adapter.0.weight", "adapter.2.weight"}
    assert net.adapter[0].weight.shape == (net.feature_dim // 4, net.feature_dim)
    f = F.normalize(torch.randn(3, net.feature_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    w1, w2 = net.adapter[0].weight, net.adapter[2].weight
    adapted = torch.relu(torch.relu(f @ w1.T) @ w2.T)
    mixed = F.normalize(0.3 * adapted + 0.7 * f, dim=-1)
    torch.testing.assert_close(net(f), net.logit_scale.exp() * mixed @ net.text_weights.T)


def test_ratio_zero_is_zero_shot_clip_and_images_work(shared_backbone):
    net = CLIPAdapter(CLASSES, shared_backbone, None, ratio=0.0).eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(net(x), net.logit_scale.exp() * net.encode_image(x) @ net.text_weights.T)
    with pytest.raises(ValueError, match="0 <= ratio <= 1"):
        CLIPAdapter(CLASSES, shared_backbone, None, ratio=1.5)
    with pytest.raises(ValueError, match=r"Cached features must be \(B, 64\)"):
        net(torch.randn(2, 7))


def test_biomedcoop_reading_mixes_without_renormalising(shared_backbone):
    """BiomedCoOp's CLIP-Adapter (its benchmark: alpha 0.5) classifies the unnormalised mix."""
    net = CLIPAdapter(CLASSES, shared_backbone, None, ratio=0.5, renormalize=False).eval()
    f = F.normalize(torch.randn(3, net.feature_dim, generator=torch.Generator().manual_seed(1)), dim=-1)
    adapted = torch.relu(torch.relu(f @ net.adapter[0].weight.T) @ net.adapter[2].weight.T)
    mixed = 0.5 * adapted + 0.5 * f
    torch.testing.assert_close(net(f), net.logit_scale.exp() * mixed @ net.text_weights.T)
