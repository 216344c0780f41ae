"""ProGrad: its guide is the KL from zero-shot CLIP, and the engine trains it with projected gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from monai_cilmp.engines import TrainingRecipe, create_trainer
from monai_cilmp.networks.nets import ProGrad, teacher_kl

CLASSES = ["benign", "malignant", "normal"]


def test_teacher_kl_against_the_definition():
    student, teacher = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]), torch.tensor([[0.0, 1.0, 0.0], [2.0, 0, 0]])
    p, q = F.softmax(teacher / 2.0, dim=-1), F.softmax(student / 2.0, dim=-1)
    total = (p * (p.log() - q.log())).sum()
    torch.testing.assert_close(teacher_kl(student, teacher, 2.0, per="sample"), 4.0 * total / 2)
    torch.testing.assert_close(teacher_kl(student, teacher, 1.0, per="logit"), teacher_kl(student, teacher) / 3)


def test_guide_is_the_kl_to_zero_shot_and_is_zero_at_the_template_initialisation(shared_backbone):
    net = ProGrad(CLASSES, shared_backbone, None, n_ctx=4, ctx_init="a photo of a").train()
    x = torch.randn(3, 3, 64, 64)
    logits = net(x)
    assert float(net.guide_loss().detach()) < 1e-6  # the learned prompt is the template: model == zero-shot
    assert net.guide_loss() is None  # consumed
    with torch.no_grad():
        net.ctx.add_(torch.randn_like(net.ctx))
    logits = net(x)
    zero_shot = net.logit_scale.exp() * net.encode_image(x) @ net.zero_shot_embeddings.T
    torch.testing.assert_close(net.guide_loss(), teacher_kl(logits, zero_shot))
    net.eval()
    net(x)
    assert net.guide_loss() is None  # no guide outside training


def test_engine_step_uses_the_projected_gradient(shared_backbone, tmp_path, monkeypatch):
    from monai_cilmp.handlers import gradient_projection

    calls = []
    original = gradient_projection.project_conflicting
    monkeypatch.setattr(
        gradient_projection, "project_conflicting", lambda g, h, s=1.0: calls.append(1) or original(g, h, s)
    )
    torch.manual_seed(0)
    net = ProGrad(CLASSES, shared_backbone, None, n_ctx=4, ctx_init=None)
    data = [{"image": torch.randn(2, 3, 64, 64), "label": torch.tensor([0, 2])}] * 2
    recipe = TrainingRecipe(max_epochs=1, warmup_epochs=0, gpa_std=0.0, val_interval=0, lr=0.01)
    before = net.ctx.detach().clone()
    create_trainer(net, data, tmp_path, recipe, device="cpu", progress=False).run()
    assert len(calls) == 2 and not torch.equal(before, net.ctx)  # one projection per step (one trained tensor)
