"""A small synthetic demo set, made once per test session (a few images per class)."""

from __future__ import annotations

import pytest

from monai_cilmp.demo import make_synthetic_dataset

N_PER_CLASS = 5


@pytest.fixture(scope="session")
def demo_set(tmp_path_factory):
    """``make_synthetic_dataset``'s result for a small set (5 images per class, seed 0)."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("demo") / "data", n_per_class=N_PER_CLASS, seed=0)
