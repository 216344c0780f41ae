"""Pre-training of the tiny backbone: the checkpoint loads with load_backbone, the fast paths are exact."""

from __future__ import annotations

import random

import pytest
import torch

from monai_cilmp.demo import pretrain_tiny_clip, read_pretrain_info
from monai_cilmp.demo.pretrain import caption_batch, encode_images, encode_texts
from monai_cilmp.demo.synthetic import SYNTHETIC_CLASSES
from monai_cilmp.networks import CILMP, load_backbone
from tests.conftest import random_bank


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("backbone") / "tiny.safetensors"
    threads = torch.get_num_threads()
    result = pretrain_tiny_clip(path, steps=3, batch_size=8, pool_size=16, seed=0, num_threads=1, log_every=1)
    assert torch.get_num_threads() == threads  # restored
    return result


def test_a_short_run_writes_a_checkpoint_load_backbone_loads(checkpoint):
    assert checkpoint.path.is_file() and checkpoint.steps == 3
    info = read_pretrain_info(checkpoint.path)
    assert info["steps"] == "3" and info["seed"] == "0" and info["trained_layers"] == "0,6"
    backbone = load_backbone("CILMP-Tiny", str(checkpoint.path))
    assert backbone.checkpoint == str(checkpoint.path) and backbone.image_size == 64
    assert type(backbone.model.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    from safetensors.torch import load_file

    saved = load_file(str(checkpoint.path))
    for name, value in backbone.model.state_dict().items():
        torch.testing.assert_close(value, saved[name], rtol=0, atol=0)


def test_untrained_blocks_are_identities_and_trained_ones_changed(checkpoint):
    trained = load_backbone("CILMP-Tiny", str(checkpoint.path)).model
    torch.manual_seed(0)
    initial = load_backbone("CILMP-Tiny", None).model  # the same seed gives pre-training's initial weights
    for tower, start in (
        (trained.transformer, initial.transformer),
        (trained.visual.transformer, initial.visual.transformer),
    ):
        for i, (block, before) in enumerate(zip(tower.resblocks, start.resblocks)):
            if i in (0, 6):
                assert not torch.equal(block.mlp.c_fc.weight, before.mlp.c_fc.weight)
            else:
                assert not block.attn.out_proj.weight.any() and not block.mlp.c_proj.weight.any()
                assert not block.attn.out_proj.bias.any() and not block.mlp.c_proj.bias.any()


def test_the_checkpoint_builds_a_cilmp(checkpoint):
    names = [c.name for c in SYNTHETIC_CLASSES]
    net = CILMP(
        names, random_bank(names, lengths=(3, 4, 5, 6), dim=16), load_backbone("CILMP-Tiny", str(checkpoint.path))
    )
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, 4)


def test_pretrain_tiny_clip_returns_the_path_it_wrote(tmp_path):
    out = pretrain_tiny_clip(tmp_path / "b.safetensors", steps=1, batch_size=4, pool_size=4, trained_layers=(11,)).path
    assert out == tmp_path / "b.safetensors" and read_pretrain_info(out)["trained_layers"] == "11"


def test_bad_arguments_are_explained(tmp_path):
    with pytest.raises(ValueError, match="steps, seconds_budget or both"):
        pretrain_tiny_clip(tmp_path / "a.safetensors", steps=None, seconds_budget=None)
    with pytest.raises(ValueError, match="safetensors"):
        pretrain_tiny_clip(tmp_path / "a.pt", steps=1)
    with pytest.raises(ValueError, match="trained_layers"):
        pretrain_tiny_clip(tmp_path / "a.safetensors", steps=1, trained_layers=(12,))
    assert not list(tmp_path.iterdir())


def test_fast_encoders_match_open_clip():
    torch.manual_seed(0)
    backbone = load_backbone("CILMP-Tiny", None)
    model, tokens = backbone.model, backbone.tokenizer(["a small round red spot", "an elongated light tan patch"])
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(encode_texts(model, tokens), model.encode_text(tokens), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(encode_images(model, images), model.encode_image(images), rtol=1e-4, atol=1e-5)


def test_captions_name_attributes_but_never_a_class():
    batch = caption_batch(64, 32, torch.Generator().manual_seed(0), random.Random(0))
    assert batch.images.shape == (64, 3, 32, 32) and len(batch.captions) == 64
    # "lesion" is the generic word every caption uses; the words that tell the classes apart must never appear
    words = {w for c in SYNTHETIC_CLASSES for w in c.name.split()} - {"lesion"} | {"benign", "naevus", "nevus"}
    for caption in batch.captions:
        assert not words & set(caption.replace(",", " ").split()), caption
    targets = batch.targets()
    assert torch.equal(targets.diagonal(), torch.ones(64))
    # caption i matches image j exactly when j agrees with every attribute caption i names
    for i in range(0, 64, 7):
        named = batch.named[i]
        agree = (batch.values[:, named] == batch.values[i, named]).all(dim=1).float()
        assert torch.equal(targets[i], agree)
