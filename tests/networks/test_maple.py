"""MaPLe: the image prompts are the coupling functions of the text prompts, layer by layer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_cilmp.networks.nets import MaPLe

CLASSES = ["benign", "malignant"]


def test_vision_prompts_are_the_coupled_text_prompts(shared_backbone):
    torch.manual_seed(0)
    net = MaPLe(CLASSES, shared_backbone, None, n_ctx=2, ctx_init="a photo", prompt_depth=3).eval()
    assert net.text_prompts.shape == (3, 2, 64) and net.vision_prompts is None
    expected = torch.stack([net.text_prompts[j] @ net.coupling[j].weight.T + net.coupling[j].bias for j in range(3)])
    torch.testing.assert_close(net.coupled_vision_prompts(), expected)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(net.encode_image(x), F.normalize(net.vision_tower(x, expected), dim=-1))
    assert set(net.trainable_parameters()) == {"text_prompts"} | {
        f"coupling.{j}.{k}" for j in range(3) for k in ("weight", "bias")
    }


def test_gradient_of_the_image_side_reaches_the_text_prompts(shared_backbone):
    net = MaPLe(CLASSES, shared_backbone, None, prompt_depth=2).train()
    net.encode_image(torch.randn(2, 3, 64, 64)).sum().backward()  # the image branch alone
    assert net.text_prompts.grad[:2].abs().sum() > 0 and net.coupling[1].weight.grad.abs().sum() > 0


def test_prompt_depth_must_fit_both_encoders(shared_backbone):
    with pytest.raises(ValueError, match="text_prompt_depth must be between 1 and"):
        MaPLe(CLASSES, shared_backbone, None, prompt_depth=13)
