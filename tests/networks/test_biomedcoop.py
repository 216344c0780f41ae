"""BiomedCoOp: outlier pruning of the description prompt sets, and the SCCM + KDSP terms on fixed inputs."""

from __future__ import annotations

import statistics

import pytest
import torch
import torch.nn.functional as F

from monai_cilmp.networks.nets import BiomedCoOp, build_method, select_prompt_sets

CLASSES = ["benign", "malignant", "normal"]
PROMPTS = {
    "benign": ["a smooth round benign mass", "benign tissue", "an oval well defined lesion", "a benign cyst"],
    "malignant": ["an irregular malignant mass", "malignant tumour with spiculated margins"],
    "normal": ["normal tissue", "no lesion", "healthy breast tissue"],
}


def reference_mask(scores: list[float], tau: float) -> list[bool]:
    """The paper's rule written out: robust z-scores, standardised again, kept within tau."""
    median = statistics.median(scores)
    mad = statistics.median([abs(s - median) for s in scores])
    z = [(s - median) / mad for s in scores]
    mean, std = statistics.mean(z), statistics.stdev(z)
    return [abs((v - mean) / std) <= tau for v in z]


def test_pruning_against_a_hand_written_reading():
    scores = [10.0, 10.5, 9.8, 10.2, 25.0, 10.1, 9.9]
    mask = select_prompt_sets(torch.tensor(scores), tau=1.5)
    assert mask.tolist() == reference_mask(scores, 1.5) and mask.tolist() == [True] * 4 + [False] + [True] * 2
    assert select_prompt_sets(torch.tensor([3.0, 3.0, 3.0, 3.0]), 1.5).all()  # zero MAD: nothing pruned
    assert select_prompt_sets(torch.tensor([1.0, 9.0]), 0.1).all()  # too few sets to call one an outlier


def test_prompt_sets_are_aligned_by_repeating_a_class_texts(shared_backbone):
    net = BiomedCoOp(CLASSES, shared_backbone, None, prompts=PROMPTS)
    table = net.description_embeddings
    assert table.shape == (3, 4, 64)  # C classes x P = 4 (the most texts of a class) x embedding
    torch.testing.assert_close(table[1, 2], table[1, 0])  # malignant has 2 texts: set 2 repeats its first
    torch.testing.assert_close(table[2, 3], table[2, 0])
    torch.testing.assert_close(net.description_means[1], F.normalize(table[1, :2].mean(0), dim=-1))


def test_regularizer_is_sccm_plus_kdsp_with_the_pruned_teacher(shared_backbone):
    torch.manual_seed(0)
    net = BiomedCoOp(CLASSES, shared_backbone, None, prompts=PROMPTS, sccm_weight=2.0, kdsp_weight=0.5, tau=1.5)
    net.train()
    x = torch.randn(4, 3, 64, 64)
    logits = net(x)
    term = net.regularization_loss()
    with torch.no_grad():
        z = net.encode_image(x)
        text = net.encode_prompts(z)[0]
        scale = net.logit_scale.exp()
        table = net.description_embeddings
        scores = [float((scale * z @ table[:, i].T).max(dim=1).values.mean()) for i in range(table.shape[1])]
        keep = reference_mask(scores, 1.5)
        teacher = F.normalize(table[:, torch.tensor(keep)].mean(1), dim=-1)
        zs = scale * z @ teacher.T
        sccm = ((text - net.description_means) ** 2).mean()
        p, log_q = F.softmax(zs, dim=-1), F.log_softmax(logits, dim=-1)
        kdsp = (p * (p.log() - log_q)).sum() / logits.numel()
    torch.testing.assert_close(term.detach(), 2.0 * sccm + 0.5 * kdsp)
    assert net.regularization_loss() is None  # consumed by the engine's loss


def test_registry_builds_it_from_the_knowledge_descriptions(shared_backbone):
    net = build_method("biomedcoop", CLASSES, shared_backbone, descriptions={c: [f"{c} a", f"{c} b"] for c in CLASSES})
    assert net.description_embeddings.shape[:2] == (3, 2) and set(net.trainable_parameters()) == {"ctx"}
    # without descriptions: the curated ones (attribute prompts and description texts) of the known classes
    curated = build_method("biomedcoop", ["melanoma", "nevus"], shared_backbone)
    assert curated.description_embeddings.shape[1] >= 2
    with pytest.raises(ValueError, match="needs description prompts"):
        BiomedCoOp(CLASSES, shared_backbone, None)
