"""Attribute prompts: the fill-mask filter, VQA answers and their cache, the hybrid, and prompt composition."""

from __future__ import annotations

import json

import pytest
import torch

from monai_cilmp.knowledge import (
    ATTRIBUTES,
    AttributeValue,
    MaskedLMAttributes,
    VQAAttributes,
    attribute_prompts,
    collect_images,
    compose_prompt,
    load_description_file,
    normalise_answer,
    zero_shot_prompts,
)
from monai_cilmp.knowledge.attributes import save_attribute_prompts, stop_words
from monai_cilmp.knowledge.embedded import sha256_file
from tests.knowledge.conftest import bpe_tokenizer


@pytest.fixture(scope="module")
def mlm(tiny_models) -> MaskedLMAttributes:
    return MaskedLMAttributes.from_pretrained(tiny_models["mlm"], device="cpu")


def test_fill_mask_keeps_whole_content_words_only(mlm, tiny_models):
    filled = mlm.fill(["polyp"], top_k=4)["polyp"]
    # the model ranks: a "##" piece, "the", ",", [SEP], red, color, polyp, round, of, pink, smooth, dark
    assert [v.value for v in filled["colour"]] == ["red", "round", "pink", "smooth"]  # "color" is the template's
    assert [v.value for v in filled["shape"]] == ["red", "color", "round", "pink"]  # "polyp" is the class name
    for values in filled.values():
        scores = [v.score for v in values]
        assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
        for v in values:
            assert v.source == "mlm" and v.value.isalpha() and v.value not in stop_words()
            assert not v.value.startswith("##") and v.value != tiny_models["piece"][2:]


def test_stop_words_are_function_words():
    words = stop_words()
    assert {"the", "of", "is", "at", "which"} <= words
    assert not {"thick", "bottom", "red", "round"} & words


def test_word_start_rule_for_byte_level_bpe():
    tokenizer = bpe_tokenizer()
    words = MaskedLMAttributes(torch.nn.Identity(), tokenizer)
    vocab = tokenizer.get_vocab()
    assert words.whole_word(vocab["Ġred"]) == "red"
    assert words.whole_word(vocab["terial"]) is None  # the end of "bac|terial"
    assert words.whole_word(vocab["<mask>"]) is None


def test_the_kth_prompt_combines_the_kth_fillers(mlm):
    result = attribute_prompts(["polyp"], mlm, top_k=3, nouns={"polyp": "bump"})
    entry = result["classes"]["polyp"]
    assert result["sources"] == dict.fromkeys(ATTRIBUTES, "mlm") and result["vqa"] is None
    assert set(result["mlm"]["templates"]) == set(ATTRIBUTES)
    for k in range(3):
        fillers = {a: entry["attributes"][a][k]["value"] for a in ATTRIBUTES}
        assert entry["prompts"][k] == compose_prompt("bump", fillers)
    assert entry["prompts"][0] == "red, red bump with red texture in the red"
    assert entry["description"] == entry["prompts"][0]


def test_compose_prompt():
    assert compose_prompt("polyp", {"colour": "pink", "shape": "round", "location": "rectum"}) == (
        "pink, round polyp in the rectum"
    )
    values = {"colour": AttributeValue("red", "vqa"), "texture": "smooth", "location": "the stomach", "shape": None}
    assert compose_prompt("bump", values) == "red bump with smooth texture in the stomach"
    assert compose_prompt("bump", {"location": "on the colon wall"}) == "bump on the colon wall"
    assert compose_prompt("bump", {}) == "bump"


def test_normalise_answer():
    assert normalise_answer("The  Pink.") == "pink"
    assert normalise_answer("a round, smooth bump!") == "round smooth bump"
    assert normalise_answer("in the stomach") == "in the stomach"
    assert normalise_answer("dark-red") == "dark-red"
    for uninformative in ("Yes", "unknown", " ", "", None, "?"):
        assert normalise_answer(uninformative) is None


def test_collect_images(images, tmp_path):
    out = collect_images(images, ["polyps", "normal cecum"])
    assert [p.name for p in out["polyps"]] == ["shared.jpg", "a.png", "b.png"]
    assert [p.name for p in out["normal cecum"]] == ["shared.jpg"]
    with pytest.raises(ValueError, match="Sub-folder 'polyps' .* is not one of the classes 'melanoma'"):
        collect_images(images, ["melanoma"])
    with pytest.raises(ValueError, match="No images"):
        collect_images(tmp_path, ["melanoma"])
    with pytest.raises(FileNotFoundError):
        collect_images(tmp_path / "absent", ["melanoma"])


def test_vqa_answers_are_cached_per_image_model_and_question(tiny_models, images, tmp_path, monkeypatch):
    paths = sorted((images / "polyps").iterdir())
    first = VQAAttributes.from_pretrained(tiny_models["blip"], device="cpu", cache_dir=tmp_path)
    values = first.image_attributes(paths, "polyp")
    raw = first.answer([(paths[1], "What is the shape of this polyp?")])[0]
    assert raw["answer"] and 0 < raw["score"] <= 1
    expected = normalise_answer(raw["answer"])
    assert (values[1]["shape"].value if values[1]["shape"] else None) == expected
    assert len(list(tmp_path.rglob("*.json"))) == 2  # one file per image

    def fail(*args, **kwargs):
        raise RuntimeError("the model was asked again")

    second = VQAAttributes.from_pretrained(tiny_models["blip"], device="cpu", cache_dir=tmp_path)
    monkeypatch.setattr(second.model, "generate", fail)
    assert second.image_attributes(paths, "polyp") == values
    with pytest.raises(RuntimeError, match="asked again"):  # a new question
        second.image_attributes(paths, "melanoma")
    other = VQAAttributes(second.model, second.processor, {"source_model": "another model"}, cache_dir=tmp_path)
    with pytest.raises(RuntimeError, match="asked again"):  # another model
        other.image_attributes(paths, "polyp")


def test_hybrid_takes_colour_and_shape_from_vqa_and_the_rest_from_the_mlm(mlm, tiny_models, images, tmp_path):
    vqa = VQAAttributes.from_pretrained(tiny_models["blip"], device="cpu", cache_dir=False)
    answers = {"shared.jpg": ("The Pink.", "oval"), "a.png": ("pink", "Round!"), "b.png": ("red", "round")}

    def ask(paths, questions):
        out = []
        for path, question in zip(paths, questions):
            colour, shape = answers[path.name]
            out.append((colour if "color" in question else shape, 0.5 if path.name == "b.png" else 0.9))
        return out

    vqa._ask = ask
    classes = ["polyps", "normal cecum"]
    result = attribute_prompts(classes, mlm, vqa, collect_images(images, classes), top_k=2)
    assert result["sources"] == {"colour": "vqa", "shape": "vqa", "location": "mlm", "texture": "mlm"}
    assert result["vqa"]["questions"] == {
        "colour": "What color is this {name}?",
        "shape": "What is the shape of this {name}?",
    }
    polyps = result["classes"]["polyps"]
    assert [i["attributes"]["colour"]["value"] for i in polyps["images"]] == ["pink", "pink", "red"]
    assert polyps["attributes"]["colour"] == [
        {"value": "pink", "source": "vqa", "score": 0.9, "support": 2},
        {"value": "red", "source": "vqa", "score": 0.5, "support": 1},
    ]
    assert [v["value"] for v in polyps["attributes"]["shape"]] == ["round", "oval"]
    texture, location = ([v["value"] for v in polyps["attributes"][a]] for a in ("texture", "location"))
    assert {v["source"] for a in ("texture", "location") for v in polyps["attributes"][a]} == {"mlm"}
    assert polyps["prompts"][0] == f"pink, round polyps with {texture[0]} texture in the {location[0]}"
    assert polyps["prompts"][1] == f"red, oval polyps with {texture[1]} texture in the {location[1]}"
    first = polyps["images"][0]
    assert first["sha256"] == sha256_file(images / "shared.jpg")
    assert first["attributes"]["location"] == polyps["attributes"]["location"][0]
    assert first["prompt"] == f"pink, oval polyps with {texture[0]} texture in the {location[0]}"
    cecum = result["classes"]["normal cecum"]
    assert len(cecum["images"]) == 1 and cecum["attributes"]["colour"][0]["support"] == 1


def test_results_are_descriptions_and_zero_shot_prompts(mlm, tmp_path):
    result = attribute_prompts(["polyp", "melanoma"], mlm, top_k=2)
    path = save_attribute_prompts(result, tmp_path / "attributes.json")
    assert json.loads(path.read_text())["format"] == "monai_cilmp.attribute_prompts"
    descriptions = load_description_file(path)
    assert {n: d.text for n, d in descriptions.items()} == {n: e["prompts"][0] for n, e in result["classes"].items()}
    assert zero_shot_prompts(path) == {n: e["prompts"] for n, e in result["classes"].items()}


def test_missing_generators_are_explained(mlm):
    with pytest.raises(ValueError, match="come from a masked LM"):
        attribute_prompts(["polyp"])
    with pytest.raises(ValueError, match="come from a VQA model"):
        attribute_prompts(["polyp"], mlm, sources={"colour": "vqa"})
