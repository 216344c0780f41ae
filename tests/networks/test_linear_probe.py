"""Linear probe: cached features give the image path's logits, the zero-shot init is the zero-shot classifier."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from monai_cilmp.networks.nets import LinearProbe, ZeroShotCLIP, extract_features, feature_items
from tests.conftest import CLASSES


def _loader(n=6, batch_size=4):
    g = torch.Generator().manual_seed(0)
    items = [{"image": torch.randn(3, 64, 64, generator=g), "label": i % len(CLASSES)} for i in range(n)]
    return DataLoader(items, batch_size=batch_size)


def test_cached_features_give_the_same_logits_as_images(shared_backbone):
    torch.manual_seed(0)
    net = LinearProbe(CLASSES, shared_backbone).train()
    loader = _loader()
    features, labels = extract_features(net, loader)
    assert net.training  # restored after extraction
    assert features.shape == (6, net.feature_dim) and labels.tolist() == [0, 1, 2, 3, 0, 1]
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(6))
    from_backbone, _ = extract_features(shared_backbone, loader)
    torch.testing.assert_close(from_backbone, features, rtol=1e-5, atol=1e-5)
    images = torch.cat([b["image"] for b in loader])
    with torch.no_grad():
        torch.testing.assert_close(net(features), net(images), rtol=1e-5, atol=1e-5)


def test_head_trains_on_cached_feature_batches(shared_backbone):
    torch.manual_seed(0)
    net = LinearProbe(CLASSES, shared_backbone)
    items = feature_items(*extract_features(net, _loader()))
    batch = next(iter(DataLoader(items, batch_size=6)))
    assert batch["image"].shape == (6, net.feature_dim)
    optimizer = torch.optim.SGD(net.trainable_parameters().values(), lr=1.0)
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(net(batch["image"]), batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_zero_shot_init_reproduces_zero_shot_logits(shared_backbone):
    probe = LinearProbe(CLASSES, shared_backbone, init="zero-shot", text="ensemble").eval()
    zero_shot = ZeroShotCLIP(CLASSES, shared_backbone, text="ensemble").eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(probe(x), zero_shot(x), rtol=1e-4, atol=1e-4)
    assert torch.count_nonzero(probe.head.bias) == 0


def test_anchor_regulariser(shared_backbone):
    assert LinearProbe(CLASSES, shared_backbone).regularization_loss() is None
    probe = LinearProbe(CLASSES, shared_backbone, init="zero-shot", anchor_weight=1.0)
    assert probe.regularization_loss().item() == pytest.approx(0.0, abs=1e-10)
    with torch.no_grad():
        probe.head.weight.add_(1.0)
    assert probe.regularization_loss().item() > 0
    with pytest.raises(ValueError, match="anchor_weight needs init='zero-shot'"):
        LinearProbe(CLASSES, shared_backbone, anchor_weight=1.0)


def test_wrong_feature_size_is_explained(shared_backbone):
    net = LinearProbe(CLASSES, shared_backbone)
    with pytest.raises(ValueError, match=r"Cached features must be \(B, 64\)"):
        net(torch.zeros(2, 5))


def test_logistic_fit_is_scikit_learns_fit_and_travels_in_the_trained_state(shared_backbone):
    """``fit="logistic"``: without validation features, scikit-learn's fit at ``C`` (its decision values are the
    head's logits); with them, the C search's choice; the head does not train, and its fit and C are in the trained
    state (a checkpoint), which loads into a fresh probe; a binary fit keeps scikit-learn's probabilities."""
    from sklearn.linear_model import LogisticRegression

    from monai_cilmp.engines import fit_training_features

    net = LinearProbe(CLASSES, shared_backbone, fit="logistic", C=10.0)
    assert not net.trainable_parameters() and net.uses_training_features
    features, labels = extract_features(net, _loader(n=12))
    assert fit_training_features(net, DataLoader(feature_items(features, labels), batch_size=5))
    theirs = LogisticRegression(C=10.0, max_iter=1000).fit(features.numpy(), labels.numpy())
    with torch.no_grad():
        torch.testing.assert_close(net(features), torch.from_numpy(theirs.decision_function(features.numpy())).float())
    assert net.fit_summary["C"] == 10.0 and net.fit_summary["val_accuracy"] is None
    net.set_validation_features(features[:8], labels[:8], steps=1)
    net.fit_training_features(features, labels)
    assert len(net.fit_summary["trace"]) == 7 + 2 and net.fit_summary["val_accuracy"] is not None
    fresh = LinearProbe(CLASSES, shared_backbone, fit="logistic")
    fresh.load_trainable_state_dict(net.trainable_state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(features), net(features))
    assert fresh.fit_summary["C"] == net.fit_summary["C"]
    binary = LinearProbe(CLASSES[:2], shared_backbone, fit="logistic")
    keep = labels < 2
    binary.fit_training_features(features[keep], labels[keep])
    theirs = LogisticRegression(max_iter=1000).fit(features[keep].numpy(), labels[keep].numpy())
    with torch.no_grad():
        probabilities = binary(features[keep]).softmax(-1)
    torch.testing.assert_close(probabilities, torch.from_numpy(theirs.predict_proba(features[keep].numpy())).float())


def test_logistic_fit_options_are_checked(shared_backbone):
    with pytest.raises(ValueError, match="fit='sgd'"):
        LinearProbe(CLASSES, shared_backbone, init="zero-shot", anchor_weight=1.0, fit="logistic")
    with pytest.raises(ValueError, match="C > 0"):
        LinearProbe(CLASSES, shared_backbone, fit="logistic", C=0)
    sgd = LinearProbe(CLASSES, shared_backbone)
    with pytest.raises(ValueError, match="SGD"):
        sgd.set_validation_features(torch.zeros(2, sgd.feature_dim), torch.tensor([0, 1]))
    logistic = LinearProbe(CLASSES, shared_backbone, fit="logistic")
    with pytest.raises(ValueError, match="at least two classes"):
        logistic.fit_training_features(torch.randn(3, logistic.feature_dim), torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match="fit='logistic' probe"):
        logistic.load_trainable_state_dict({})
