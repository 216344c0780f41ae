"""Curated descriptions: coverage of the registry, the CLIP budget, look-up rules and description files."""

from __future__ import annotations

import json

import pytest

from monai_cilmp.data.registry import get_dataset, list_datasets
from monai_cilmp.knowledge import (
    ClassDescription,
    clip_token_count,
    curated_datasets,
    describe,
    generic_description,
    knowledge_length_cap,
    load_description_file,
    load_descriptions,
)
from monai_cilmp.knowledge.embedded import embedded_model_dir


def test_every_registered_dataset_is_curated_unless_the_registry_says_otherwise():
    assert curated_datasets() == [name for name in list_datasets() if get_dataset(name).curated_descriptions]


@pytest.mark.parametrize("dataset", curated_datasets())
def test_every_class_has_a_distinct_description_that_fits_the_context(dataset):
    from transformers import AutoTokenizer

    minilm = AutoTokenizer.from_pretrained(embedded_model_dir())
    spec = get_dataset(dataset)
    descriptions = load_descriptions(dataset)
    assert list(descriptions) == list(spec.class_names)
    texts = [d.text for d in descriptions.values()]
    assert len(set(texts)) == len(texts), "descriptions of one dataset must differ"
    for name, d in descriptions.items():
        assert d.source == f"curated:{spec.name}"
        assert clip_token_count(d.text) <= 40, (name, clip_token_count(d.text))
        tokens = len(minilm(d.text, add_special_tokens=False)["input_ids"])
        assert tokens <= knowledge_length_cap(name), (name, tokens)
        assert d.synonyms and all(s.strip() for s in d.synonyms)
        assert set(d.attributes) == {"colour", "shape", "texture", "location"}
        assert all(v.strip() for v in d.attributes.values())
        assert d.attribute_prompt()  # composable


def test_curated_files_key_exactly_the_registry_classes():
    import importlib.resources

    folder = importlib.resources.files("monai_cilmp.knowledge") / "descriptions"
    for name in curated_datasets():
        data = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
        assert data["dataset"] == name
        assert list(data["classes"]) == list(get_dataset(name).class_names)


def test_describe_a_dataset_subset_ignores_case_and_keeps_the_given_names():
    out = describe(["Polyps", "normal_z-line"], dataset="kvasir-v2")
    assert list(out) == ["Polyps", "normal_z-line"]
    assert out["Polyps"].text == load_descriptions("kvasir")["polyps"].text
    assert out["Polyps"].name == "Polyps"


def test_unknown_dataset_and_class_list_the_valid_names():
    with pytest.raises(ValueError, match="Unknown dataset 'kvasr'") as e:
        describe(dataset="kvasr")
    assert all(name in str(e.value) for name in list_datasets())
    with pytest.raises(ValueError, match="Unknown class 'polyp' for dataset 'kvasir'; valid classes: 'dyed lifted"):
        describe(["polyp"], dataset="kvasir")


def test_without_a_dataset_unique_matches_are_curated_and_the_rest_generic():
    out = describe(["bacterial pneumonia", "esophagitis", "normal", "mole", "melanoma", "normal kidney"])
    assert out["bacterial pneumonia"].source == "curated:pneumonia3"  # a synonym of "bacteria pneumonia"
    assert "synonym" in out["bacterial pneumonia"].note
    assert out["esophagitis"].source == "curated:kvasir"
    assert out["melanoma"].source.startswith("curated:")  # several datasets, one shared text
    for name in ("normal", "mole"):  # several different curated texts: ambiguous
        assert out[name].source == "generic" and "give the dataset" in out[name].note
    assert out["normal kidney"] == generic_description(
        "normal kidney", note="no curated description of 'normal kidney'"
    )
    assert out["normal kidney"].text == "A medical image showing normal kidney."


def test_normal_lung_and_normal_chest_x_ray_get_the_curated_normal_text():
    normal = load_descriptions("pneumonia3")["normal"]
    assert load_descriptions("pneumonia2")["normal"].text == normal.text  # one shared text: not ambiguous
    out = describe(["normal lung", "Normal chest X-ray", "bacterial pneumonia", "viral pneumonia"])
    for name in ("normal lung", "Normal chest X-ray"):
        assert out[name].text == normal.text and out[name].source.startswith("curated:pneumonia")
        assert out[name].note == f"'{name}' is a synonym of 'normal'"
    assert out["viral pneumonia"].source == "curated:pneumonia3"


def test_generic_description_uses_the_modality_with_the_right_article():
    assert generic_description("covid", "chest X-ray").text == "A chest X-ray showing covid."
    assert generic_description("ulcer", "endoscopy image").text == "An endoscopy image showing ulcer."


def test_repeated_or_missing_class_names_are_refused():
    with pytest.raises(ValueError, match="repeated"):
        describe(["a", "a"])
    with pytest.raises(ValueError, match="class names or a dataset"):
        describe()


def test_attribute_prompt_uses_the_noun():
    polyps = load_descriptions("kvasir")["polyps"]
    assert polyps.attribute_prompt("bump") == "pink-red, round bump with smooth texture on the colon wall"
    with pytest.raises(ValueError, match="no attributes"):
        ClassDescription("x", "y").attribute_prompt()


def test_description_files(tmp_path):
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"b": "text b", "a": {"description": " text a ", "synonyms": ["alpha"]}}))
    out = load_description_file(plain)
    assert list(out) == ["b", "a"] and out["a"].text == "text a" and out["a"].synonyms == ("alpha",)
    assert out["b"].source == "file:plain.json"
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps({"classes": {"c": {"description": "text c", "attributes": {"colour": [{"v": 1}]}}}}))
    assert load_description_file(nested)["c"].attributes == {}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"c": {"synonyms": []}}))
    with pytest.raises(ValueError, match="Class 'c' in .* has no description"):
        load_description_file(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_description_file(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_description_file(tmp_path / "missing.json")


def test_class_names_are_matched_with_the_one_shared_rule(tmp_path):
    from monai_cilmp.data.datalist import match_label, normalise_class_name
    from monai_cilmp.knowledge.vqa import collect_images

    assert normalise_class_name(" Normal_Z-line ") == "normal z line"
    out = describe(["normal z line", "Normal_Z-Line"], dataset="kvasir")
    assert out["normal z line"].text == load_descriptions("kvasir")["normal z-line"].text
    assert out["Normal_Z-Line"].text == out["normal z line"].text
    assert describe(["normal z line"])["normal z line"].source == "curated:kvasir"
    kvasir = get_dataset("kvasir").class_names
    assert kvasir[match_label("normal z line", kvasir, "x")] == "normal z-line"
    (tmp_path / "normal_z_line").mkdir()
    (tmp_path / "normal_z_line" / "a.png").write_bytes(b"")
    assert [p.name for p in collect_images(tmp_path, ["normal z-line"])["normal z-line"]] == ["a.png"]
