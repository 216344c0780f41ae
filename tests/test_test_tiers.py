"""The test tiers stay what the README says: every module listed slow exists (a renamed one would otherwise join the
fast tier unnoticed) and the markers left out of both tiers are declared."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import OWN_RUN_MARKERS, SLOW_MODULES

TESTS = Path(__file__).resolve().parent


def test_every_slow_module_exists():
    missing = [module for module in SLOW_MODULES if not (TESTS / module).is_file()]
    assert missing == [], f"SLOW_MODULES (tests/conftest.py) lists modules that are not there: {missing}"


def test_markers_run_only_when_named_are_declared_and_left_out_by_default(pytestconfig):
    declared = {marker.split(":")[0] for marker in pytestconfig.getini("markers")}
    assert set(OWN_RUN_MARKERS) | {"slow"} <= declared
    addopts = " ".join(pytestconfig.getini("addopts"))  # pyproject.toml's [tool.pytest.ini_options]
    assert all(f"not {marker}" in addopts for marker in OWN_RUN_MARKERS)
