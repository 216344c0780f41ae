"""Tip-Adapter and Tip-Adapter-F: the cache model against a hand-written reading of the paper, and its checkpoint."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from monai_cilmp.networks.nets import TipAdapter, cache_logits

CLASSES = ["benign", "malignant", "normal"]


def test_cache_logits_is_the_papers_affinity_times_one_hot_values():
    f = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=-1)
    keys = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=-1)
    values = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    beta = 2.0
    expected = torch.zeros(2, 2)
    for b in range(2):  # A_bn = exp(-beta (1 - cos(f_b, F_n))), then sum_n A_bn L_n
        for n in range(3):
            cos = sum(float(f[b, d]) * float(keys[n, d]) for d in range(2))
            expected[b] += math.exp(-beta * (1 - cos)) * values[n]
    torch.testing.assert_close(cache_logits(f, keys, values, beta), expected)


def test_tip_adapter_blends_zero_shot_and_cache_and_starts_as_zero_shot(shared_backbone):
    net = TipAdapter(CLASSES, shared_backbone, None, alpha=0.7, beta=3.0).eval()
    f = F.normalize(torch.randn(5, net.feature_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    zero_shot = 100.0 * f @ net.text_weights.T  # the authors' fixed scale, not exp(logit_scale)
    torch.testing.assert_close(net(f), zero_shot)  # an empty cache adds nothing
    checkpoint_scale = TipAdapter(CLASSES, shared_backbone, None, scale=None).eval()
    torch.testing.assert_close(checkpoint_scale(f), net.logit_scale.exp() * f @ net.text_weights.T)
    train = torch.randn(6, net.feature_dim, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    net.fit_training_features(train, labels)
    keys = F.normalize(train, dim=-1)
    expected = zero_shot + 0.7 * torch.exp(-3.0 * (1 - f @ keys.T)) @ F.one_hot(labels, 3).float()
    torch.testing.assert_close(net(f), expected)
    assert net.num_trainable_parameters() == 0


def test_tip_adapter_f_trains_the_keys_and_its_checkpoint_rebuilds_the_cache(shared_backbone):
    net = TipAdapter(CLASSES, shared_backbone, None, fine_tune=True)
    assert net.num_trainable_parameters() == 0
    train = F.normalize(torch.randn(6, net.feature_dim, generator=torch.Generator().manual_seed(1)), dim=-1)
    net.fit_training_features(train, torch.tensor([0, 1, 2, 0, 1, 2]))
    assert set(net.trainable_parameters()) == {"cache_keys"} and net.num_trainable_parameters() == 6 * net.feature_dim
    loss = F.cross_entropy(net(train), torch.tensor([1, 1, 2, 0, 0, 2]))
    loss.backward()
    assert net.cache_keys.grad.abs().sum() > 0 and net.text_weights.grad is None
    with torch.no_grad():
        net.cache_keys -= 0.05 * net.cache_keys.grad
    fresh = TipAdapter(CLASSES, shared_backbone, None, fine_tune=True).eval()
    fresh.load_trainable_state_dict(net.trainable_state_dict())
    torch.testing.assert_close(fresh(train), net.eval()(train))
    # the training-free variant keeps its cache in the checkpoint too
    free = TipAdapter(CLASSES, shared_backbone, None)
    free.fit_training_features(train, torch.tensor([0, 1, 2, 0, 1, 2]))
    other = TipAdapter(CLASSES, shared_backbone, None)
    other.load_trainable_state_dict(free.trainable_state_dict())
    torch.testing.assert_close(other(train), free(train))
    with pytest.raises(ValueError, match="needs cache_keys"):
        other.load_trainable_state_dict({})


def test_tip_adapter_refuses_bad_cache_inputs(shared_backbone):
    net = TipAdapter(CLASSES, shared_backbone, None)
    with pytest.raises(ValueError, match="cache needs"):
        net.fit_training_features(torch.randn(3, 5), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="labels must lie in 0..2"):
        net.fit_training_features(torch.randn(2, net.feature_dim), torch.tensor([0, 3]))


def test_alpha_beta_search_on_validation_is_the_authors_grid_search(shared_backbone):
    net = TipAdapter(CLASSES, shared_backbone, None).eval()
    g = torch.Generator().manual_seed(3)
    train, labels = torch.randn(9, net.feature_dim, generator=g), torch.arange(9) % 3
    net.fit_training_features(train, labels)
    val = F.normalize(train + 0.8 * torch.randn(train.shape, generator=g), dim=-1)
    found = net.search_alpha_beta(val, labels, beta_scale=5.0, alpha_scale=2.0, beta_steps=10, alpha_steps=4)
    betas = [0.1 + i * 4.9 / 10 for i in range(10)]
    alphas = [0.1 + i * 1.9 / 4 for i in range(4)]
    best, keys, onehot = (0.0, 0.0, 0.0), F.normalize(train, dim=-1), F.one_hot(labels, 3).float()
    for beta in betas:  # betas outer, alphas inner, strictly better replaces: their search_hp
        for alpha in alphas:
            logits = 100.0 * val @ net.text_weights.T + alpha * torch.exp(-beta * (1 - val @ keys.T)) @ onehot
            accuracy = (logits.argmax(-1) == labels).float().mean().item()
            if accuracy > best[2]:
                best = (alpha, beta, accuracy)
    assert (found["alpha"], found["beta"], found["accuracy"]) == pytest.approx(best)
    assert (net.alpha, net.beta) == pytest.approx(best[:2])
    rebuilt = TipAdapter(CLASSES, shared_backbone, None)
    rebuilt.load_trainable_state_dict(net.trainable_state_dict())
    assert (rebuilt.alpha, rebuilt.beta) == pytest.approx(best[:2])
    with pytest.raises(ValueError, match="needs a built cache"):
        TipAdapter(CLASSES, shared_backbone, None).search_alpha_beta(val, labels)


def test_tip_adapter_f_recipe_is_the_codes_adamw(shared_backbone):
    import dataclasses

    from monai_cilmp.engines import TrainingRecipe, build_optimizer
    from monai_cilmp.networks.nets import get_method

    net = TipAdapter(CLASSES, shared_backbone, None, fine_tune=True)
    net.fit_training_features(torch.randn(3, net.feature_dim), torch.tensor([0, 1, 2]))
    recipe = dataclasses.replace(TrainingRecipe(), **get_method("tip-adapter-f").recipe_overrides)
    optimizer = build_optimizer(net, recipe)
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["eps"], group["weight_decay"]) == (0.001, 1e-4, 0.01)
    with pytest.raises(ValueError, match="'sgd' or 'adamw'"):
        build_optimizer(net, dataclasses.replace(recipe, optimizer="lbfgs"))
