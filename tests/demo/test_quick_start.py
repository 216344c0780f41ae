"""The README's quick start on your own data, run exactly as written, offline, on real chest X-rays.

The images are PneumoniaMNIST's (``../shared/data/pneumoniamnist.npz``; the test skips without it) written as a folder
per class; the named tiny backbone is the one ``monai-cilmp demo`` keeps (made here with small settings if this
session has not made it yet).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_cilmp.cli import main
from tests.conftest import SHARED_DATA

README = Path(__file__).resolve().parents[2] / "README.md"
NPZ = SHARED_DATA / "pneumoniamnist.npz"
SMALL_DEMO = ["--images-per-class", "8", "--pretrain-steps", "5", "--epochs", "1"]


def quick_start_commands() -> list[list[str]]:
    """The commands of the README block marked ``quick-start``, continuation lines joined."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- quick-start:.*?-->\s*```bash\n(.*?)```", text, re.S)
    assert block, "the README has no quick-start block"
    joined = block.group(1).replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines() if line.strip()]


@pytest.mark.skipif(not NPZ.is_file(), reason="needs ../shared/data/pneumoniamnist.npz")
def test_readme_quick_start_runs_offline_as_written(tmp_path, monkeypatch, capsys):
    from monai_cilmp.networks.backbones import project_pretrained_file

    if project_pretrained_file("CILMP-Tiny", "synthetic") is None:
        assert main(["demo", "--out", str(tmp_path / "demo"), *SMALL_DEMO]) == 0
    data = np.load(NPZ)
    for label, name in enumerate(("normal", "pneumonia")):
        folder = tmp_path / "my_xrays" / name
        folder.mkdir(parents=True)
        chosen = np.flatnonzero(data["train_labels"].ravel() == label)[:30]
        for i in chosen:
            Image.fromarray(data["train_images"][i]).save(folder / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    commands = quick_start_commands()
    assert [c[:2] for c in commands][:3] == [["monai-cilmp", "prepare"], ["monai-cilmp", "knowledge"]] + [
        ["monai-cilmp", "train"]
    ]
    for command in commands:
        assert command[0] == "monai-cilmp"
        assert "--pretrained" not in command or "synthetic" in command  # nothing to download
        assert main(command[1:]) == 0, " ".join(command)
    metrics = json.loads((tmp_path / "my" / "run" / "test_metrics.json").read_text())
    assert set(metrics["per_class"]) == {"normal", "pneumonia"} and metrics["n"] > 0
    lines = (tmp_path / "my" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 30 and all(set(json.loads(x)["probabilities"]) == {"normal", "pneumonia"} for x in lines)
    settings = json.loads((tmp_path / "my" / "run" / "run.json").read_text())
    assert settings["pretrained"] == "synthetic" and len(settings["pretrained_file_sha256"]) == 64
