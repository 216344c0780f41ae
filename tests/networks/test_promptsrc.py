"""PromptSRC: the three self-regulating terms against frozen CLIP, on fixed inputs; GPA in its recipe."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from monai_cilmp.networks.nets import PromptSRC, get_method

CLASSES = ["benign", "malignant", "normal"]


def test_regularizer_is_the_weighted_sum_of_the_text_image_and_logit_terms(shared_backbone):
    torch.manual_seed(0)
    kw = {"text_prompt_depth": 2, "vision_prompt_depth": 2, "text_weight": 3.0, "image_weight": 2.0}
    net = PromptSRC(CLASSES, shared_backbone, None, **kw).train()
    x = torch.randn(4, 3, 64, 64)
    logits = net(x)
    term = net.regularization_loss().detach()
    with torch.no_grad():
        z, z0 = net.encode_image(x), F.normalize(net.vision_tower(x, None), dim=-1)
        text, frozen = net.encode_prompts(z)[0], net.frozen_text_features
        scale = net.logit_scale.exp()
        p, log_q = F.softmax(scale * z0 @ frozen.T, dim=-1), F.log_softmax(logits, dim=-1)
        kl = (p * (p.log() - log_q)).sum() / logits.numel()
        expected = 3.0 * (text - frozen).abs().mean() + 2.0 * (z - z0).abs().mean() + 1.0 * kl
    torch.testing.assert_close(term, expected)
    assert net.regularization_loss() is None


def test_frozen_text_features_are_the_template_ensemble(shared_backbone):
    net = PromptSRC(CLASSES, shared_backbone, None, text_prompt_depth=1, vision_prompt_depth=1, templates=["{} x"])
    from monai_cilmp.networks.nets import ZeroShotCLIP

    zero_shot = ZeroShotCLIP(CLASSES, shared_backbone, None, text="template", template="{} x")
    torch.testing.assert_close(net.frozen_text_features, zero_shot.class_embeddings)
    spec = get_method("promptsrc")
    assert spec.gpa and spec.recipe_overrides == {"gpa_std": 1.0}
    assert net.prompt_parameter_names() == ["text_prompts", "vision_prompts"]


def test_frozen_text_target_is_the_normalised_mean_of_raw_template_embeddings(shared_backbone):
    """The authors' code averages the templates' raw text embeddings, then normalises (not the mean of unit vectors)."""
    templates = ["a photo of {}.", "{}", "an image showing {} here."]
    kw = {"text_prompt_depth": 1, "vision_prompt_depth": 1, "templates": templates}
    net = PromptSRC(CLASSES, shared_backbone, None, **kw)
    with torch.no_grad():
        raw = torch.stack([net_text_embeddings(shared_backbone, [t.format(c) for t in templates]) for c in CLASSES])
    torch.testing.assert_close(net.frozen_text_features, F.normalize(raw.mean(dim=1), dim=-1))
    unit_mean = PromptSRC(CLASSES, shared_backbone, None, normalize_templates=True, **kw).frozen_text_features
    torch.testing.assert_close(unit_mean, F.normalize(F.normalize(raw, dim=-1).mean(dim=1), dim=-1))
    assert (unit_mean - net.frozen_text_features).abs().max() > 1e-4  # the two readings differ


def net_text_embeddings(backbone, texts):
    """Raw (unnormalised) text embeddings of open_clip's own encode_text."""
    return backbone.model.encode_text(backbone.tokenizer(texts)).float()
