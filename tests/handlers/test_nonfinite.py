"""The non-finite guard: one check per iteration, after the backward pass and before the optimiser step."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import random_bank

CLASSES = ["normal lung", "covid"]


def _trainer(tmp_path, **kwargs):
    from monai.data import list_data_collate

    from monai_cilmp.engines import TrainingRecipe, create_trainer
    from monai_cilmp.networks import CILMP

    network = CILMP(CLASSES, random_bank(CLASSES, lengths=(5, 7), dim=16), backbone="CILMP-Tiny", pretrained=None)
    size = network.image_size
    items = [{"image": torch.rand(3, size, size), "label": torch.tensor(i % 2)} for i in range(4)]
    loader = torch.utils.data.DataLoader(items, batch_size=2, collate_fn=list_data_collate)
    recipe = TrainingRecipe(max_epochs=3, batch_size=2, warmup_epochs=0, gpa_std=0.0, val_interval=0)
    return network, create_trainer(network, loader, tmp_path, recipe, device="cpu", progress=False, **kwargs)


def test_non_finite_loss_stops_before_the_optimiser_step(tmp_path):
    from ignite.engine import Events

    from monai_cilmp.handlers import NonFiniteError

    network, trainer = _trainer(tmp_path)
    after_epoch_1 = {}

    def poison(_) -> None:
        after_epoch_1.update(network.trainable_state_dict())
        network.logit_scale.fill_(float("nan"))  # every logit, hence the loss, becomes NaN

    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), poison)
    with pytest.raises(NonFiniteError, match=r"The training loss became nan at epoch 2, iteration 3"):
        trainer.run()
    for name, value in network.trainable_state_dict().items():
        assert torch.equal(value, after_epoch_1[name]), f"{name} changed after a non-finite loss"


def test_guard_checks_after_backward_once_per_iteration(tmp_path):
    """The loss is read back after the backward pass is queued (not right after the forward pass)."""
    from monai.engines.utils import IterationEvents

    from monai_cilmp.handlers import NonFiniteGuard

    _, trainer = _trainer(tmp_path)
    backward = [h for h, _, _ in trainer._event_handlers[IterationEvents.BACKWARD_COMPLETED]]
    loss = [h for h, _, _ in trainer._event_handlers[IterationEvents.LOSS_COMPLETED]]
    assert any(isinstance(getattr(h, "__self__", None), NonFiniteGuard) for h in backward)
    assert not any(isinstance(getattr(h, "__self__", None), NonFiniteGuard) for h in loss)


def test_speed_options_of_the_trainer(tmp_path):
    """compile goes to MONAI's engine; the frozen weights keep float32 without mixed precision (the CPU path)."""
    network, trainer = _trainer(tmp_path, compile=True, frozen_in_compute_dtype=True)
    assert trainer.compile and trainer.network is not network  # torch.compile's wrapper, compiled on first call
    assert all(p.dtype == torch.float32 for p in network.parameters())
    assert not trainer.non_blocking  # a CPU run: nothing to overlap
