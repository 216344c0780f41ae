"""Prompt-injection towers: identical to open_clip's own encoders when nothing is injected."""

from __future__ import annotations

import copy
import json

import open_clip
import pytest
import torch

from monai_cilmp.networks import load_backbone
from monai_cilmp.networks.backbones import TINY_BERT_BACKBONE, TINY_TIMM_BACKBONE
from monai_cilmp.networks.blocks.towers import (
    HFTextTower,
    OpenCLIPTextTower,
    OpenCLIPVisionTower,
    TimmVisionTower,
    build_text_tower,
    build_vision_tower,
    run_block,
)


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


# ----- open_clip's Hugging Face (BERT) text tower and timm image trunk ----------------------------------------------

TEXTS = ["a photo of a melanoma.", "a chest x-ray of a normal lung with no sign of disease.", "covid"]


def family_variant(tmp_path, name: str, text: dict | None = None, vision: dict | None = None):
    """A registered tiny family with some config keys changed, as a local folder without weights (random)."""
    cfg = copy.deepcopy(open_clip.get_model_config(name))
    cfg["text_cfg"].update(text or {})
    cfg["vision_cfg"].update(vision or {})
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    torch.manual_seed(0)
    return load_backbone(str(tmp_path), None, offline=True)


@pytest.fixture(scope="module")
def bert_backbone():
    torch.manual_seed(0)
    return load_backbone(TINY_BERT_BACKBONE, None, offline=True)


@pytest.mark.parametrize(
    "pooler, proj",
    [("cls_last_hidden_state_pooler", "mlp"), ("cls_pooler", "linear"), ("mean_pooler", "linear")],
)
def test_hf_text_tower_without_injection_is_open_clip(tmp_path, pooler, proj):
    backbone = family_variant(tmp_path, TINY_BERT_BACKBONE, {"hf_pooler_type": pooler, "hf_proj_type": proj})
    tower = build_text_tower(backbone.model, backbone.tokenizer)
    assert isinstance(tower, HFTextTower) and (tower.pooler is not None) == (pooler == "cls_pooler")
    tokens = backbone.tokenizer(TEXTS)  # [CLS] ... [SEP] [PAD]... over the full context of 77
    last = (tokens != tower.pad_id).sum(dim=-1) - 1
    assert tokens[torch.arange(3), last].eq(tower.end_ids[0]).all()
    with torch.no_grad():
        expected = backbone.model.encode_text(tokens)
        full = tower(tower.embed(tokens), last)
        cut = tower(tower.embed(tokens[:, : int(last.max()) + 1]), last)
        plain = tower.encode_texts(TEXTS, batch_size=2)
    for features in (full, cut, plain):
        torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)


def test_hf_padding_mask_keeps_each_prompt_independent_of_the_batch(bert_backbone):
    tower = build_text_tower(bert_backbone.model, bert_backbone.tokenizer)
    with torch.no_grad():
        alone = tower.encode_texts(TEXTS[2:])
        batched = tower.encode_texts(TEXTS)
        layout = tower.layout(TEXTS, [0, 0, 0])
        x = tower.embed(layout.token_ids)
        unmasked = tower(x, torch.full_like(layout.pool_index, x.shape[1] - 1))  # padding attended: not the same
    torch.testing.assert_close(batched[2:], alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(unmasked[2], alone[0], atol=1e-4)


def test_hf_layout_places_slots_after_cls_and_pools_at_sep(bert_backbone):
    tower = build_text_tower(bert_backbone.model, bert_backbone.tokenizer)
    hf = bert_backbone.tokenizer.tokenizer
    layout = tower.layout(["melanoma.", "basal cell carcinoma."], [3, 6])
    assert layout.slot_start == 1 and layout.token_ids[:, 0].eq(hf.cls_token_id).all()
    assert layout.token_ids[torch.arange(2), layout.pool_index].eq(hf.sep_token_id).all()
    assert layout.token_ids.shape[1] == int(layout.pool_index.max()) + 1
    assert layout.token_ids[0, int(layout.pool_index[0]) + 1 :].eq(hf.pad_token_id).all()
    assert tower.layout(["melanoma."], [3], truncate=False).token_ids.shape[1] == 77 == tower.context_length
    assert len(tower.encode("a photo of a")) == 4
    with pytest.raises(ValueError, match="needs 80 tokens .*context is 77"):
        tower.layout(["x " * 70], [8])
    assert tower.layout(["x " * 70], [8], fit=True).token_ids.shape[1] == 77


def test_hf_hook_runs_before_every_layer_but_the_first_and_changes_the_feature(bert_backbone):
    tower = build_text_tower(bert_backbone.model, bert_backbone.tokenizer)
    layout = tower.layout(TEXTS, [2, 2, 2])
    x = tower.embed(layout.token_ids)
    seen = []

    def record(j, h):
        seen.append(j)
        return h

    def shift(j, h):
        return torch.cat([h[:, :1], h[:, 1:3] + 1.0, h[:, 3:]], dim=1)

    with torch.no_grad():
        plain = tower(x, layout.pool_index)
        torch.testing.assert_close(tower(x, layout.pool_index, record), plain)
        assert not torch.allclose(tower(x, layout.pool_index, shift), plain)
    assert seen == list(range(1, tower.num_layers))


def test_hf_tower_refuses_what_it_cannot_pool(tmp_path):
    backbone = family_variant(tmp_path, TINY_BERT_BACKBONE, {"hf_pooler_type": "max_pooler"})
    with pytest.raises(ValueError, match="pools with 'max_pooler'.*cls_pooler"):
        build_text_tower(backbone.model, backbone.tokenizer)


@pytest.mark.parametrize("family", [TINY_TIMM_BACKBONE, TINY_BERT_BACKBONE])
def test_timm_vision_tower_without_prompts_is_open_clip(family):
    torch.manual_seed(0)
    backbone = load_backbone(family, None, offline=True)
    tower = build_vision_tower(backbone.model)
    assert isinstance(tower, TimmVisionTower) and tower.num_layers == 12 and tower.image_size == 64
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(tower(x), backbone.model.encode_image(x), rtol=1e-5, atol=1e-5)


def test_timm_vision_tower_with_average_pool_and_mlp_head_is_open_clip(tmp_path):
    backbone = family_variant(tmp_path, TINY_TIMM_BACKBONE, vision={"timm_pool": "avg", "timm_proj": "mlp"})
    tower = build_vision_tower(backbone.model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(tower(x), backbone.model.encode_image(x), rtol=1e-5, atol=1e-5)


def test_timm_vision_prompts_are_deep_and_trainable(bert_backbone):
    tower = build_vision_tower(bert_backbone.model)
    x = torch.randn(2, 3, 64, 64)
    prompts = (torch.randn(3, 4, tower.width) * 0.02).requires_grad_(True)
    out = tower(x, prompts)
    out.sum().backward()
    assert out.shape == (2, 64) and prompts.grad is not None and (prompts.grad.abs().sum(dim=(1, 2)) > 0).all()
    with torch.no_grad():
        plain = tower(x)
        shallow = tower(x, prompts[:1])
        assert not torch.allclose(out, plain, atol=1e-5) and not torch.allclose(out, shallow, atol=1e-5)
    assert all(p.grad is None for p in tower.parameters())


def test_hf_text_tower_counts_roberta_positions_from_its_padding_index():
    """RoBERTa-style encoders (open_clip's roberta/xlm-roberta configs) number positions from padding_idx + 1."""
    from types import SimpleNamespace

    from open_clip.hf_model import HFTextEncoder
    from transformers import RobertaConfig

    config = RobertaConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=80, pad_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    encoder = HFTextEncoder("tiny-roberta", 16, config=config, pooler_type="mean_pooler", proj_type="linear").eval()
    special = SimpleNamespace(cls_token_id=0, sep_token_id=2, pad_token_id=1)
    tokenizer = SimpleNamespace(tokenizer=special, context_length=77, tokenizer_mode="", strip_sep_token=False)
    tower = HFTextTower(SimpleNamespace(text=encoder), tokenizer)
    ids = torch.tensor([[0, 5, 6, 7, 2, 1, 1, 1], [0, 9, 2, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        features = tower(tower.embed(ids), (ids != 1).sum(dim=-1) - 1)
        torch.testing.assert_close(features, encoder(ids), rtol=1e-5, atol=1e-5)
    assert tower.position_offset == 2 and tower.context_length == 77


@pytest.mark.parametrize("family", [TINY_TIMM_BACKBONE, TINY_BERT_BACKBONE])
def test_injected_context_equal_to_its_tokens_gives_open_clips_text_features(family):
    """CoOp's context initialised from "a photo of a" is what the tokenizer embeds: open_clip's features exactly."""
    import torch.nn.functional as F

    from monai_cilmp.networks import CoOp

    torch.manual_seed(0)
    backbone = load_backbone(family, None, offline=True)
    classes = ["normal lung", "covid"]
    net = CoOp(classes, backbone, n_ctx=4, ctx_init="a photo of a").eval()
    with torch.no_grad():
        expected = backbone.model.encode_text(backbone.tokenizer([f"a photo of a {c}." for c in classes]))
        torch.testing.assert_close(net.text_features()[0], F.normalize(expected, dim=-1), rtol=1e-5, atol=1e-5)
