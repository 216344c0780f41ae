"""``monai-cilmp demo``: the offline demo (the CILMP bundle's train.json with the demo.json overlay)."""

from __future__ import annotations

import argparse
from pathlib import Path

from monai_cilmp.cli._bundle import run_bundle


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="offline demo: synthetic dermoscopy-like images, a tiny pre-trained CLIP, CILMP trained and evaluated",
        description=(
            "Make a small synthetic medical-looking data set, pre-train the tiny CLIP backbone on synthetic "
            "image-caption pairs, extract class knowledge with the embedded MiniLM encoder, train CILMP and compare "
            "it with zero-shot CLIP. Runs offline, in a few minutes on two CPU cores."
        ),
    )
    parser.add_argument("--out", default="cilmp-demo", help="folder for the data (out/data) and the run (out/run)")
    # unset options keep the values of configs/demo.json, the one place the demo's settings live
    parser.add_argument("--epochs", type=int, help="CILMP training epochs (demo.json: 15)")
    parser.add_argument("--images-per-class", type=int, help="synthetic images per class (demo.json: 100)")
    parser.add_argument("--pretrain-steps", type=int, help="pre-training steps of the tiny backbone (demo.json: 500)")
    parser.add_argument("--seed", type=int, help="seed of the data, the backbone and training (demo.json: 0)")
    parser.add_argument(
        "--threads", type=int, help="torch compute threads for the whole demo (demo.json: 1, the README's numbers)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, not {args.threads}.")
    out = Path(args.out).expanduser().resolve()
    overrides = {"dataset_dir": str(out / "data"), "output_dir": str(out / "run")}
    options = {
        "recipe#max_epochs": args.epochs,
        "recipe#seed": args.seed,
        "demo#seed": args.seed,
        "demo#images_per_class": args.images_per_class,
        "demo#pretrain_steps": args.pretrain_steps,
        "demo#num_threads": args.threads,
    }
    overrides.update({key: value for key, value in options.items() if value is not None})
    print(f"Running the offline CILMP demo in {out} (data in {out / 'data'}, run in {out / 'run'}).")
    run_bundle(["train.json", "demo.json"], overrides)
    return 0
