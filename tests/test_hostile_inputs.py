"""Names that look like code never run as code; legitimate odd names work end to end.

Every entry point gets strings that MONAI's config syntax would interpret (``$`` expressions, ``@`` references,
``%`` macros, ``#`` ids) plus quotes, spaces and non-ASCII letters: as class (folder) names, file names, command-line
values and checkpoint metadata. The ``$`` payload would create a marker file in the working directory if it ever ran.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monai_cilmp.cli import main
from tests.conftest import random_bank

MARKER = "PWNED"
EVIL = f"$__import__('os').system('touch {MARKER}')"
# legitimate class names that merely contain the config syntax's characters
CLASSES = [EVIL, "@recipe %macro #id \"quoted\" 'naïve' ümlaut"]
TINY = ["--backbone", "CILMP-Tiny", "--pretrained", "none", "--offline", "--workers", "0", "--threads", "1"]


def no_marker(*roots: Path) -> bool:
    return not any(list(Path(r).rglob(MARKER)) for r in roots) and not Path(MARKER).exists()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A folder-per-class data set with hostile class and file names, its datalist and knowledge bank; the working
    directory is the data set's folder, where the payload would write its marker."""
    root = tmp_path_factory.mktemp("hostile")
    previous = os.getcwd()
    os.chdir(root)
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        folder = root / "images" / name
        folder.mkdir(parents=True)
        for i in range(6):
            image = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
            image[8:24, 8:24, 0 if label == 0 else 2] = 220
            Image.fromarray(image).save(folder / (f"{EVIL} {i}.png" if i == 0 else f"@{i} ü.png"))
    assert main(["prepare", "folder", str(root / "images"), "--out", str(root / "datalist.json"), "--check"]) == 0
    random_bank(CLASSES, lengths=(5, 7), dim=16).save(root / "knowledge.safetensors")
    inference = root / "to predict"
    inference.mkdir()
    for i, source in enumerate(sorted((root / "images").rglob("*.png"))[:3]):
        (inference / (f"{EVIL}.png" if i == 0 else f"%{i} naïve.png")).write_bytes(source.read_bytes())
    yield root
    os.chdir(previous)
    assert no_marker(root)


@pytest.fixture(scope="module")
def trained(hostile):
    run = hostile / "run $@%"
    args = [
        "train",
        "--datalist",
        str(hostile / "datalist.json"),
        "--knowledge",
        str(hostile / "knowledge.safetensors"),
    ]
    assert main([*args, "--out", str(run), *TINY, "--epochs", "1", "--batch-size", "4", "--lr", "0.05"]) == 0
    assert no_marker(hostile)
    return run


def test_prepare_keeps_hostile_class_names(hostile):
    datalist = json.loads((hostile / "datalist.json").read_text())
    assert datalist["class_names"] == sorted(CLASSES)
    assert no_marker(hostile)


def test_train_evaluate_predict_with_hostile_names(hostile, trained, capsys):
    assert main(["evaluate", "--run", str(trained), "--threads", "1"]) == 0
    metrics = json.loads((trained / "test_metrics.json").read_text())
    assert set(metrics["per_class"]) == set(CLASSES)
    capsys.readouterr()
    assert main(["predict", "--run", str(trained), str(hostile / "to predict"), "--threads", "1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == 3 and any(Path(r["image"]).name == f"{EVIL}.png" for r in lines)
    assert all(set(r["probabilities"]) == set(CLASSES) for r in lines)
    assert no_marker(hostile)


@pytest.mark.parametrize(
    "option, expected",
    [
        ("--preset", "Unknown preset"),
        ("--backbone", "Unknown backbone"),
        ("--pretrained", "neither a known tag"),
        ("--classes", "differ from those of datalist"),
    ],
)
def test_hostile_command_line_values_are_refused_as_data(hostile, tmp_path, capsys, option, expected):
    args = [
        "train",
        "--datalist",
        str(hostile / "datalist.json"),
        "--knowledge",
        str(hostile / "knowledge.safetensors"),
    ]
    args += ["--out", str(tmp_path / "run"), *TINY, "--epochs", "1"]
    if option in ("--backbone", "--pretrained"):
        index = args.index(option)
        args[index + 1] = EVIL
    else:
        args += [option, EVIL]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and err.count("\n") <= 2
    assert no_marker(hostile, tmp_path)


def test_checkpoint_metadata_is_data(hostile, trained, tmp_path, capsys):
    """A checkpoint whose metadata hold expressions, references or odd hyper-parameter names is refused in one
    sentence, never evaluated."""
    import shutil

    from monai_cilmp.engines import load_checkpoint

    for index, (key, value) in enumerate(
        [
            ("preset", EVIL),
            ("backbone", ["not", "a", "string"]),
            ("method", EVIL),
            ("network", {"n_ctx": {"_target_": "os.system", "command": f"touch {MARKER}"}}),
            ("network", {"x#y": 1}),
            ("class_names", [EVIL]),
        ]
    ):
        run = tmp_path / f"run-{index}"
        shutil.copytree(trained, run)
        state = load_checkpoint(run / "checkpoints" / "final.pt")
        state["metadata"][key] = value
        torch.save(state, run / "checkpoints" / "final.pt")
        assert main(["evaluate", "--run", str(run)]) == 2, key
        err = capsys.readouterr().err
        assert f"invalid '{key}'" in err and "Traceback" not in err, err
    # a hostile string that is otherwise valid data (the datalist path) is passed through as data
    run = tmp_path / "run-datalist"
    shutil.copytree(trained, run)
    state = load_checkpoint(run / "checkpoints" / "final.pt")
    state["metadata"]["datalist"] = EVIL
    torch.save(state, run / "checkpoints" / "final.pt")
    assert main(["evaluate", "--run", str(run)]) == 2
    assert "Datalist '$__import__" in capsys.readouterr().err
    assert no_marker(hostile, tmp_path)


def test_bundle_inference_config_with_hostile_names(hostile, trained, tmp_path):
    from monai.bundle import run

    from monai_cilmp.cli._bundle import bundle_config
    from monai_cilmp.utils.config import literal_overrides

    out, probabilities = tmp_path / "predictions.csv", tmp_path / "probabilities.csv"
    settings = {"output_dir": str(trained), "input_dir": str(hostile / "to predict"), "output_file": str(out)}
    run(
        run_id="run",
        init_id="initialize",
        config_file=[bundle_config(c) for c in ("inference.json", "presets/dermoscopy.json", "from_run.json")],
        logging_file=bundle_config("logging.conf"),
        **literal_overrides({**settings, "probabilities_file": str(probabilities)}),
    )
    rows = out.read_text(encoding="utf-8").splitlines()  # MONAI's format: file, class index; no header
    assert len(rows) == 3 and any(EVIL in row for row in rows)
    rows = probabilities.read_text(encoding="utf-8").splitlines()  # header, then one row per image
    assert len(rows) == 4 and EVIL in rows[0] + "".join(rows)
    assert no_marker(hostile, tmp_path)


def test_model_zoo_bundle_of_a_run_with_hostile_names(hostile, trained, tmp_path):
    """``monai-cilmp export --format bundle`` writes the run's class names into ``inference.json`` as data: the
    packed bundle's network has them, and nothing ran."""
    import shutil

    from monai.bundle import ConfigParser

    from monai_cilmp.cli._bundle import BUNDLE_DIR

    bundle = tmp_path / "cilmp"
    shutil.copytree(BUNDLE_DIR, bundle, ignore=shutil.ignore_patterns("__pycache__", "models", "data", "runs"))
    assert main(["export", "--run", str(trained), "--format", "bundle", "--out", str(bundle)]) == 0
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    parser["device"] = "cpu"
    assert parser.get_parsed_content("class_names") == sorted(CLASSES)
    assert parser.get_parsed_content("network").class_names == sorted(CLASSES)
    assert no_marker(hostile, tmp_path)


def test_compare_with_hostile_class_names(hostile, tmp_path):
    args = ["compare", "--datalist", str(hostile / "datalist.json"), "--methods", "zero-shot-name", "coop"]
    args += ["--shots", "1", "--seeds", "1", "--epochs", "1", "--out", str(tmp_path / "cmp"), *TINY]
    assert main(args) == 0
    assert (tmp_path / "cmp" / "results.md").is_file()
    assert no_marker(hostile, tmp_path)


def test_config_literal_round_trips_every_character():
    from monai.bundle import ConfigParser

    from monai_cilmp.utils.config import check_override_ids, literal_overrides

    values = [EVIL, "@network_def", "%configs/train.json#recipe", "a#b", "ü \"'` \\ \n", ["@x", {"$k": "%v"}], 3, None]
    parser = ConfigParser({"value": None, "after": "$@value"})
    for value in values:
        parser.update(literal_overrides({"value": value}))
        assert parser.get_parsed_content("after", lazy=False) == value
    for bad in ("a b", "x#../y", "$x", "@y", "x#%z"):
        with pytest.raises(ValueError, match="is not a valid config id"):
            check_override_ids([bad])
    assert no_marker(Path.cwd())
