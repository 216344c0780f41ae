"""Every method of the registry: builds by name, trains only its own parameters, shares the engine's interface."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_cilmp.networks.backbones import TINY_BERT_BACKBONE, TINY_TIMM_BACKBONE
from monai_cilmp.networks.nets import (
    METHODS,
    CLIPClassifier,
    MethodSpec,
    build_method,
    get_method,
    list_methods,
    register_method,
)
from tests.conftest import CLASSES, random_bank

DESCRIPTIONS = {c: [f"a medical image of {c}", f"{c} seen in a scan"] for c in CLASSES}
KNOWLEDGE = {f"knowledge.layers.{j}." for j in range(3)}
# CILMP and its variants at depth 3 instead of 12, to keep the tests fast (test_cilmp.py checks the full depth)
SHALLOWER = {"text_prompt_depth": 3, "vision_prompt_depth": 3}

# the trained parameters of each method, exactly (prefixes ending in "." stand for a whole submodule)
OWN_PARAMETERS: dict[str, set[str]] = {
    "zero-shot-name": set(),
    "zero-shot-template": set(),
    "zero-shot-ensemble": set(),
    "zero-shot-attributes": set(),
    "zero-shot-descriptions": set(),
    "linear-probe": {"head.weight", "head.bias"},
    "linear-probe-zs": {"head.weight", "head.bias"},
    "coop": {"ctx"},
    "coop-csc": {"ctx"},
    "cocoop": {"ctx", "meta_net.0.weight", "meta_net.0.bias", "meta_net.2.weight", "meta_net.2.bias"},
    "kgcoop": {"ctx"},
    "ivlp": {"text_prompts", "vision_prompts"},
    "cilmp": {"text_prompts", "vision_prompts"} | KNOWLEDGE,
    "cilmp-uncond": {"text_prompts", "vision_prompts"} | KNOWLEDGE,
    "cilmp-shallow": {"text_prompts", "vision_prompts", "knowledge.layers.0."},
    "cilmp-nogpa": {"text_prompts", "vision_prompts"} | KNOWLEDGE,
    "biomedcoop": {"ctx"},
    "clip-adapter": {"adapter.0.weight", "adapter.2.weight"},
    "tip-adapter": set(),
    "tip-adapter-f": {"cache_keys"},
    "lp++": {"visual_weight", "bias", "alpha"},
    "prograd": {"ctx"},
    "maple": {"text_prompts", "coupling."},
    "promptsrc": {"text_prompts", "vision_prompts"},
}
# what a checkpoint keeps besides the trained parameters: the state a method fits from the training set
FITTED_STATE: dict[str, set[str]] = {
    "tip-adapter": {"cache_keys", "cache_values", "alpha_beta"},
    "tip-adapter-f": {"cache_values", "alpha_beta"},
}


def build(name: str, backbone, fit: bool = True, **kwargs) -> CLIPClassifier:
    """The method's network; one that is built from training features is fitted on features of random images."""
    torch.manual_seed(1)
    if get_method(name).network.__name__ in ("CILMP", "IVLP", "PromptSRC"):
        kwargs = {**SHALLOWER, **kwargs}
    if get_method(name).network.__name__ == "MaPLe":
        kwargs = {"prompt_depth": 3, **kwargs}
    net = build_method(name, CLASSES, backbone, knowledge=random_bank(), descriptions=DESCRIPTIONS, **kwargs)
    if fit and net.uses_training_features:
        net.fit_training_features(net.encode_image(images(8, seed=5)), torch.arange(8) % len(CLASSES))
    return net


def images(n=4, seed=0, size=64) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def train_one_step(net: CLIPClassifier, trains: bool, image_size: int = 64) -> None:
    """Forward (eval-shaped logits), then, for a method that trains, one SGD step that moves only its parameters."""
    state = net.trainable_state_dict()
    frozen = {n: p.detach().clone() for n, p in net.named_parameters() if not p.requires_grad}
    out = net(images(size=image_size))
    assert out.shape == (4, len(CLASSES)) and torch.isfinite(out).all()
    if not trains:
        return
    loss = F.cross_entropy(out, torch.arange(4))
    guide = net.guide_loss()  # ProGrad's KL guide: its gradient must reach the prompts too
    if guide is not None:
        loss = loss + guide
    extra = net.regularization_loss()
    if extra is not None:
        loss = loss + extra
    loss.backward()
    for n, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {n}"
        else:
            assert p.grad is None, f"frozen {n} got a gradient"
    with torch.no_grad():
        for p in net.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    assert all(torch.equal(p, frozen[n]) for n, p in net.named_parameters() if not p.requires_grad)
    assert any(not torch.equal(v, state[k]) for k, v in net.trainable_state_dict().items())


def _owned(name: str, key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in OWN_PARAMETERS[name])


def test_the_registry_lists_every_method_of_the_comparison():
    assert set(list_methods()) == set(OWN_PARAMETERS)


@pytest.mark.parametrize("name", list(OWN_PARAMETERS))
def test_method_trains_only_its_own_parameters(shared_backbone, name):
    net = build(name, shared_backbone).train()
    spec = get_method(name)
    state = net.trainable_state_dict()
    fitted = FITTED_STATE.get(name, set())
    assert fitted <= set(state)
    state = {k: v for k, v in state.items() if k not in fitted - OWN_PARAMETERS[name]}
    assert all(_owned(name, k) for k in state), sorted(state)
    assert all(any(k == o or k.startswith(o) for k in state) for o in OWN_PARAMETERS[name])
    assert net.num_trainable_parameters() == sum(v.numel() for v in state.values())
    assert spec.needs_training == bool(state) or name in FITTED_STATE
    assert not any(t.training for t in net.frozen_towers())
    assert set(net.prompt_parameter_names()) <= set(state)

    train_one_step(net, bool(state))


@pytest.mark.parametrize("name", ["coop", "cocoop", "linear-probe-zs", "ivlp", "maple", "lp++", "promptsrc"])
def test_trainable_state_round_trip_and_mismatch(shared_backbone, name):
    net = build(name, shared_backbone).eval()
    with torch.no_grad():
        for p in net.trainable_parameters().values():
            p.add_(torch.randn_like(p) * 0.1)
    other = build(name, shared_backbone).eval()
    x = images(2)
    assert not torch.allclose(other(x), net(x))
    other.load_trainable_state_dict(net.trainable_state_dict())
    torch.testing.assert_close(other(x), net(x))
    state = net.trainable_state_dict()
    state["extra"] = state.popitem()[1]
    with pytest.raises(ValueError, match=rf"does not fit this {type(net).__name__}: missing \[.+\], unexpected"):
        other.load_trainable_state_dict(state)


def test_networks_accept_meta_tensors_and_expose_the_engine_attributes(shared_backbone):
    from monai.data import MetaTensor

    x = images(2)
    for name in ("zero-shot-template", "linear-probe", "coop", "cocoop"):
        net = build(name, shared_backbone).eval()
        torch.testing.assert_close(net(MetaTensor(x)), net(x))
        assert net.class_names == CLASSES and net.image_size == 64
        assert len(net.image_mean) == len(net.image_std) == 3
        assert net.backbone_name == "CILMP-Tiny" and net.backbone_pretrained is None


def test_registry_facts():
    assert not get_method("zero-shot-name").needs_training and get_method("coop").needs_training
    assert get_method("cilmp").needs_knowledge and not get_method("ivlp").needs_knowledge
    assert get_method("zero-shot-attributes").uses_descriptions
    assert get_method("linear-probe").cached_features and not get_method("coop").cached_features
    assert get_method("cilmp").gpa and get_method("cilmp").recipe_overrides == {}
    assert not get_method("cilmp-nogpa").gpa and get_method("cilmp-nogpa").recipe_overrides == {"gpa_std": 0.0}
    assert get_method("cilmp-nogpa").network is get_method("cilmp").network


def test_unknown_method_suggests_the_closest_name(shared_backbone):
    with pytest.raises(ValueError, match="did you mean .kgcoop."):
        build("kgcop", shared_backbone)


def test_knowledge_methods_need_a_bank(shared_backbone):
    with pytest.raises(ValueError, match="Method 'cilmp-shallow' needs a knowledge bank"):
        build_method("cilmp-shallow", CLASSES, shared_backbone)


def test_keywords_override_the_method_defaults(shared_backbone):
    net = build("coop", shared_backbone, n_ctx=4, ctx_init="a photo of a")
    assert net.ctx.shape == (4, shared_backbone.model.transformer.width)
    shallow = build("cilmp-shallow", shared_backbone, text_prompt_depth=3)
    assert shallow.knowledge_depth == 1 and shallow.text_prompt_depth == 3


def test_register_method_refuses_to_overwrite():
    spec = METHODS["coop"]
    with pytest.raises(ValueError, match="already registered"):
        register_method(spec)
    register_method(MethodSpec("coop", spec.network, spec.summary, spec.kwargs), overwrite=True)
    assert get_method("coop").network is spec.network
    METHODS["coop"] = spec


def test_config_parser_builds_every_network_by_full_path(tmp_path):
    from monai.bundle import ConfigParser

    targets = {
        "ZeroShotCLIP": {"text": "ensemble"},
        "LinearProbe": {"init": "zero-shot"},
        "CoOp": {"n_ctx": 4, "class_specific": True},
        "CoCoOp": {},
        "KgCoOp": {"kg_weight": 2.0},
        "IVLP": {"text_prompt_depth": 2},
        "CILMP": {"knowledge_depth": 1, "text_prompt_depth": 2, "knowledge": "@bank"},
    }
    config = {
        "bank": str(random_bank().save(tmp_path / "kb.safetensors")),
        "backbone": {"_target_": "monai_cilmp.networks.load_backbone", "name": "CILMP-Tiny", "pretrained": None},
        **{
            name: {
                "_target_": f"monai_cilmp.networks.nets.{name}",
                "class_names": CLASSES,
                "backbone": "@backbone",
                **kw,
            }
            for name, kw in targets.items()
        },
    }
    parser = ConfigParser(config)
    for name in targets:
        net = parser.get_parsed_content(name)
        assert type(net).__name__ == name and isinstance(net, CLIPClassifier)
        assert net(images(1)).shape == (1, len(CLASSES))
    # a backbone given by name (as bundle configs do) is loaded by the network itself
    config["CoOp"] |= {"backbone": "CILMP-Tiny", "pretrained": None, "offline": True}
    assert ConfigParser(config).get_parsed_content("CoOp").backbone_name == "CILMP-Tiny"


@pytest.mark.parametrize("family", [TINY_TIMM_BACKBONE, TINY_BERT_BACKBONE])
@pytest.mark.parametrize("name", list(OWN_PARAMETERS))
def test_method_trains_and_evaluates_on_every_tower_family(family_backbones, family, name):
    backbone = family_backbones[family]
    net = build(name, backbone).train()
    state = net.trainable_state_dict()
    # what a method fits from the training features (Tip-Adapter's cache) is state, but not trained
    state = {k: v for k, v in state.items() if k not in FITTED_STATE.get(name, set()) - OWN_PARAMETERS[name]}
    assert all(_owned(name, k) for k in state), sorted(state)
    assert get_method(name).needs_training == bool(state) or name in FITTED_STATE
    assert not any(t.training for t in net.frozen_towers())
    assert type(net.vision_tower).__name__ == "TimmVisionTower"
    if hasattr(net, "text_tower"):
        expected = "HFTextTower" if family == TINY_BERT_BACKBONE else "OpenCLIPTextTower"
        assert type(net.text_tower).__name__ == expected
    train_one_step(net, bool(state), backbone.image_size)
    net.eval()
    x = images(2, seed=3, size=backbone.image_size)
    with torch.no_grad():
        out = net(x)
        assert out.shape == (2, len(CLASSES)) and torch.isfinite(out).all()
        torch.testing.assert_close(net(x), out)
