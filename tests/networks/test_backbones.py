"""Backbone loading from names, tags, files and folders; offline behaviour and its messages."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import open_clip
import pytest
import torch

from monai_cilmp.networks import (
    BackboneWeightsNotFoundError,
    backbone_activation,
    backbone_checkpoints,
    backbone_weights,
    backbones,
    load_backbone,
)
from monai_cilmp.networks.backbones import (
    BIOMEDCLIP_ARCHITECTURE,
    TINY_BACKBONE,
    TINY_BACKBONES,
    TINY_BERT_BACKBONE,
)
from monai_cilmp.networks.blocks.towers import build_text_tower, build_vision_tower


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


# ----- tower families, hub ids, folders, BiomedCLIP -----------------------------------------------------------------

TINY_VOCABULARY = Path(backbones.__file__).parent / "model_configs" / "hf" / "cilmp-tiny-bert"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_repo(cache: Path, repo_id: str, files: dict[str, Path | str | bytes]) -> Path:
    """A Hugging Face cache entry for ``repo_id`` as ``hf download`` leaves it (read with local_files_only)."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = root / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)
    for name, content in files.items():
        target = snapshot / name
        if isinstance(content, Path):
            shutil.copy(content, target)
        else:
            target.write_bytes(content if isinstance(content, bytes) else content.encode())
    return snapshot


def save_weights(model, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def features(backbone, texts=("a photo of a melanoma.", "covid")):
    image = torch.randn(2, 3, backbone.image_size, backbone.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return backbone.model.encode_image(image), backbone.model.encode_text(backbone.tokenizer(list(texts)))


@pytest.mark.parametrize("name", TINY_BACKBONES)
def test_every_tiny_family_is_registered_and_builds_offline(name):
    assert name in open_clip.list_models()
    torch.manual_seed(0)
    backbone = load_backbone(name, None, offline=True)
    assert backbone.image_size == 64 and backbone.checkpoint is None
    text_family = type(getattr(backbone.model, "text", backbone.model)).__name__
    assert (text_family == "HFTextEncoder") == (name == TINY_BERT_BACKBONE)
    assert (type(backbone.model.visual).__name__ == "TimmModel") == (name != TINY_BACKBONE)
    assert backbone.tokenizer(["a photo of a"]).shape == (1, 77)


def test_hub_id_loads_from_the_offline_cache_with_its_own_vocabulary(tmp_path):
    torch.manual_seed(5)
    source = load_backbone(TINY_BERT_BACKBONE, None, offline=True)
    config = copy.deepcopy(open_clip.get_model_config(TINY_BERT_BACKBONE))
    config["text_cfg"]["hf_tokenizer_name"] = "nobody/not-on-the-hub"  # the vocabulary must come from the repo
    fake_hub_repo(
        tmp_path,
        "someone/tiny-biomed-clip",
        {
            "open_clip_config.json": json.dumps({"model_cfg": config}),
            "open_clip_model.safetensors": save_weights(source.model, tmp_path / "w.safetensors").read_bytes(),
            "vocab.txt": TINY_VOCABULARY / "vocab.txt",
            "tokenizer_config.json": TINY_VOCABULARY / "tokenizer_config.json",
        },
    )
    loaded = load_backbone("hf-hub:someone/tiny-biomed-clip", offline=True, cache_dir=tmp_path)
    assert _same_weights(loaded.model, source.model)
    for ours, theirs in zip(features(loaded), features(source)):
        torch.testing.assert_close(ours, theirs)


def test_local_folder_of_the_bert_family_and_its_missing_weights(tmp_path):
    torch.manual_seed(6)
    source = load_backbone(TINY_BERT_BACKBONE, None, offline=True)
    (tmp_path / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": open_clip.get_model_config(TINY_BERT_BACKBONE)})
    )
    with pytest.raises(BackboneWeightsNotFoundError) as e:
        load_backbone(str(tmp_path), offline=True)
    assert "no weights" in str(e.value) and "hf download" in str(e.value) and str(e.value).count("\n") == 0
    assert load_backbone(str(tmp_path), None, offline=True).checkpoint is None  # random weights when asked for
    save_weights(source.model, tmp_path / "open_clip_model.safetensors")
    loaded = load_backbone(str(tmp_path), offline=True)
    assert _same_weights(loaded.model, source.model)
    for ours, theirs in zip(features(loaded), features(source)):
        torch.testing.assert_close(ours, theirs)


def test_biomedclip_without_its_vocabulary_names_the_download(tmp_path):
    with pytest.raises(BackboneWeightsNotFoundError) as e:
        load_backbone(BIOMEDCLIP_ARCHITECTURE, None, offline=True, cache_dir=tmp_path)
    msg = str(e.value)
    assert "tokenizer vocabulary of 'microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract'" in msg
    assert "hf download microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract" in msg and msg.count("\n") == 0


@pytest.mark.slow  # builds the full-size towers (about 200 M parameters)
def test_biomedclip_architecture_builds_at_full_size_with_a_stand_in_vocabulary(tmp_path):
    """BiomedCLIP's open_clip_config.json facts, random weights, offline; the real vocabulary is not here."""
    config = open_clip.get_model_config(BIOMEDCLIP_ARCHITECTURE)
    assert config["embed_dim"] == 512 and config["text_cfg"]["context_length"] == 256
    assert config["vision_cfg"]["timm_model_name"] == "vit_base_patch16_224"
    assert config["text_cfg"]["hf_model_name"] == "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
    assert (config["text_cfg"]["hf_proj_type"], config["text_cfg"]["hf_pooler_type"]) == (
        "mlp",
        "cls_last_hidden_state_pooler",
    )
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(TINY_VOCABULARY / name, tmp_path / name)
    torch.manual_seed(0)
    backbone = load_backbone(str(tmp_path), None, offline=True, cache_dir=tmp_path / "empty-cache")
    model = backbone.model
    bert = model.text.transformer
    assert (bert.config.hidden_size, bert.config.num_hidden_layers, bert.config.vocab_size) == (768, 12, 30522)
    assert type(model.text.pooler).__name__ == "ClsLastHiddenStatePooler"
    assert [m.out_features for m in model.text.proj if isinstance(m, torch.nn.Linear)] == [640, 512]
    assert (model.visual.trunk.embed_dim, len(model.visual.trunk.blocks), backbone.image_size) == (768, 12, 224)
    assert 190e6 < sum(p.numel() for p in model.parameters()) < 200e6
    text, vision = build_text_tower(model, backbone.tokenizer), build_vision_tower(model)
    assert (text.width, text.num_layers, text.context_length, vision.width) == (768, 12, 256, 768)
    texts = ["a photo of a melanoma.", "covid"]
    with torch.no_grad():
        expected = model.encode_text(backbone.tokenizer(texts))
        assert expected.shape == (2, 512)
        torch.testing.assert_close(text.encode_texts(texts), expected, rtol=1e-4, atol=1e-5)


# ----- the MLP activation of local weights follows their provenance ------------------------------------------------

GELU_SHAPE = "CILMP-Test-Tiny-GELU"  # like ViT-B-16: a GELU config whose 'openai' tag was trained with QuickGELU


@pytest.fixture
def tagged_tiny(tmp_path_factory, monkeypatch):
    """A tiny GELU config with an 'openai' tag (QuickGELU) and a 'laion' tag (GELU), and OpenAI-style weights
    (trained with QuickGELU) of it in a Hugging Face cache under the 'openai' tag's repository."""
    folder = tmp_path_factory.mktemp("gelu_config")
    config = {**copy.deepcopy(open_clip.get_model_config(TINY_BACKBONE)), "quick_gelu": False}
    (folder / f"{GELU_SHAPE}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    tags = {
        "openai": {"hf_hub": "test-org/tiny-clip.openai/", "quick_gelu": True},
        "laion": {"hf_hub": "test-org/tiny-clip.laion/"},
    }
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, GELU_SHAPE, tags)
    torch.manual_seed(7)
    openai_style = load_backbone(GELU_SHAPE, None, quick_gelu=True)
    weights = tmp_path_factory.mktemp("weights") / "open_clip_pytorch_model.bin"
    torch.save(openai_style.model.state_dict(), weights)
    cache = tmp_path_factory.mktemp("hf_cache")
    snapshot = fake_hub_repo(cache, "test-org/tiny-clip.openai", {"open_clip_pytorch_model.bin": weights})
    return cache, snapshot / "open_clip_pytorch_model.bin", weights


def _activation(backbone) -> str:
    return type(backbone.model.transformer.resblocks[0].mlp.gelu).__name__


def test_a_file_of_openai_style_weights_gives_the_features_of_the_tag(tagged_tiny, tmp_path):
    cache, cached_file, loose_file = tagged_tiny
    tag = load_backbone(GELU_SHAPE, "openai", offline=True, cache_dir=cache)
    assert _activation(tag) == "QuickGELU"
    expected = features(tag)

    # the same file given by path: its place in the Hugging Face cache says which tag it is
    from_cache = load_backbone(GELU_SHAPE, str(cached_file), offline=True)
    # a copy with the open_clip_config.json that `hf download` puts next to it
    (tmp_path / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": {**open_clip.get_model_config(GELU_SHAPE), "quick_gelu": True}})
    )
    shutil.copy(loose_file, tmp_path / "open_clip_pytorch_model.bin")
    from_sibling = load_backbone(GELU_SHAPE, str(tmp_path / "open_clip_pytorch_model.bin"), offline=True)
    # a bare file, its activation said explicitly
    explicit = load_backbone(GELU_SHAPE, str(loose_file), offline=True, quick_gelu=True)
    for backbone in (from_cache, from_sibling, explicit):
        assert _activation(backbone) == "QuickGELU"
        for ours, theirs in zip(features(backbone), expected):
            torch.testing.assert_close(ours, theirs)

    gelu = load_backbone(GELU_SHAPE, str(loose_file), offline=True, quick_gelu=False)
    assert _activation(gelu) == "GELU" and not torch.allclose(features(gelu)[1], expected[1], atol=1e-4)


def test_a_bare_file_of_an_ambiguous_model_is_refused_in_one_sentence(tagged_tiny):
    _, _, loose_file = tagged_tiny
    with pytest.raises(ValueError) as e:
        load_backbone(GELU_SHAPE, str(loose_file), offline=True)
    msg = str(e.value)
    assert "does not say which MLP activation" in msg and "quick_gelu=True" in msg and msg.count("\n") == 0


def test_networks_take_quick_gelu_where_they_take_the_backbone(tagged_tiny):
    from monai_cilmp.networks import CoOp

    _, _, loose_file = tagged_tiny
    net = CoOp(["melanoma", "nevus"], GELU_SHAPE, str(loose_file), offline=True, n_ctx=2, quick_gelu=True)
    assert type(net.text_tower.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"


def test_a_config_with_quick_gelu_can_be_switched_off():
    assert _activation(load_backbone(TINY_BACKBONE, None)) == "QuickGELU"
    assert _activation(load_backbone(TINY_BACKBONE, None, quick_gelu=False)) == "GELU"


def test_openai_release_archives_are_told_from_state_dicts(tmp_path):
    """OpenAI released CLIP as TorchScript archives (trained with QuickGELU); torch.save writes plain ones."""
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "scripted.pt")
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "state.pt")
    assert backbone_checkpoints._is_torchscript(str(tmp_path / "scripted.pt"))
    assert not backbone_checkpoints._is_torchscript(str(tmp_path / "state.pt"))
    assert backbone_activation._quick_gelu_from_provenance("ViT-B-16", str(tmp_path / "scripted.pt")) is True
    assert backbone_activation._quick_gelu_from_provenance("ViT-B-16", str(tmp_path / "state.pt")) is None
    (tmp_path / "ViT-B-16.pt").write_bytes(b"")  # the file name of OpenAI's ViT-B/16 release
    assert backbone_activation._quick_gelu_from_provenance("ViT-B-16", str(tmp_path / "ViT-B-16.pt")) is True


def test_missing_weights_without_a_network_fail_at_once(monkeypatch):
    """Without a connection to the hub, only the cache is asked (no minute of retries), and the error says what to
    download."""
    import huggingface_hub

    from monai_cilmp.networks import backbones

    calls: list[bool] = []

    def download(repo_id, filename, cache_dir=None, local_files_only=False):
        calls.append(local_files_only)
        raise huggingface_hub.errors.LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(backbone_weights, "_reachable", lambda url, timeout=3.0: False)
    with pytest.raises(backbones.BackboneWeightsNotFoundError, match="not available here: download them once with"):
        backbones.load_backbone("ViT-B-16", "openai")
    assert calls and all(calls)  # every look-up was cache-only


def test_random_weights_are_the_same_whatever_the_global_random_state():
    """A run on random weights (``--pretrained none``) is rebuilt with the very same backbone by evaluation."""
    from monai_cilmp.networks.backbones import load_backbone

    torch.manual_seed(123)
    first = load_backbone("CILMP-Tiny", None).model.state_dict()
    state = torch.random.get_rng_state()
    second = load_backbone("CILMP-Tiny", "none").model.state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)  # the global stream is left alone
    assert all(torch.equal(first[k], second[k]) for k in first)
    third = load_backbone("CILMP-Tiny", None, init_seed=1).model.state_dict()
    assert not all(torch.equal(first[k], third[k]) for k in first)


def test_project_weights_by_name(tmp_path, monkeypatch):
    """``--backbone CILMP-Tiny --pretrained synthetic``: the demo's pre-trained tiny CLIP, kept under a name."""
    from safetensors.torch import save_file

    from monai_cilmp.demo.pipeline import keep_backbone
    from monai_cilmp.networks.backbones import BackboneWeightsNotFoundError, load_backbone

    monkeypatch.setenv("MONAI_CILMP_HOME", str(tmp_path / "home"))
    with pytest.raises(BackboneWeightsNotFoundError, match=r"are made by `monai-cilmp demo` .* run it once"):
        load_backbone("CILMP-Tiny", "synthetic")
    weights = load_backbone("CILMP-Tiny", None, init_seed=5).model.state_dict()
    save_file({k: v.contiguous() for k, v in weights.items()}, tmp_path / "made.safetensors")
    kept = keep_backbone(tmp_path / "made.safetensors")
    assert kept.parent == tmp_path / "home" / "backbones"
    loaded = load_backbone("CILMP-Tiny", "synthetic").model.state_dict()
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)


class _Payload:
    """What a hostile checkpoint holds: unpickling it calls ``os.system`` (here: creates a marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _tiny_archive(path, seed=3):
    """A TorchScript archive of a traced tiny CLIP, as OpenAI released theirs (``torch.jit.save``)."""
    model = load_backbone(TINY_BACKBONE, None, init_seed=seed).model.eval()
    images = torch.zeros(1, 3, model.visual.image_size[0], model.visual.image_size[0])
    tokens = torch.zeros(1, model.context_length, dtype=torch.long)
    with torch.no_grad():
        traced = torch.jit.trace(model, (images, tokens), strict=False, check_trace=False)
    torch.jit.save(traced, str(path))
    return model.state_dict()


def test_a_torchscript_archive_loads_its_exact_weights(tmp_path):
    """Issue 21: OpenAI's release format (a TorchScript archive) is read with ``torch.jit.load`` (no Python pickle)
    and its weights go into the model open_clip builds; no ``load_openai_model`` (a TypeError on open_clip 3)."""
    original = _tiny_archive(tmp_path / "tiny.pt")
    assert backbone_checkpoints._is_torchscript(str(tmp_path / "tiny.pt"))
    loaded = load_backbone(TINY_BACKBONE, str(tmp_path / "tiny.pt")).model.state_dict()
    assert set(loaded) == set(original)
    assert all(torch.equal(loaded[k], original[k]) for k in original)
    other = load_backbone(TINY_BACKBONE, None, init_seed=4).model.state_dict()
    assert not torch.equal(other["visual.conv1.weight"], loaded["visual.conv1.weight"])


def test_a_torchscript_archive_with_a_pickle_payload_never_runs_it(tmp_path):
    """TorchScript's unpickler resolves only tensors, torch types and the archive's own TorchScript classes: a
    ``posix.system`` global put into the archive's data.pkl is an error, and the payload never runs."""
    import pickle
    import zipfile

    _tiny_archive(tmp_path / "tiny.pt")
    marker = tmp_path / "PAYLOAD_RAN"
    with zipfile.ZipFile(tmp_path / "tiny.pt") as source, zipfile.ZipFile(tmp_path / "evil.pt", "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith("/data.pkl"):
                data = pickle.dumps(_Payload(marker), protocol=2)
            target.writestr(item, data)
    assert backbone_checkpoints._is_torchscript(str(tmp_path / "evil.pt"))
    with pytest.raises(ValueError, match="looks like a TorchScript archive but could not be read as one"):
        load_backbone(TINY_BACKBONE, str(tmp_path / "evil.pt"))
    with pytest.raises(Exception, match="posix.system|unknown type"):  # torch's own refusal, checked directly
        torch.jit.load(str(tmp_path / "evil.pt"))
    assert not marker.exists()


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_a_pickle_handed_as_a_checkpoint_is_refused_unrun(tmp_path, how):
    import pickle

    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / "weights.pt"
    if how == "pickle":
        path.write_bytes(pickle.dumps({"visual.conv1.weight": _Payload(marker)}, protocol=2))
    else:
        torch.save({"state_dict": _Payload(marker)}, path)
    with pytest.raises(ValueError) as error:
        load_backbone(TINY_BACKBONE, str(path), quick_gelu=True)
    assert str(error.value) == (
        f"Checkpoint '{path}' holds Python objects besides tensors (posix.system), which are never loaded "
        "(unpickling them could run code): save the weights as a state dict, with safetensors or "
        "torch.save(model.state_dict())."
    )
    assert not marker.exists()
