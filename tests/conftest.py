"""Shared fixtures: tiny random open_clip backbones and random knowledge banks (all offline)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

# the project's own weights (the demo's `--pretrained synthetic`) go to a folder of this test session, never to the
# user's ~/.cache/monai-cilmp
os.environ["MONAI_CILMP_HOME"] = tempfile.mkdtemp(prefix="monai-cilmp-home-")

import monai_cilmp.networks  # noqa: E402, F401  (registers CILMP-Tiny and the other project configs)
from monai_cilmp.knowledge import KnowledgeBank  # noqa: E402
from monai_cilmp.networks import load_backbone  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CLASSES = ["normal lung", "bacterial pneumonia", "viral pneumonia", "covid"]


def random_bank(classes=CLASSES, lengths=(16, 3, 9, 12), dim=32, seed=0) -> KnowledgeBank:
    generator = torch.Generator().manual_seed(seed)
    return KnowledgeBank.from_tensors(
        {c: torch.randn(n, dim, generator=generator) for c, n in zip(classes, lengths)},
        source_model="random",
        mode="tokens",
        layer=-1,
        texts={c: f"a description of {c}" for c in classes},
    )


@pytest.fixture
def tiny_backbone():
    """A fresh CILMP-Tiny backbone with random weights (seeded)."""
    torch.manual_seed(0)
    return load_backbone("CILMP-Tiny", None)


@pytest.fixture
def bank() -> KnowledgeBank:
    return random_bank()
