"""The installed package carries the CILMP bundle: a built wheel trains, evaluates and predicts outside the repository.

The wheel test builds the wheel, installs it into a fresh virtual environment (which borrows the dependencies of the
running one through a ``.pth`` file, after the install) and runs the console script and ``python -m monai.bundle
run`` from a temporary folder, with no source tree on the path. It takes a minute or two, so it is selected
separately (``pytest -m wheel``, as ``.ci/run`` does).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from monai_cilmp.cli._bundle import BUNDLE_DIR
from tests.bundle.test_cilmp_bundle import CLASSES, _tiny_dataset

REPO = Path(__file__).resolve().parents[1]


def test_a_source_checkout_uses_bundles_cilmp():
    assert BUNDLE_DIR == REPO / "bundles" / "cilmp"
    assert (BUNDLE_DIR / "configs" / "train.json").is_file()


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> str:
    out = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, (
        f"{' '.join(command)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    )
    return out.stdout


def _can_build_without_isolation() -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= 77  # pyproject.toml's build requirement


@pytest.mark.wheel
@pytest.mark.slow
def test_the_installed_wheel_trains_evaluates_predicts_and_runs_the_bundle(tmp_path):
    dist, env_dir, work = tmp_path / "dist", tmp_path / "env", tmp_path / "work"
    work.mkdir()
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    clean["OMP_NUM_THREADS"] = "1"
    isolation = ["--no-build-isolation"] if _can_build_without_isolation() else []  # else pip fetches setuptools
    # build from a copy of what a source distribution holds: setuptools writes build/ and *.egg-info into the tree
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    no_cache = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "monai_cilmp", source / "monai_cilmp", ignore=no_cache)
    # the bundle's own files, not a user's data/, runs/ or models/ in it
    for name in ("LICENSE", "large_files.yml", "configs", "docs"):
        copy = shutil.copytree if (REPO / "bundles" / "cilmp" / name).is_dir() else shutil.copy2
        (source / "bundles" / "cilmp").mkdir(parents=True, exist_ok=True)
        copy(REPO / "bundles" / "cilmp" / name, source / "bundles" / "cilmp" / name)
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(dist), str(source)], work, clean
    )
    (wheel,) = dist.glob("monai_cilmp-*.whl")

    # a fresh environment with nothing but the wheel; the running environment's packages (torch, MONAI, ...) are added
    # only after the install, so pip never sees, let alone touches, another installation of monai-cilmp
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], work, clean)
    python = env_dir / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        work,
        clean,
    )
    site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], work, clean).strip()
    )
    main_site = sysconfig.get_paths()["purelib"]
    (site / "_dependencies.pth").write_text(f"import site; site.addsitedir({main_site!r})\n")

    where = _run(
        [str(python), "-c", "import monai_cilmp.cli._bundle as b; print(b.__file__); print(b.BUNDLE_DIR)"], work, clean
    )
    module, bundle = (Path(line) for line in where.split())
    assert module.is_relative_to(site) and bundle == site / "monai_cilmp" / "bundle", where
    assert not (site / "bundles").exists()

    _tiny_dataset(work)
    data = work / "data" / "toy"
    cli = str(env_dir / "bin" / "monai-cilmp")
    train = [
        cli,
        "train",
        "--datalist",
        str(data / "datalist.json"),
        "--knowledge",
        str(data / "knowledge.safetensors"),
    ]
    train += ["--out", "run", "--backbone", "CILMP-Tiny", "--pretrained", "none", "--offline"]
    train += ["--epochs", "1", "--batch-size", "4", "--workers", "0"]
    _run(train, work, clean)
    assert (work / "run" / "checkpoints" / "final.pt").is_file()
    _run([cli, "evaluate", "--run", "run"], work, clean)
    assert json.loads((work / "run" / "test_metrics.json").read_text())["n"] == 4
    lines = _run([cli, "predict", "--run", "run", str(data / "inference")], work, clean).splitlines()
    predictions = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(predictions) == 3 and all(p["predicted"] in CLASSES for p in predictions)

    bundle_run = [str(python), "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "train.json")]
    bundle_run += ["--logging_file", str(bundle / "configs" / "logging.conf"), "--bundle_root", str(work)]
    bundle_run += ["--dataset_name", "toy", "--backbone", "CILMP-Tiny", "--pretrained", "none", "--offline", "True"]
    bundle_run += ["--network_def#text_prompt_depth", "2", "--network_def#vision_prompt_depth", "2"]
    bundle_run += ["--recipe#batch_size", "4", "--num_workers", "0", "--train#trainer#max_epochs", "1"]
    _run(bundle_run, work, clean)
    assert (work / "runs" / "toy" / "checkpoints" / "final.pt").is_file()
