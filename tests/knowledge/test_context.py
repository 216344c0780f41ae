"""The CLIP context cap on knowledge length agrees with the prompt CILMP actually lays out."""

from __future__ import annotations

import pytest
import torch

from monai_cilmp.knowledge import KnowledgeBank, clip_token_count, knowledge_length_cap
from monai_cilmp.networks import load_backbone
from monai_cilmp.networks.nets import CILMP

CLASSES = ["immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "melanoma"]


def test_cap_formula():
    for name in CLASSES:
        assert knowledge_length_cap(name) == 77 - 1 - 4 - clip_token_count(f"{name}.") - 1
        assert knowledge_length_cap(name, n_ctx=10) == knowledge_length_cap(name) - 6
    assert knowledge_length_cap("normal_lung") == knowledge_length_cap("normal lung")
    with pytest.raises(ValueError, match="leaves no room for knowledge"):
        knowledge_length_cap("melanoma", n_ctx=75)


def test_a_bank_at_the_cap_fits_cilmp_and_one_more_token_does_not():
    caps = [knowledge_length_cap(n) for n in CLASSES]

    def build(extra: int) -> CILMP:
        bank = KnowledgeBank.from_tensors({n: torch.randn(c + extra, 8) for n, c in zip(CLASSES, caps)})
        backbone = load_backbone("CILMP-Tiny", None)
        return CILMP(CLASSES, bank, backbone=backbone, text_prompt_depth=1, vision_prompt_depth=0)

    assert int(build(0).pool_index.max()) == 76  # the longest prompt ends exactly at the last context position
    with pytest.raises(ValueError, match="needs 78 tokens .* but the text encoder's context is 77"):
        build(1)
