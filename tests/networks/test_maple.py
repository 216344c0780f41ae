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


def test_couplings_and_prompt_as_the_authors_code(shared_backbone):
    """Layer 1's coupling on its own, layers 2..J copies of one random layer; the rest of ctx_init stays."""
    torch.manual_seed(0)
    net = MaPLe(CLASSES, shared_backbone, None, prompt_depth=4)
    first, deep = net.coupling[0], net.coupling[1:]
    for layer in deep[1:]:
        torch.testing.assert_close(layer.weight, deep[0].weight, rtol=0, atol=0)
        torch.testing.assert_close(layer.bias, deep[0].bias, rtol=0, atol=0)
        assert layer.weight.data_ptr() != deep[0].weight.data_ptr()  # copies, not one shared layer
    assert not torch.equal(first.weight, deep[0].weight)
    assert net.words_before_class == "of a "
    ids = shared_backbone.tokenizer(["a photo of a benign."])[0]
    length = net.prompt_embeddings.shape[1]  # up to the longest prompt's end token
    torch.testing.assert_close(net.prompt_embeddings[0, 3:], shared_backbone.model.token_embedding(ids)[3:length])
    tokens = net.text_tower.encode("a photo")
    assert net.text_prompts.shape[1] == len(tokens) == 2
    independent = MaPLe(CLASSES, shared_backbone, None, prompt_depth=3, copy_deep_couplings=False)
    assert not torch.equal(independent.coupling[1].weight, independent.coupling[2].weight)
    plain = MaPLe(CLASSES, shared_backbone, None, prompt_depth=2, keep_init_words=False)
    assert plain.words_before_class == ""
    torch.testing.assert_close(plain.text_prompts[0], net.text_prompts[0])
