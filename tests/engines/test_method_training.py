"""The trainer with the baselines: KgCoOp's regulariser in the loss, zero-shot (nothing to train), cached features."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events
from monai.data import DataLoader, Dataset

from monai_cilmp.engines import RegularizedLoss, cached_feature_loader, create_trainer, load_checkpoint, predict
from monai_cilmp.handlers import GaussianPromptAggregation
from monai_cilmp.networks import load_backbone
from monai_cilmp.networks.nets import KgCoOp, LinearProbe, ZeroShotCLIP
from tests.engines.test_trainer import CLASSES, recipe, toy_data


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return load_backbone("CILMP-Tiny", None)


def loader(n=8, batch_size=4, shuffle=True):
    return DataLoader(Dataset(toy_data(n)), batch_size=batch_size, shuffle=shuffle, num_workers=0)


def test_kgcoop_regulariser_is_added_to_the_loss(backbone, tmp_path):
    net = KgCoOp(CLASSES, backbone, kg_weight=8.0)
    trainer = create_trainer(net, loader(), tmp_path, recipe(max_epochs=1, lr=0.5, gpa_std=0.0), progress=False)
    seen = []

    def record(engine):
        output = engine.state.output
        pred = torch.stack([o["pred"] for o in output])
        label = torch.stack([torch.as_tensor(o["label"]).view(()) for o in output]).long()
        seen.append((float(output[0]["loss"]), float(F.cross_entropy(pred, label)), engine.loss_function))

    trainer.add_event_handler(Events.ITERATION_COMPLETED, record)
    trainer.run()
    assert isinstance(trainer.loss_function, RegularizedLoss)
    (loss0, ce0, fn), (loss1, ce1, _) = seen
    # the first step starts at the hand-crafted prompts: the regulariser is zero; after it, it pulls back
    assert loss0 == pytest.approx(ce0, abs=1e-5)
    reg = float(fn.last_regularization)
    assert reg > 0 and loss1 == pytest.approx(ce1 + reg, rel=1e-4) and loss1 > ce1


def test_regularized_loss_without_a_term_is_the_plain_loss():
    net = torch.nn.Linear(2, 2)
    pred, label = torch.randn(3, 2), torch.tensor([0, 1, 1])
    loss = RegularizedLoss(net)
    assert torch.equal(loss(pred, label), F.cross_entropy(pred, label)) and loss.last_regularization is None
    assert "network" not in dict(loss.named_modules())  # held by reference, not registered


def test_zero_shot_network_trains_nothing_but_writes_its_checkpoint(backbone, tmp_path):
    class Unreadable:
        def __iter__(self):
            raise AssertionError("a network with nothing to train must not read training data")

        def __len__(self):
            return 1

    net = ZeroShotCLIP(CLASSES, backbone, text="name")
    meta = {"method": "zero-shot-name"}
    trainer = create_trainer(net, Unreadable(), tmp_path, recipe(), metadata=meta, progress=False)
    assert trainer.trains is False
    trainer.run()
    final = load_checkpoint(trainer.checkpoint.final_path)
    assert final["network"] == {} and final["optimizer"] is None
    assert final["metadata"]["method"] == "zero-shot-name" and final["metadata"]["recipe"]["max_epochs"] == 0
    net.load_trainable_state_dict(final["network"])


def test_linear_probe_trains_on_cached_features_and_evaluates_on_images(backbone, tmp_path):
    torch.manual_seed(0)
    net = LinearProbe(CLASSES, backbone)
    before = net.head.weight.detach().clone()
    features = cached_feature_loader(net, loader(16, shuffle=False), batch_size=4)
    batch = next(iter(features))
    assert batch["image"].shape == (4, net.feature_dim) and batch["label"].shape == (4,)
    # GPA is asked for (gpa_std > 0) but a probe names no prompt parameters: nothing to aggregate, no failure
    trainer = create_trainer(net, features, tmp_path, recipe(max_epochs=3, lr=1.0, gpa_std=2.0), progress=False)
    trainer.run()
    assert not torch.equal(before, net.head.weight)
    assert set(load_checkpoint(trainer.checkpoint.final_path)["network"]) == {"head.weight", "head.bias"}
    probs, labels = predict(net, loader(8, shuffle=False), device="cpu")
    assert probs.shape == (8, 2) and (probs.argmax(1) == labels).mean() > 0.5


def test_gpa_with_no_prompt_parameters_is_a_no_op(backbone):
    net = LinearProbe(CLASSES, backbone)
    gpa = GaussianPromptAggregation(net)
    assert gpa.parameter_names == []
    gpa.load_state_dict(gpa.state_dict())
    assert gpa.aggregate == {}
