"""What the train/evaluate/predict commands share: the CILMP bundle and how a command line becomes overrides."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["BUNDLE_DIR", "add_backbone_arguments", "bundle_config", "class_overrides", "parse_bundle", "run_bundle"]


def _find_bundle() -> Path:
    """The CILMP bundle: ``monai_cilmp/bundle`` of an installed wheel, else ``bundles/cilmp`` of a source checkout
    (editable installs); ``setup.py`` maps the one onto the other at build time, so there is one copy of it."""
    package = Path(__file__).resolve().parents[1]
    candidates = (package / "bundle", package.parent / "bundles" / "cilmp")
    return next((c for c in candidates if (c / "configs" / "train.json").is_file()), candidates[0])


BUNDLE_DIR = _find_bundle()


def bundle_config(name: str) -> str:
    """Path of ``configs/<name>`` of the CILMP bundle, or a clear error when the bundle is not there."""
    path = BUNDLE_DIR / "configs" / name
    if not path.is_file():
        raise FileNotFoundError(
            f"The CILMP bundle config '{path}' is missing: reinstall monai-cilmp (a wheel carries the bundle in "
            "monai_cilmp/bundle; a source checkout has it in bundles/cilmp)."
        )
    return str(path)


def add_backbone_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", default="ViT-B-16", help="open_clip model name, hf-hub: id or local folder")
    parser.add_argument(
        "--pretrained", default="openai", help="pretrained tag or checkpoint file ('none': random weights)"
    )
    parser.add_argument("--offline", action="store_true", help="never download backbone weights")


def class_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``class_names`` / ``preset`` / ``ordinal`` from ``--dataset`` or ``--classes`` (else the datalist's)."""
    out: dict[str, Any] = {}
    if getattr(args, "dataset", None):
        from monai_cilmp.data import get_dataset

        spec = get_dataset(args.dataset)
        out.update(class_names=list(spec.class_names), preset=spec.preset, ordinal=spec.ordinal)
        out["dataset_name"] = spec.name
    if getattr(args, "classes", None):
        out["class_names"] = list(args.classes)
    if getattr(args, "preset", None):
        out["preset"] = args.preset
    return out


def parse_bundle(configs: list[str], overrides: dict[str, Any]):
    """A ``ConfigParser`` over the bundle configs with ``overrides`` applied."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([bundle_config(c) for c in configs])
    parser.update(overrides)
    return parser


def run_bundle(configs: list[str], overrides: dict[str, Any]) -> None:
    """``python -m monai.bundle run`` on the bundle configs with ``overrides``."""
    from monai.bundle import run

    run(
        run_id="run",
        init_id="initialize",
        config_file=[bundle_config(c) for c in configs],
        logging_file=bundle_config("logging.conf"),
        bundle_root=str(BUNDLE_DIR),
        **overrides,
    )
