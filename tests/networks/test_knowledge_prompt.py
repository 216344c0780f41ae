"""Knowledge tokens of every layer in one batched pass equal the layer-by-layer ones."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import random_bank
from tests.networks.test_cilmp import build, images


@pytest.mark.parametrize("conditional", [True, False])
def test_all_layers_equal_each_layer(tiny_backbone, conditional):
    net = build(tiny_backbone, random_bank(lengths=(16, 3, 9, 5)), conditional=conditional).eval()
    with torch.no_grad():
        z = net.encode_image(images(3)) if conditional else None
        every = net.knowledge.all_layers(z)
        assert every.shape[:2] == (len(net.knowledge.layers), 3 if conditional else 1)
        for j in range(len(net.knowledge.layers)):
            torch.testing.assert_close(every[j], net.knowledge(j, z), rtol=1e-6, atol=1e-6)


def test_all_layers_dropout_and_gradients_in_training(tiny_backbone):
    net = build(tiny_backbone, random_bank(), dropout=0.5).train()
    knowledge = net.knowledge
    with torch.no_grad():
        z = net.encode_image(images(2))
    torch.manual_seed(0)
    first, second = knowledge.all_layers(z), knowledge.all_layers(z)
    unchanged = knowledge.group_sizes[0]
    assert not torch.equal(first[:, :, unchanged:], second[:, :, unchanged:])  # edited positions: a new mask
    torch.testing.assert_close(first[:, :, :unchanged], second[:, :, :unchanged])  # unedited: no dropout
    first.square().sum().backward()
    for name, p in knowledge.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
