"""LP++: the blended classifier and its data-driven initialisation against a hand-written reading of the paper."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_cilmp.networks.nets import LPPlusPlus, lp_plus_plus_init

CLASSES = ["benign", "malignant", "normal"]


def test_init_is_class_sums_and_kappa_times_the_mean_own_class_similarity():
    """As BiomedCoOp's LP++ code: class sums of the features (its centroids are not divided by the count), alpha from
    each class's similarity to its own text embedding only."""
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    sums, alpha = lp_plus_plus_init(features, labels, text, kappa=10.0)
    torch.testing.assert_close(sums, torch.tensor([[3.0, 0.0], [1.0, 2.0]]))
    # f.t: class 0 samples give (1, 0), (2, 0) -> own-class mean 1.5; class 1: (0, 1), (1, 1) -> own-class mean 1
    assert float(alpha) == pytest.approx(10.0 * (1.5 + 1.0) / 2)
    with pytest.raises(ValueError, match=r"classes \[1\] have none"):
        lp_plus_plus_init(features, torch.zeros(4, dtype=torch.long), text)


def test_logits_blend_visual_weights_and_text_weights_per_class(shared_backbone):
    net = LPPlusPlus(CLASSES, shared_backbone, None, kappa=5.0).eval()
    f = F.normalize(torch.randn(4, net.feature_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    torch.testing.assert_close(net(f), net.logit_scale.exp() * f @ net.text_weights.T)  # before fitting: zero-shot
    train = F.normalize(torch.randn(6, net.feature_dim, generator=torch.Generator().manual_seed(1)), dim=-1)
    net.fit_training_features(train, torch.tensor([0, 1, 2, 0, 1, 2]))
    with torch.no_grad():
        net.alpha.copy_(torch.tensor([0.5, 2.0, -1.0]))
        net.bias.copy_(torch.tensor([0.1, 0.0, -0.2]))
    weight, bias, alpha = net.visual_weight.detach(), net.bias.detach(), net.alpha.detach()
    expected = torch.zeros(4, 3)
    for b in range(4):
        for c in range(3):
            visual = float(f[b] @ weight[c])
            expected[b, c] = visual + float(bias[c]) + float(alpha[c]) * float(f[b] @ net.text_weights[c])
    torch.testing.assert_close(net(f), expected, rtol=1e-5, atol=1e-5)
    assert set(net.trainable_parameters()) == {"visual_weight", "bias", "alpha"}


def test_full_batch_fit_trains_by_its_own_loop_and_keeps_its_best_validation_epoch(shared_backbone):
    """``fit="full-batch"``: the authors' loop runs when the training features are fitted (the loss falls), the
    engine then trains nothing, the kept epoch is the last most accurate on validation, and the trained state loads
    into a fresh network."""
    torch.manual_seed(0)
    net = LPPlusPlus(CLASSES, shared_backbone, fit="full-batch", epochs=12)
    assert not net.trainable_parameters()
    features = torch.nn.functional.normalize(torch.randn(8, net.feature_dim), dim=-1)
    labels = torch.arange(8) % len(CLASSES)
    net.set_validation_features(features[:4], labels[:4])
    net.fit_training_features(features, labels)
    summary = net.fit_summary
    assert len(summary["losses"]) == 12 and summary["losses"][-1] < summary["losses"][0]
    assert 1 <= summary["kept_epoch"] <= 12 and summary["val_accuracy"] is not None
    fresh = LPPlusPlus(CLASSES, shared_backbone, fit="full-batch")
    fresh.load_trainable_state_dict(net.trainable_state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(features), net(features))
    with pytest.raises(ValueError, match="full-batch"):
        fresh.load_trainable_state_dict({})
    with pytest.raises(ValueError, match="full-batch"):
        LPPlusPlus(CLASSES, shared_backbone).set_validation_features(features, labels)
    with pytest.raises(ValueError, match="epochs >= 1"):
        LPPlusPlus(CLASSES, shared_backbone, fit="full-batch", epochs=0)
