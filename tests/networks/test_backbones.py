"""Backbone loading from names, tags, files and folders; offline behaviour and its messages."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch

from monai_cilmp.networks import BackboneWeightsNotFoundError, load_backbone
from monai_cilmp.networks.backbones import TINY_BACKBONE


def test_tiny_backbone_is_registered_and_random():
    assert TINY_BACKBONE in open_clip.list_models()
    backbone = load_backbone(TINY_BACKBONE, None)
    assert backbone.image_size == 64 and backbone.checkpoint is None
    assert load_backbone(TINY_BACKBONE, "none").pretrained is None
    assert not backbone.model.training
    assert backbone.tokenizer.eot_token_id == 49407


def test_missing_tag_weights_offline_give_one_sentence(tmp_path):
    with pytest.raises(BackboneWeightsNotFoundError) as e:
        load_backbone("ViT-B-16", "openai", offline=True, cache_dir=tmp_path)
    msg = str(e.value)
    assert "timm/vit_base_patch16_clip_224.openai" in msg and "not available offline" in msg
    assert "hf download" in msg and str(tmp_path) in msg
    assert msg.count("\n") == 0


def test_missing_hub_model_offline(tmp_path):
    with pytest.raises(BackboneWeightsNotFoundError, match="microsoft/BiomedCLIP.* not available offline"):
        load_backbone(
            "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", offline=True, cache_dir=tmp_path
        )


def test_unknown_name_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="Unknown backbone 'ViT-Q-99'"):
        load_backbone("ViT-Q-99", None)
    with pytest.raises(FileNotFoundError, match="neither a known tag .* nor an existing checkpoint file"):
        load_backbone(TINY_BACKBONE, str(tmp_path / "missing.pt"))
    with pytest.raises(FileNotFoundError, match="has no open_clip_config.json"):
        load_backbone(str(tmp_path))


def _same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_local_checkpoint_file(tmp_path):
    torch.manual_seed(3)
    source = load_backbone(TINY_BACKBONE, None)
    path = tmp_path / "tiny.pt"
    torch.save(source.model.state_dict(), path)
    loaded = load_backbone(TINY_BACKBONE, str(path), offline=True)
    assert loaded.checkpoint == str(path)
    assert _same_weights(loaded.model, source.model)


def test_local_folder_with_config(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(4)
    source = load_backbone(TINY_BACKBONE, None)
    config = open_clip.get_model_config(TINY_BACKBONE)
    (tmp_path / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": config, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.25] * 3}})
    )
    save_file(
        {k: v.contiguous() for k, v in source.model.state_dict().items()}, tmp_path / "open_clip_model.safetensors"
    )
    for name in (str(tmp_path), f"local-dir:{tmp_path}"):
        loaded = load_backbone(name, offline=True)
        assert _same_weights(loaded.model, source.model)
        assert loaded.mean == (0.5, 0.5, 0.5) and loaded.std == (0.25, 0.25, 0.25)
