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

#: test modules that train, run the bundle, run notebooks or start processes: the slow tier. `pytest -m "not slow"`
#: (the fast tier, README "Tests") leaves them out; the default run and CI run them (a test may also be marked itself)
SLOW_MODULES = (
    "test_tutorials.py",
    "test_cli.py",
    "test_cli_train.py",
    "test_faults.py",
    "test_gpu.py",
    "test_hostile_inputs.py",
    "bundle/test_cilmp_bundle.py",
    "bundle/test_method_overlays.py",
    "bundle/test_train_config.py",
    "compare/test_cells.py",
    "compare/test_compare.py",
    "demo/test_demo_bundle.py",
    "demo/test_pretrain.py",
    "demo/test_quick_start.py",
    "data/test_training.py",
    "data/test_cli_prepare.py",
    "engines/test_trainer.py",
    "engines/test_method_training.py",
    "engines/test_features.py",
    "engines/test_progress.py",
    "engines/test_stopping.py",
    "engines/test_device_cache.py",
    "engines/test_inference.py",
    "engines/test_run_calibration.py",
    "knowledge/test_cli_knowledge.py",
    "knowledge/test_extraction.py",
    "explain/test_saliency.py",
    "explain/test_knowledge.py",
    "networks/test_methods.py",
)


#: markers whose tests run only when ``-m`` names them (``.ci/run`` runs each on its own): pyproject's addopts
#: ``-m 'not wheel and not distributed'`` leaves them out, but a ``-m`` on the command line (the fast tier's
#: ``-m "not slow"``) replaces that expression, so they are deselected here as well
OWN_RUN_MARKERS = ("wheel", "distributed")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark the modules of :data:`SLOW_MODULES` slow; leave the tests of :data:`OWN_RUN_MARKERS` out unless ``-m``
    names their marker."""
    tests = Path(__file__).resolve().parent
    for item in items:
        if Path(str(item.fspath)).resolve().relative_to(tests).as_posix() in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
    for marker in OWN_RUN_MARKERS:
        if marker not in (config.option.markexpr or ""):
            left_out = [item for item in items if item.get_closest_marker(marker)]
            if left_out:
                config.hook.pytest_deselected(items=left_out)
                items[:] = [item for item in items if not item.get_closest_marker(marker)]


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
