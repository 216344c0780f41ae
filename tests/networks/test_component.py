"""CILMP is a MONAI component: bundle configs build it by full path and, after importing the package, by name."""

from __future__ import annotations

import pytest
from monai.bundle import ConfigParser

from tests.conftest import CLASSES, random_bank


@pytest.fixture
def bank_path(tmp_path):
    return str(random_bank().save(tmp_path / "kb.safetensors"))


def _config(target: str, bank_path: str, imports: bool) -> dict:
    config = {
        "class_names": CLASSES,
        "network_def": {
            "_target_": target,
            "class_names": "@class_names",
            "knowledge": bank_path,
            "backbone": "CILMP-Tiny",
            "pretrained": None,
            "text_prompt_depth": 3,
        },
    }
    if imports:
        config["imports"] = ["$import monai_cilmp"]
    return config


@pytest.mark.parametrize(
    "target, imports", [("monai_cilmp.networks.nets.CILMP", False), ("CILMP", True)], ids=["full-path", "short-name"]
)
def test_config_parser_builds_cilmp(target, imports, bank_path):
    parser = ConfigParser(_config(target, bank_path, imports))
    net = parser.get_parsed_content("network_def")
    assert type(net).__name__ == "CILMP"
    assert net.class_names == CLASSES and net.text_prompt_depth == 3
