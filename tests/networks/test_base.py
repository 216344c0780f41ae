"""The shared classifier interface: the trained state as an object MONAI's CheckpointLoader can restore."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine
from monai.handlers import CheckpointLoader

from monai_cilmp.networks.nets import CoOp, TipAdapter, TrainableState

CLASSES = ["bright", "dark", "grey"]


def _engine() -> Engine:
    engine = Engine(lambda e, b: None)
    engine.state.max_epochs = 1
    return engine


def test_checkpoint_loader_restores_only_the_trained_state(shared_backbone, tmp_path):
    torch.manual_seed(1)
    trained = CoOp(CLASSES, shared_backbone, n_ctx=4)
    with torch.no_grad():
        for p in trained.trainable_parameters().values():
            p.add_(torch.randn_like(p))
    path = tmp_path / "final.pt"
    torch.save({"network": trained.trainable_state().state_dict(), "metadata": {"class_names": CLASSES}}, path)
    fresh = CoOp(CLASSES, shared_backbone, n_ctx=4)
    frozen = {n: p.clone() for n, p in fresh.named_parameters() if not p.requires_grad}
    assert any(not torch.equal(v, fresh.trainable_state_dict()[n]) for n, v in trained.trainable_state_dict().items())
    CheckpointLoader(str(path), {"network": fresh.trainable_state()}, map_location="cpu")(_engine())
    for name, value in trained.trainable_state_dict().items():
        torch.testing.assert_close(fresh.trainable_state_dict()[name], value, rtol=0, atol=0)
    assert all(torch.equal(p, frozen[n]) for n, p in fresh.named_parameters() if not p.requires_grad)


def test_strict_names_what_differs_and_non_strict_takes_what_fits(shared_backbone):
    net = CoOp(CLASSES, shared_backbone, n_ctx=4)
    state = TrainableState(net)
    saved = state.state_dict()
    name = next(iter(saved))
    wrong = {**saved, name: torch.zeros(1)}
    with pytest.raises(ValueError, match="wrong shapes"):
        state.load_state_dict(wrong)
    before = net.trainable_state_dict()[name].clone()
    state.load_state_dict({name: torch.zeros(1), "not_a_parameter": torch.ones(2)}, strict=False)
    torch.testing.assert_close(net.trainable_state_dict()[name], before)  # did not fit: kept
    with pytest.raises(TypeError, match="not a monai-cilmp classifier"):
        TrainableState(torch.nn.Linear(2, 2))


def test_tip_adapter_takes_its_cache_size_from_the_checkpoint(shared_backbone, tmp_path):
    """A state whose size the network only learns from the state itself (Tip-Adapter's cache)."""
    torch.manual_seed(0)
    trained = TipAdapter(CLASSES, shared_backbone)
    features = torch.randn(6, trained.feature_dim)
    trained.fit_training_features(features, torch.tensor([0, 1, 2, 0, 1, 2]))
    path = tmp_path / "final.pt"
    torch.save({"network": trained.trainable_state_dict()}, path)
    fresh = TipAdapter(CLASSES, shared_backbone)
    CheckpointLoader(str(path), {"network": TrainableState(fresh)})(_engine())
    assert fresh.cache_keys.shape == (6, trained.feature_dim)
    torch.testing.assert_close(fresh.cache_keys, trained.cache_keys)


class _Marker:
    """Unpickling it would write a file: a stand-in for code hidden in a checkpoint."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_checkpoint_loader_refuses_a_pickled_object(shared_backbone, tmp_path):
    """evaluate.json loads weights through MONAI's CheckpointLoader: from MONAI 1.5.1 (our floor) it reads with
    ``weights_only=True``, so a checkpoint that hides code is refused before any of it runs."""
    net = CoOp(CLASSES, shared_backbone, n_ctx=4)
    marker = tmp_path / "ran"
    path = tmp_path / "final.pt"
    torch.save({"network": net.trainable_state_dict(), "metadata": _Marker(marker)}, path)
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        CheckpointLoader(str(path), {"network": net.trainable_state()})(_engine())
    assert not marker.exists()
