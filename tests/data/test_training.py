"""A datalist written by ``monai-cilmp prepare`` trains with the toolkit's engine unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset

from monai_cilmp.cli import main
from monai_cilmp.data import load_datalist
from monai_cilmp.transforms import get_preset

engines = pytest.importorskip("monai_cilmp.engines")


def test_prepared_few_shot_datalist_trains_and_predicts(tmp_path):
    from PIL import Image

    from monai_cilmp.networks import CILMP, load_backbone
    from tests.conftest import random_bank

    rng = np.random.default_rng(0)
    for name, level in (("clear", 60), ("opaque", 190)):
        (tmp_path / "xrays" / name).mkdir(parents=True)
        for i in range(8):
            array = np.clip(rng.normal(level, 25, (40, 32)), 0, 255).astype(np.uint8)
            Image.fromarray(array).save(tmp_path / "xrays" / name / f"{i}.png")
    full, few = tmp_path / "full.json", tmp_path / "few.json"
    args = ["--val-fraction", "0.25", "--test-fraction", "0.25", "--preset", "radiography", "--check"]
    assert main(["prepare", "folder", str(tmp_path / "xrays"), "--out", str(full), *args]) == 0
    assert main(["prepare", "fewshot", str(full), "--shots", "4", "--seed", "3", "--out", str(few)]) == 0

    datalist = load_datalist(few)
    torch.manual_seed(0)
    names = datalist["class_names"]
    net = CILMP(
        names,
        random_bank(names, lengths=(3, 5), dim=16),
        load_backbone("CILMP-Tiny", None),
        text_prompt_depth=2,
        vision_prompt_depth=2,
    )
    preset = get_preset(datalist["preset"])
    size = dict(image_size=net.image_size, mean=net.image_mean, std=net.image_std)
    train = DataLoader(Dataset(datalist["training"], preset.train_transforms(**size)), batch_size=4, shuffle=True)
    val = DataLoader(Dataset(datalist["validation"], preset.eval_transforms(**size)), batch_size=4)
    recipe = engines.TrainingRecipe(lr=0.05, max_epochs=2, warmup_epochs=1, warmup_lr=0.01, batch_size=4, seed=1)
    trainer = engines.create_trainer(net, train, tmp_path / "run", recipe, val_loader=val, device="cpu", progress=False)
    trainer.run()
    assert (tmp_path / "run" / "checkpoints" / "final.pt").exists()
    assert 0 <= trainer.evaluator.state.metrics["val_accuracy"] <= 1
    test = DataLoader(Dataset(datalist["test"], preset.eval_transforms(**size)), batch_size=4)
    probs, labels = engines.predict(net, test, device="cpu")
    assert probs.shape == (len(datalist["test"]), 2) and np.allclose(probs.sum(1), 1, atol=1e-4)
    assert labels.tolist() == [item["label"] for item in datalist["test"]]
