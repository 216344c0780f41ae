"""Methods built from the training features: the engine collects them (images or cached) and fits the network."""

from __future__ import annotations

import torch
from ignite.engine import Events

from monai_cilmp.engines import (
    TrainingRecipe,
    cached_feature_loader,
    create_trainer,
    fit_training_features,
    load_checkpoint,
    training_features,
)
from monai_cilmp.networks.nets import CoOp, TipAdapter

CLASSES = ["benign", "malignant"]


def batches(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.randn(3, 3, 64, 64, generator=g), "label": torch.tensor([0, 1, 1])} for _ in range(n)]


def test_features_of_images_and_of_cached_features_agree(tiny_backbone):
    net = TipAdapter(CLASSES, tiny_backbone, None)
    images = batches()
    f, y = training_features(net, images)
    assert f.shape == (6, net.feature_dim) and y.tolist() == [0, 1, 1, 0, 1, 1]
    cached = cached_feature_loader(net, images, batch_size=4, shuffle=False)
    f2, y2 = training_features(net, cached)
    torch.testing.assert_close(f2, f)
    torch.testing.assert_close(y2, y)
    assert not fit_training_features(CoOp(CLASSES, tiny_backbone, None, n_ctx=2), images)  # does not ask
    assert fit_training_features(net, images) and net.cache_keys.shape == (6, net.feature_dim)


def test_trainer_fits_a_training_free_cache_and_checkpoints_it(tiny_backbone, tmp_path):
    net = TipAdapter(CLASSES, tiny_backbone, None)
    recipe = TrainingRecipe(max_epochs=1, warmup_epochs=0, gpa_std=0.0, val_interval=0)
    trainer = create_trainer(net, batches(), tmp_path, recipe, device="cpu", progress=False)
    assert not trainer.trains and net.cache_values.shape == (6, 2)
    trainer.run()
    saved = load_checkpoint(tmp_path / "checkpoints" / "final.pt")["network"]
    torch.testing.assert_close(saved["cache_keys"], net.cache_keys)


def test_fine_tuned_keys_are_what_the_optimiser_trains_also_after_resume(tiny_backbone, tmp_path):
    recipe = TrainingRecipe(max_epochs=2, warmup_epochs=0, gpa_std=0.0, val_interval=0, lr=0.5)
    net = TipAdapter(CLASSES, tiny_backbone, None, fine_tune=True)
    trainer = create_trainer(net, batches(), tmp_path, recipe, device="cpu", progress=False)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: engine.terminate())  # interrupted after epoch 1
    start = net.cache_keys.detach().clone()
    trainer.run()
    assert not torch.equal(start, net.cache_keys)
    resumed = TipAdapter(CLASSES, tiny_backbone, None, fine_tune=True)
    trainer = create_trainer(resumed, batches(), tmp_path, recipe, device="cpu", progress=False, resume=True)
    torch.testing.assert_close(resumed.cache_keys, net.cache_keys)
    params = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert len(params) == 1 and params[0] is resumed.cache_keys
    before = resumed.cache_keys.detach().clone()
    trainer.run()
    assert trainer.state.epoch == 2 and not torch.equal(before, resumed.cache_keys)
