"""Prompt-injection towers: identical to open_clip's own encoders when nothing is injected."""

from __future__ import annotations

import pytest
import torch

from monai_cilmp.networks.blocks.towers import OpenCLIPTextTower, OpenCLIPVisionTower, run_block


@pytest.mark.parametrize("causal", [True, False])
def test_run_block_matches_open_clip_block(tiny_backbone, causal):
    block = tiny_backbone.model.transformer.resblocks[3]
    x = torch.randn(5, 11, 64)
    mask = torch.full((11, 11), float("-inf")).triu(1) if causal else None
    with torch.no_grad():
        torch.testing.assert_close(run_block(block, x, causal), block(x, attn_mask=mask), rtol=1e-5, atol=1e-5)


def test_vision_tower_without_prompts_is_open_clip(tiny_backbone):
    tower = OpenCLIPVisionTower(tiny_backbone.model.visual)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(tower(x), tiny_backbone.model.encode_image(x), rtol=1e-5, atol=1e-5)


def test_text_tower_without_injection_is_open_clip(tiny_backbone):
    tower = OpenCLIPTextTower(tiny_backbone.model, tiny_backbone.tokenizer)
    tokens = tiny_backbone.tokenizer(["a chest x-ray with pneumonia.", "a normal chest x-ray."])
    eot = tokens.argmax(dim=-1)
    with torch.no_grad():
        expected = tiny_backbone.model.encode_text(tokens)
        full = tower(tower.embed(tokens), eot)
        cut = tower(tower.embed(tokens[:, : int(eot.max()) + 1]), eot)
    torch.testing.assert_close(full, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cut, expected, rtol=1e-5, atol=1e-5)


def test_layout_places_slots_after_start_and_pools_at_eot(tiny_backbone):
    tower = OpenCLIPTextTower(tiny_backbone.model, tiny_backbone.tokenizer)
    layout = tower.layout(["melanoma.", "basal cell carcinoma."], [3, 6])
    tokenizer = tiny_backbone.tokenizer
    assert layout.slot_start == 1 and layout.token_ids[:, 0].eq(tokenizer.sot_token_id).all()
    assert layout.token_ids[layout.token_ids.new_tensor([0, 1]), layout.pool_index].eq(tokenizer.eot_token_id).all()
    assert layout.token_ids.shape[1] == int(layout.pool_index.max()) + 1
    assert tower.layout(["melanoma."], [3], truncate=False).token_ids.shape[1] == 77


def test_embedding_table_is_released(tiny_backbone):
    tower = OpenCLIPTextTower(tiny_backbone.model, tiny_backbone.tokenizer)
    assert "token_embedding" not in dict(tower.named_modules())
    tower.release_embeddings()
    with pytest.raises(RuntimeError, match="released"):
        tower.embed(torch.zeros(1, 3, dtype=torch.long))


def test_quick_gelu_is_openai_activation():
    from monai_cilmp.networks.blocks.towers import quick_gelu

    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(quick_gelu(x), x * torch.sigmoid(1.702 * x))
    assert torch.autograd.gradcheck(quick_gelu, (x,))


def test_encode_texts_is_open_clip_and_cuts_long_texts_like_its_tokenizer(tiny_backbone):
    tower = OpenCLIPTextTower(tiny_backbone.model, tiny_backbone.tokenizer)
    texts = ["a chest x-ray.", " ".join(["opacity"] * 100)]
    with pytest.raises(ValueError, match="needs .* tokens"):
        tower.layout(texts, [0, 0])
    with torch.no_grad():
        expected = tiny_backbone.model.encode_text(tiny_backbone.tokenizer(texts))
        torch.testing.assert_close(tower.encode_texts(texts, batch_size=1), expected, rtol=1e-5, atol=1e-5)
