"""BackboneSpec: one object says which backbone a network is built on; the old keywords keep working."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from monai_cilmp.networks import BackboneSpec, build_method, resolve_backbone
from monai_cilmp.networks.backbone_spec import BACKBONE_OPTIONS
from monai_cilmp.networks.nets import CoOp, TipAdapter, get_method, list_methods

CLASSES = ["melanoma", "nevus", "basal cell carcinoma"]
TINY = BackboneSpec("CILMP-Tiny", None, offline=True)


def test_a_spec_builds_the_same_network_as_the_keywords():
    from_spec = CoOp(CLASSES, TINY, n_ctx=4, ctx_init="a photo of a").eval()
    from_keywords = CoOp(CLASSES, "CILMP-Tiny", None, offline=True, n_ctx=4, ctx_init="a photo of a").eval()
    images = torch.rand(2, 3, from_spec.image_size, from_spec.image_size)
    assert from_spec.backbone_name == "CILMP-Tiny" and from_spec.backbone_pretrained is None
    with torch.no_grad():
        torch.testing.assert_close(from_spec(images), from_keywords(images), rtol=0, atol=0)


def test_build_method_takes_a_spec(shared_backbone):
    net = build_method("tip-adapter", CLASSES, dataclasses.replace(TINY, quick_gelu=False))
    assert type(net) is TipAdapter and net.backbone_name == "CILMP-Tiny"
    assert resolve_backbone(shared_backbone, "ignored", offline=True) is shared_backbone


def test_options_beside_a_spec_or_unknown_options_are_refused():
    with pytest.raises(TypeError, match="set them in the spec"):
        CoOp(CLASSES, TINY, offline=True)
    with pytest.raises(TypeError, match=r"\['ofline'\]"):
        CoOp(CLASSES, "CILMP-Tiny", None, ofline=True)


def test_every_network_takes_the_backbone_options_the_same_way():
    """No network spells out a backbone option itself any more (quick_gelu used to be missing from eight of them)."""
    assert BACKBONE_OPTIONS == ("offline", "cache_dir", "quick_gelu")
    for name in list_methods():
        parameters = inspect.signature(get_method(name).network.__init__).parameters
        assert not set(BACKBONE_OPTIONS) & set(parameters), name
        assert parameters["backbone_options"].kind is inspect.Parameter.VAR_KEYWORD, name
        assert list(parameters).index("pretrained") == list(parameters).index("backbone") + 1, name
