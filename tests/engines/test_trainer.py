"""The Ignite trainer: recipe, checkpoints, exact resume, prediction."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset

from monai_cilmp.engines import (
    TrainingRecipe,
    atomic_torch_save,
    build_optimizer,
    build_scheduler,
    create_evaluator,
    create_trainer,
    load_checkpoint,
    lr_factor,
    predict,
)
from monai_cilmp.networks import CILMP, load_backbone
from tests.conftest import random_bank

CLASSES = ["bright", "dark"]


def toy_data(n=16, seed=0):
    """Two classes that differ in brightness, so that a few steps already learn something."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        label = i % 2
        image = torch.randn(3, 64, 64, generator=g) * 0.3 + (1.0 if label == 0 else -1.0)
        items.append({"image": image, "label": label})
    return items


def make_net(seed=0):
    torch.manual_seed(seed)
    backbone = load_backbone("CILMP-Tiny", None)
    return CILMP(
        CLASSES, random_bank(CLASSES, lengths=(5, 7), dim=16), backbone, text_prompt_depth=2, vision_prompt_depth=2
    )


def loaders(batch_size=4):
    train = DataLoader(Dataset(toy_data(16)), batch_size=batch_size, shuffle=True, num_workers=0)
    val = DataLoader(Dataset(toy_data(8, seed=1)), batch_size=8, num_workers=0)
    return train, val


def recipe(**kw):
    base = dict(lr=0.05, max_epochs=3, warmup_epochs=1, warmup_lr=0.01, batch_size=4, gpa_std=2.0, seed=7)
    return TrainingRecipe(**{**base, **kw})


def test_lr_schedule_is_constant_warmup_then_cosine():
    r = TrainingRecipe(lr=0.1, max_epochs=10, warmup_epochs=1, warmup_lr=1e-3)
    assert lr_factor(0, r) == pytest.approx(1e-2)
    assert lr_factor(1, r) == pytest.approx(1.0)
    assert lr_factor(6, r) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 10)))
    net = make_net()
    opt = build_optimizer(net, r)
    sched = build_scheduler(opt, r)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    assert all(p.requires_grad for g in opt.param_groups for p in g["params"])


def test_training_writes_checkpoints_and_learns(tmp_path):
    train, val = loaders()
    net = make_net()
    trainer = create_trainer(net, train, tmp_path, recipe(max_epochs=4), val_loader=val, device="cpu", progress=False)
    trainer.run()
    assert trainer.evaluator.state.metrics["val_accuracy"] > 0.5
    final = load_checkpoint(tmp_path / "checkpoints" / "final.pt")
    assert set(final["network"]) == set(net.trainable_state_dict())
    assert not any(k.startswith(("text_tower", "vision_tower")) for k in final["network"])
    assert final["engine"]["epoch"] == 4 and final["metadata"]["recipe"]["seed"] == 7
    assert (tmp_path / "tensorboard").is_dir()
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    train, _ = loaders()
    straight = make_net()
    create_trainer(straight, train, tmp_path / "a", recipe(), device="cpu", progress=False).run()

    train, _ = loaders()
    interrupted = make_net()
    first = create_trainer(interrupted, train, tmp_path / "b", recipe(), device="cpu", progress=False)
    first.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda engine: engine.terminate())
    first.run()
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["engine"]["epoch"] == 1
    assert not (tmp_path / "b" / "checkpoints" / "final.pt").exists()

    train, _ = loaders()
    resumed = make_net()
    create_trainer(resumed, train, tmp_path / "b", recipe(), device="cpu", progress=False, resume=True).run()
    for name, value in straight.trainable_state_dict().items():
        torch.testing.assert_close(resumed.trainable_state_dict()[name], value, rtol=0, atol=0)


def test_resume_without_checkpoint_is_explained(tmp_path):
    train, _ = loaders()
    with pytest.raises(FileNotFoundError, match="does not exist: train first"):
        create_trainer(make_net(), train, tmp_path, recipe(), device="cpu", progress=False, resume=True)


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = atomic_torch_save({"network": {"a": torch.ones(2)}}, tmp_path / "last.pt")

    def dies(tmp):
        with open(tmp, "wb") as handle:
            handle.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr("monai_cilmp.utils.files._sync", lambda tmp: dies(tmp))
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"network": {"a": torch.zeros(2)}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["network"]["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_predict_returns_probabilities():
    _, val = loaders()
    probs, labels = predict(make_net(), val, device="cpu")
    assert probs.shape == (8, 2) and labels.tolist() == [0, 1] * 4
    assert probs.sum(axis=1) == pytest.approx(1.0, abs=1e-5)


def test_validation_accuracy_with_more_than_two_classes():
    classes = ["a", "b", "c", "d"]
    torch.manual_seed(0)
    net = CILMP(
        classes,
        random_bank(classes, lengths=(3, 4, 5, 6), dim=16),
        load_backbone("CILMP-Tiny", None),
        text_prompt_depth=1,
        vision_prompt_depth=1,
    )
    g = torch.Generator().manual_seed(0)
    items = [{"image": torch.randn(3, 64, 64, generator=g), "label": i % 4} for i in range(8)]
    loader = DataLoader(Dataset(items), batch_size=8, num_workers=0)
    evaluator = create_evaluator(net, loader, device="cpu")
    evaluator.run()
    probs, labels = predict(net, loader, device="cpu")
    expected = float((probs.argmax(axis=1) == labels).mean())
    assert evaluator.state.metrics["val_accuracy"] == pytest.approx(expected)


def test_metric_inputs_follow_the_scores_device():
    # MONAI decollates labels into Python ints; they must land where the scores are (cuda on a GPU), as float scores
    from monai_cilmp.engines import scores_and_labels

    output = [{"pred": torch.randn(3, device="meta", dtype=torch.bfloat16), "label": i} for i in range(2)]
    scores, labels = scores_and_labels(output)
    assert scores.device.type == labels.device.type == "meta"
    assert scores.shape == (2, 3) and scores.dtype == torch.float32 and labels.dtype == torch.long


def test_best_checkpoint_tracks_validation_accuracy_across_resume(tmp_path):
    train, val = loaders()
    trainer = create_trainer(make_net(), train, tmp_path, recipe(max_epochs=2), val_loader=val, device="cpu")
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda engine: engine.terminate())
    trainer.run()
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["best"]["epoch"] == 1 and load_checkpoint(tmp_path / "checkpoints" / "last.pt")["best"] == best["best"]
    assert "val_loss" in trainer.evaluator.state.metrics and trainer.evaluator.state.metrics["val_loss"] > 0

    train, val = loaders()
    resumed = create_trainer(
        make_net(), train, tmp_path, recipe(max_epochs=2), val_loader=val, device="cpu", resume=True
    )
    assert resumed.evaluator.state.best_metric == best["best"]["metric"]
    resumed.run()
    accuracy = resumed.evaluator.state.metrics["val_accuracy"]
    after = load_checkpoint(tmp_path / "checkpoints" / "best.pt")["best"]
    # epoch 2 replaces best.pt only when it is strictly better than epoch 1 (MONAI's comparison)
    assert after == ({"metric": accuracy, "epoch": 2} if accuracy > best["best"]["metric"] else best["best"])


def test_checkpoint_resumes_the_loss_scaler(tmp_path):
    """Under fp16 autocast the loss scale decides which steps are skipped: ``last.pt`` carries it to the resumed run."""
    from types import SimpleNamespace

    from monai_cilmp.engines import TrainingCheckpoint

    if not hasattr(torch.amp, "GradScaler"):
        pytest.skip("torch.amp.GradScaler needs torch >= 2.3")
    net = make_net()
    checkpoint = TrainingCheckpoint(tmp_path, net, None)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(torch.ones(()))  # the scale exists once used
    scaler.update(new_scale=96.0)
    engine = SimpleNamespace(state=SimpleNamespace(epoch=2, iteration=8, max_epochs=3), scaler=scaler)
    checkpoint.save_last(engine)
    fresh = SimpleNamespace(state=SimpleNamespace(epoch=0, iteration=0), scaler=torch.amp.GradScaler("cpu"))
    assert checkpoint.restore(fresh) == 2
    assert fresh.scaler.get_scale() == 96.0 and fresh.state.iteration == 8
    no_scaler = SimpleNamespace(state=SimpleNamespace(epoch=0, iteration=0), scaler=None)  # fp32: nothing to restore
    assert checkpoint.restore(no_scaler) == 2
