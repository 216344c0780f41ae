"""Knowledge attributions: gradient x input on CILMP's knowledge positions, checked against finite differences, and
mapped back to the description's words."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_cilmp.explain import group_words, knowledge_attributions, save_knowledge_plot
from monai_cilmp.knowledge import KnowledgeBank
from monai_cilmp.networks import CILMP, CoOp

CLASSES = ["nevus", "melanoma"]
LENGTHS = (5, 12)  # with prefix 4 / suffix 4: class 1 has prefix, unchanged (4..7) and suffix positions


def bank(scale=None):
    g = torch.Generator().manual_seed(3)
    tensors = {c: torch.randn(n, 16, generator=g) for c, n in zip(CLASSES, LENGTHS)}
    if scale is not None:
        c, i, f = scale
        tensors[CLASSES[c]][i] *= f
    tokens = {
        "nevus": ["even", "brown", "round", "sp", "##ot"],
        "melanoma": ["irregular", "dark", "blue", "-", "white", "ve", "##il", "with", "uneven", "border", "##s", "."],
    }
    return KnowledgeBank.from_tensors(tensors, source_model="random", mode="tokens", tokens=tokens)


@pytest.fixture(scope="module")
def backbone():
    from monai_cilmp.networks import load_backbone

    torch.manual_seed(0)
    return load_backbone("CILMP-Tiny", None)


def make(backbone, knowledge, state=None):
    torch.manual_seed(0)
    net = CILMP(CLASSES, knowledge, backbone, text_prompt_depth=2, vision_prompt_depth=2).eval()
    if state is not None:
        net.load_trainable_state_dict(state)
    return net


@pytest.mark.parametrize("position", [(0, 1), (0, 4), (1, 0), (1, 5), (1, 10)])
def test_gradient_x_input_matches_finite_differences(backbone, position):
    """Scaling one hidden state by (1 +- eps) changes the class's logit by +- eps * attribution (prefix, suffix and
    unchanged positions alike)."""
    net = make(backbone, bank())
    image = torch.randn(1, 3, net.image_size, net.image_size, generator=torch.Generator().manual_seed(1))
    attributions = knowledge_attributions(net, image)
    c, i = position
    eps = 1e-2
    state = net.trainable_state_dict()
    with torch.no_grad():
        up = make(backbone, bank((c, i, 1 + eps)), state)(image)[0, c].double()
        down = make(backbone, bank((c, i, 1 - eps)), state)(image)[0, c].double()
    finite_difference = float((up - down) / (2 * eps))
    assert attributions[c].token_scores[i] == pytest.approx(finite_difference, rel=0.05, abs=1e-4)


def test_words_and_plot(backbone, tmp_path):
    net = make(backbone, bank())
    image = torch.randn(1, 3, net.image_size, net.image_size)
    attributions = knowledge_attributions(net, image)
    melanoma = attributions[1]
    assert melanoma.words == ["irregular", "dark", "blue", "-", "white", "veil", "with", "uneven", "borders", "."]
    veil = melanoma.words.index("veil")
    assert melanoma.word_scores[veil] == pytest.approx(melanoma.token_scores[5] + melanoma.token_scores[6])
    assert np.isfinite(melanoma.token_scores).all() and len(melanoma.token_scores) == 12
    top = melanoma.top(3)
    assert len(top) == 3 and abs(top[0][1]) >= abs(top[-1][1])
    # nothing of the knowledge buffers was left replaced, and no gradient left behind
    assert not net.knowledge.bank.requires_grad and all(p.grad is None for p in net.parameters())
    path = save_knowledge_plot(attributions, tmp_path / "k.png", top_k=4, probabilities=[0.3, 0.7])
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_baselines_have_no_knowledge(backbone):
    net = CoOp(CLASSES, backbone, n_ctx=4).eval()
    assert knowledge_attributions(net, torch.randn(1, 3, net.image_size, net.image_size)) is None


def test_group_words_for_each_tokenizer_family():
    assert group_words(["blue", "-", "white", "ve", "##il"]) == [
        ("blue", [0]),
        ("-", [1]),
        ("white", [2]),
        ("veil", [3, 4]),
    ]
    assert [w for w, _ in group_words(["\u2581blue", "\u2581ve", "il", "."])] == ["blue", "veil", "."]
    assert [w for w, _ in group_words(["\u0120blue", "\u0120ve", "il"])] == ["blue", "veil"]
    assert [w for w, _ in group_words(["blue</w>", "ve", "il</w>"])] == ["blue", "veil"]
    assert [w for w, _ in group_words(["k0", "k1"])] == ["k0", "k1"]
