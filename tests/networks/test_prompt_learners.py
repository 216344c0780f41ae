"""CoOp, CoCoOp and KgCoOp: prompt construction, image (in)dependence, the KgCoOp regulariser, paper sizes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_cilmp.networks.nets import CILMP, CoCoOp, CoOp, KgCoOp
from tests.conftest import CLASSES, random_bank


def images(n=2, size=64, seed=0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _open_clip_text(backbone, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return F.normalize(backbone.model.encode_text(backbone.tokenizer(texts)), dim=-1)


def test_coop_with_template_context_is_the_hand_written_prompt(shared_backbone):
    net = CoOp(CLASSES, shared_backbone, n_ctx=4, ctx_init="a photo of a").eval()
    expected = _open_clip_text(shared_backbone, [f"a photo of a {c}." for c in CLASSES])
    with torch.no_grad():
        text = net.text_features()[0]
        z = F.normalize(shared_backbone.model.encode_image(images()), dim=-1)
        logits = net(images())
    torch.testing.assert_close(text, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, net.logit_scale.exp() * z @ expected.T, rtol=1e-4, atol=1e-4)


def test_prompts_of_coop_ignore_the_image_those_of_cocoop_and_cilmp_do_not(shared_backbone):
    torch.manual_seed(0)
    x = images(2)
    coop = CoOp(CLASSES, shared_backbone, n_ctx=4).eval()
    cocoop = CoCoOp(CLASSES, shared_backbone).eval()
    cilmp = CILMP(CLASSES, random_bank(), shared_backbone, text_prompt_depth=2, vision_prompt_depth=2).eval()
    with torch.no_grad():
        for net, depends in ((coop, False), (cocoop, True), (cilmp, True)):
            z = net.encode_image(x)
            first, second = net.encode_prompts(z[:1]), net.encode_prompts(z[1:])
            assert first.shape == second.shape == (1, len(CLASSES), z.shape[1])
            assert torch.allclose(first, second) != depends, type(net).__name__
            both = net.encode_prompts(z)
            assert both.shape[0] == (2 if depends else 1)


def test_class_specific_context(shared_backbone):
    torch.manual_seed(0)
    net = CoOp(CLASSES, shared_backbone, n_ctx=3, class_specific=True)
    width = shared_backbone.model.transformer.width
    assert net.ctx.shape == (len(CLASSES), 3, width)
    assert not torch.allclose(net.ctx[0], net.ctx[1])
    same = CoOp(CLASSES, shared_backbone, n_ctx=4, ctx_init="a photo of a", class_specific=True)
    assert all(torch.equal(same.ctx[0], same.ctx[c]) for c in range(len(CLASSES)))
    with torch.no_grad():
        same.ctx[1] += 1.0
        text = same.text_features()[0]
    unified = CoOp(CLASSES, shared_backbone, n_ctx=4, ctx_init="a photo of a").eval()
    with torch.no_grad():
        reference = unified.text_features()[0]
    torch.testing.assert_close(text[[0, 2, 3]], reference[[0, 2, 3]])
    assert not torch.allclose(text[1], reference[1])


def test_ctx_init_must_match_n_ctx(shared_backbone):
    with pytest.raises(ValueError, match="ctx_init 'a photo of a' has 4 tokens but n_ctx is 16"):
        CoOp(CLASSES, shared_backbone, ctx_init="a photo of a")


def test_kgcoop_regulariser_is_zero_at_init_and_grows_after_a_step(shared_backbone):
    torch.manual_seed(0)
    net = KgCoOp(CLASSES, shared_backbone).train()
    assert net.regularization_loss().item() == pytest.approx(0.0, abs=1e-6)
    optimizer = torch.optim.SGD([net.ctx], lr=0.5)
    loss = F.cross_entropy(net(images(4)), torch.arange(4)) + net.regularization_loss()
    loss.backward()
    optimizer.step()
    reg = net.regularization_loss()
    assert reg.item() > 0 and reg.requires_grad
    with torch.no_grad():
        w = net.text_features()[0]
    # the authors' code: W * (1 - mean cosine), with torch's own CosineSimilarity as their code uses it
    cosine = torch.nn.CosineSimilarity(dim=1, eps=1e-07)(w, net.handcrafted_embeddings)
    torch.testing.assert_close(reg.detach(), net.kg_weight * (1.0 - cosine.mean()))
    # the paper's equation, kept as an option, is twice that for unit vectors
    net.distance = "squared"
    squared = net.regularization_loss().detach()
    torch.testing.assert_close(squared, net.kg_weight * (w - net.handcrafted_embeddings).pow(2).sum(-1).mean())
    torch.testing.assert_close(squared, 2 * reg.detach(), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="l1"):
        KgCoOp(CLASSES, shared_backbone, distance="l1")


def test_kgcoop_reuses_the_features_of_the_forward_it_follows(shared_backbone, monkeypatch):
    torch.manual_seed(0)
    net = KgCoOp(CLASSES, shared_backbone, ctx_init=None).train()
    net(images(2))
    calls = []
    monkeypatch.setattr(net, "text_features", lambda *a: calls.append(1))
    reg = net.regularization_loss()  # from the forward's features: no new text pass
    assert not calls and reg.item() > 0
    reg.backward()
    assert net.ctx.grad is not None and net.ctx.grad.abs().sum() > 0


def test_kgcoop_template_ensemble_and_errors(shared_backbone):
    net = KgCoOp(CLASSES, shared_backbone, templates=["a photo of a {}.", "an image of {}."])
    assert net.regularization_loss().item() > 0  # the anchor is the ensemble, not the init prompt
    with pytest.raises(ValueError, match="must each contain"):
        KgCoOp(CLASSES, shared_backbone, templates="a photo")


def test_trainable_parameter_counts_at_vit_b16_shape(vit_b16_shape_backbone):
    """CoOp 16 tokens: 16 x 512 = 8,192; CSC x C; CoCoOp: 4 x 512 + meta-net 512-32-512 = 35,360; KgCoOp 2,048."""
    classes = ["benign", "malignant"]
    b = vit_b16_shape_backbone
    assert CoOp(classes, b).num_trainable_parameters() == 8192
    assert CoOp(classes, b, class_specific=True).num_trainable_parameters() == 2 * 8192
    assert CoCoOp(classes, b).num_trainable_parameters() == 35360
    assert KgCoOp(classes, b).num_trainable_parameters() == 2048
