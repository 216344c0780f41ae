"""Zero-shot CLIP: text kinds, prompt ensembling, texts from the project's knowledge."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from monai_cilmp.knowledge import ClassDescription
from monai_cilmp.networks.nets import MEDICAL_TEMPLATES, ZeroShotCLIP, knowledge_prompts, zero_shot_texts
from tests.conftest import CLASSES


def _encode(backbone, texts) -> torch.Tensor:
    with torch.no_grad():
        return F.normalize(backbone.model.encode_text(backbone.tokenizer(list(texts))), dim=-1)


def test_text_kinds_give_different_class_features(shared_backbone):
    prompts = {c: [f"a scan showing {c}", f"{c} in an image"] for c in CLASSES}
    nets = {
        kind: ZeroShotCLIP(CLASSES, shared_backbone, text=kind, prompts=prompts if kind == "descriptions" else None)
        for kind in ("name", "template", "ensemble", "descriptions")
    }
    assert nets["name"].prompts["covid"] == ["covid"]
    assert nets["template"].prompts["covid"] == ["a photo of a covid."]
    assert len(nets["ensemble"].prompts["covid"]) == len(MEDICAL_TEMPLATES)
    features = [net.text_features() for net in nets.values()]
    for i in range(len(features)):
        for j in range(i + 1, len(features)):
            assert not torch.allclose(features[i], features[j])
    assert not any(p.requires_grad for net in nets.values() for p in net.parameters())
    assert all("text_tower" not in dict(net.named_children()) for net in nets.values())


def test_template_logits_are_open_clips(shared_backbone):
    net = ZeroShotCLIP(CLASSES, shared_backbone, text="template").eval()
    x = torch.randn(3, 3, 64, 64)
    text = _encode(shared_backbone, [f"a photo of a {c}." for c in CLASSES])
    with torch.no_grad():
        image = F.normalize(shared_backbone.model.encode_image(x), dim=-1)
        logits = net(x)
    torch.testing.assert_close(net.text_features(), text, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, net.logit_scale.exp() * image @ text.T, rtol=1e-4, atol=1e-4)


def test_variants_are_averaged_after_normalisation(shared_backbone):
    prompts = {c: [f"pink, round {c}", f"a small {c} in the middle", c] for c in CLASSES}
    net = ZeroShotCLIP(CLASSES, shared_backbone, prompts=prompts)
    assert net.text == "descriptions"
    for c, name in enumerate(CLASSES):
        expected = F.normalize(_encode(shared_backbone, prompts[name]).mean(0), dim=-1)
        torch.testing.assert_close(net.text_features()[c], expected, rtol=1e-5, atol=1e-5)


def test_attribute_prompts_from_descriptions_with_synonyms():
    descriptions = {
        "polyps": ClassDescription(
            "polyps", "A polyp.", synonyms=("bump",), attributes={"colour": "pink", "shape": "round"}
        ),
        "normal": ClassDescription("normal", "Normal mucosa."),
    }
    prompts = knowledge_prompts(["polyps", "normal"], descriptions)
    assert len(prompts["polyps"]) == 2 and "polyps" in prompts["polyps"][0] and "bump" in prompts["polyps"][1]
    assert all("pink" in p and "round" in p for p in prompts["polyps"])
    assert prompts["normal"] == ["Normal mucosa."]  # no attributes: the description text
    assert knowledge_prompts(["polyps", "normal"], descriptions, kind="descriptions")["polyps"] == ["A polyp."]
    assert knowledge_prompts(["polyps", "normal"], descriptions, kind="all")["polyps"][-1] == "A polyp."


def test_knowledge_prompts_from_curated_descriptions_and_files(tmp_path):
    from monai_cilmp.knowledge import describe

    curated = knowledge_prompts(["polyps", "esophagitis"], dataset="kvasir")
    described = describe(["polyps", "esophagitis"], dataset="kvasir")
    assert curated["polyps"][0] == described["polyps"].attribute_prompt()

    path = tmp_path / "descriptions.json"
    path.write_text(json.dumps({"a": "first class text", "b": {"description": "second class text"}}))
    assert knowledge_prompts(["a", "b"], path) == {"a": ["first class text"], "b": ["second class text"]}

    from monai_cilmp.knowledge.attributes import ATTRIBUTE_PROMPTS_FORMAT

    attributes = tmp_path / "attributes.json"
    attributes.write_text(
        json.dumps({"format": ATTRIBUTE_PROMPTS_FORMAT, "classes": {"a": {"prompts": ["red a", "dark a"]}}})
    )
    assert knowledge_prompts(["a"], str(attributes)) == {"a": ["red a", "dark a"]}


def test_from_knowledge(shared_backbone):
    descriptions = {c: ClassDescription(c, f"{c} text", attributes={"colour": "grey"}) for c in CLASSES}
    net = ZeroShotCLIP.from_knowledge(CLASSES, shared_backbone, descriptions=descriptions)
    assert net.prompts["covid"] == [descriptions["covid"].attribute_prompt()]


def test_errors():
    with pytest.raises(ValueError, match="did you mean 'ensemble'"):
        zero_shot_texts(CLASSES, "ensembel")
    with pytest.raises(ValueError, match="needs prompts"):
        zero_shot_texts(CLASSES, "descriptions")
    with pytest.raises(ValueError, match=r"lack texts for the classes \['covid'\]"):
        zero_shot_texts(CLASSES, "descriptions", prompts={c: [c] for c in CLASSES[:3]})
    with pytest.raises(ValueError, match="must each contain"):
        zero_shot_texts(CLASSES, "template", template="a photo")
