"""The device-resident cache gives the uncached pipeline's items, and trains through create_trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from monai_cilmp.engines import device_cached_dataset, device_cached_loader, split_at_first_random
from monai_cilmp.transforms import get_preset


@pytest.fixture
def items(tmp_path):
    rng = np.random.default_rng(0)
    out = []
    for i in range(6):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(path)
        out.append({"image": str(path), "label": i % 2})
    return out


def _pipeline():
    return get_preset("dermoscopy").train_transforms(keys="image", image_size=32)


def test_head_is_deterministic_and_tail_starts_at_the_first_random_transform():
    from monai.transforms import RandomizableTrait

    head, tail = split_at_first_random(_pipeline())
    assert head and tail and isinstance(tail[0], RandomizableTrait)
    assert not any(isinstance(t, RandomizableTrait) for t in head)


def test_cached_items_equal_the_uncached_pipeline_for_the_same_random_state(items):
    from monai.data import Dataset

    plain = Dataset(items, transform=_pipeline())
    cached = device_cached_dataset(items, _pipeline(), "cpu")
    for epoch in range(2):  # the per-epoch reseeding reaches the random tail of both alike
        plain.transform.set_random_state(seed=epoch)
        cached.transform.set_random_state(seed=epoch)
        for i in range(len(items)):
            a, b = plain[i], cached[i]
            assert torch.equal(torch.as_tensor(a["image"]), torch.as_tensor(b["image"])), (epoch, i)
            assert a["label"] == b["label"]
    assert str(cached[0]["image"].meta["filename_or_obj"]).endswith("0.png")  # files still named in errors


def test_cached_loader_trains(items, tmp_path):
    from monai_cilmp.engines import TrainingRecipe, create_trainer
    from monai_cilmp.networks import CILMP
    from tests.conftest import random_bank

    classes = ["nevus", "melanoma"]
    network = CILMP(classes, random_bank(classes, lengths=(3, 4), dim=16), backbone="CILMP-Tiny", pretrained=None)
    pipeline = get_preset("dermoscopy").train_transforms(keys="image", image_size=network.image_size)
    loader = device_cached_loader(items, pipeline, "cpu", batch_size=3)
    recipe = TrainingRecipe(max_epochs=1, batch_size=3, warmup_epochs=0, gpa_std=0.0, val_interval=0)
    trainer = create_trainer(network, loader, tmp_path / "run", recipe, device="cpu", progress=False)
    trainer.run()
    assert trainer.state.iteration == 2 and torch.isfinite(torch.as_tensor(trainer.state.output[0]["loss"]))
