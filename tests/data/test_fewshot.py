"""Few-shot sampling and the base/novel class split."""

from __future__ import annotations

from collections import Counter

import pytest

from monai_cilmp.data import base_novel_split, few_shot_datalist, make_datalist, subsample_classes

CLASSES = ["normal", "bacterial pneumonia", "viral pneumonia", "covid", "tuberculosis"]


def datalist(counts=(40, 30, 20, 16, 17)):
    training = [(f"/d/{label}/{i:03d}.png", label) for label, n in enumerate(counts) for i in range(n)]
    validation = [(f"/d/{label}/v{i}.png", label) for label in range(len(counts)) for i in range(5)]
    test = [(f"/d/{label}/t{i}.png", label) for label in range(len(counts)) for i in range(3)]
    return make_datalist({"training": training, "validation": validation, "test": test}, CLASSES, name="toy")


@pytest.mark.parametrize("shots", [1, 2, 4, 8, 16])
def test_k_shots_per_class_are_seeded(shots):
    full = datalist()
    few = few_shot_datalist(full, shots, seed=1)
    assert Counter(i["label"] for i in few["training"]) == dict.fromkeys(range(5), shots)
    assert {i["image"] for i in few["training"]} <= {i["image"] for i in full["training"]}
    assert few["validation"] == full["validation"] and few["test"] == full["test"]
    assert few["few_shot"] == {"shots": shots, "seed": 1, "val_shots": None, "sampler": "monai-cilmp"}
    assert few["name"] == "toy"
    again = few_shot_datalist(dict(full, training=list(reversed(full["training"]))), shots, seed=1)
    assert again["training"] == few["training"]  # the datalist's order does not matter
    if shots < 16:
        assert few_shot_datalist(full, shots, seed=2)["training"] != few["training"]


def test_validation_shots_and_errors():
    few = few_shot_datalist(datalist(), 4, seed=0, val_shots=2)
    assert Counter(i["label"] for i in few["validation"]) == dict.fromkeys(range(5), 2)
    with pytest.raises(ValueError) as e:
        few_shot_datalist(datalist((40, 30, 3, 16, 17)), 4, source="'toy.json'")
    assert str(e.value) == (
        "Class 'viral pneumonia' has only 3 training images in 'toy.json', fewer than the 4 shots asked for."
    )
    with pytest.raises(ValueError, match="shots must be a positive number"):
        few_shot_datalist(datalist(), 0)


def test_base_novel_split_and_relabelling():
    assert base_novel_split(CLASSES) == ([0, 1, 2], [3, 4])
    novel = subsample_classes(datalist(), "novel")
    assert novel["class_names"] == ["covid", "tuberculosis"] and novel["class_subset"] == "novel"
    assert Counter(i["label"] for i in novel["training"]) == {0: 16, 1: 17}
    assert all("/3/" in i["image"] for i in novel["training"] if i["label"] == 0)
    base = subsample_classes(datalist(), "base")
    assert base["class_names"] == CLASSES[:3] and len(base["test"]) == 9
    with pytest.raises(ValueError, match="did you mean 'novel'"):
        subsample_classes(datalist(), "noval")
    with pytest.raises(ValueError, match="needs at least two classes"):
        base_novel_split(["only"])
