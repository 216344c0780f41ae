"""Conditional LoReFT: the factored edit equals the formula phi(h; z) = h + (W [h ; a(z) * h] + b - h R) R^T."""

from __future__ import annotations

import pytest
import torch

from monai_cilmp.networks.blocks import ConditionalLoReFT


@pytest.mark.parametrize("cond_dim", [12, None])
def test_edit_equals_the_formula(cond_dim):
    torch.manual_seed(0)
    module = ConditionalLoReFT(embed_dim=40, rank=5, cond_dim=cond_dim, dropout=0.0)
    with torch.no_grad():
        module.source.bias.normal_()
        if cond_dim:
            for layer in module.condition:
                layer.bias.normal_()
    h = torch.randn(3, 4, 40)
    z = torch.randn(2, 12) if cond_dim else None
    got = module(h, z)
    r = module.rotation
    n_img = 2 if cond_dim else 1
    expected = torch.empty(n_img, 3, 4, 40)
    for b in range(n_img):
        for c in range(3):
            for p in range(4):
                x = h[c, p]
                inputs = torch.cat([x, module.condition(z[b]) * x]) if cond_dim else x
                source = module.source.weight @ inputs + module.source.bias
                expected[b, c, p] = x + (source - x @ r) @ r.T
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    coords = module.edit_coordinates(h, z)
    assert coords.shape == (n_img, 3, 4, 5)
    torch.testing.assert_close(h + coords @ r.T, got, rtol=1e-6, atol=1e-6)
