"""``monai-cilmp predict``: class probabilities of images with a trained run, one JSON line per image."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from monai_cilmp.cli._bundle import parse_bundle
from monai_cilmp.cli.evaluate import run_overrides

_SKIP = {".json", ".csv", ".txt", ".md", ".safetensors", ".pt"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict images (files or folders) with a trained run; one JSON line per image",
        description="Predict with a run folder written by `monai-cilmp train` (the CILMP bundle's inference.json).",
    )
    parser.add_argument("--run", required=True, help="run folder written by `monai-cilmp train`")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders (recursive)")
    parser.add_argument("--out", help="write the JSON lines to this file instead of standard output")
    parser.add_argument("--checkpoint", default="final", choices=("final", "last"))
    parser.set_defaults(func=run)


def collect_images(inputs: list[str]) -> list[str]:
    """Files named directly plus every file under named folders (skipping hidden files and the toolkit's outputs)."""
    images: list[str] = []
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            images += sorted(
                str(p)
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() not in _SKIP
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.is_file():
            images.append(str(path))
        else:
            raise FileNotFoundError(f"'{entry}' is neither an image file nor a folder.")
    if not images:
        raise ValueError(f"No image files found in {', '.join(inputs)}.")
    return images


def run(args: argparse.Namespace) -> int:
    from monai_cilmp.engines import load_checkpoint, predict_calibrated, prediction_set_names
    from monai_cilmp.utils import atomic_write

    run_dir = Path(args.run).resolve()
    checkpoint = run_dir / "checkpoints" / f"{args.checkpoint}.pt"
    images = collect_images(args.inputs)
    overrides = run_overrides(run_dir, checkpoint)
    overrides["images"] = images
    print(f"Predicting {len(images)} images with {checkpoint}", file=sys.stderr)
    parser = parse_bundle(["inference.json"], overrides)
    network = parser.get_parsed_content("network")
    network.load_trainable_state_dict(load_checkpoint(checkpoint)["network"])
    # issue 14: the run's temperature and conformal sets (calibration.json) when `evaluate` fitted them
    loader, device = parser.get_parsed_content("dataloader"), parser.get_parsed_content("device")
    probs, _, sets = predict_calibrated(network, loader, device, run_dir)
    names = overrides["class_names"]
    named_sets = prediction_set_names(sets, names)
    lines = [
        json.dumps(
            {
                "image": image,
                "predicted": names[int(row.argmax())],
                "probabilities": {n: round(float(p), 6) for n, p in zip(names, row)},
                **({"prediction_set": named_sets[i]} if named_sets is not None else {}),  # issue 14
            }
        )
        for i, (image, row) in enumerate(zip(images, probs))
    ]
    if args.out:
        atomic_write(args.out, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
        print(f"Predictions written to {args.out}", file=sys.stderr)
    else:
        print("\n".join(lines))
    return 0
