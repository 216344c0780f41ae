"""``monai-cilmp evaluate``: metrics, confusion matrix and predictions of a trained run on a split."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from monai_cilmp.cli._bundle import run_bundle


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a trained run on a split (accuracy, balanced accuracy, macro-F1, AUC, kappa, confusion)",
        description="Evaluate a run folder written by `monai-cilmp train` (the CILMP bundle's evaluate.json).",
    )
    parser.add_argument("--run", required=True, help="run folder written by `monai-cilmp train`")
    parser.add_argument("--datalist", help="datalist to evaluate (default: the one the run was trained on)")
    parser.add_argument("--split", default="test", choices=("training", "validation", "test"))
    parser.add_argument("--checkpoint", default="final", choices=("final", "last"), help="which checkpoint")
    # trust (issue 14): conformal sets fitted on the validation split, with the temperature
    parser.add_argument("--alpha", type=float, default=0.1, help="conformal error rate: sets miss at most this often")
    parser.add_argument("--conformal", default="lac", choices=("lac", "aps", "raps"), help="conformal score")
    parser.add_argument("--class-conditional", action="store_true", help="conformal coverage per class")
    parser.set_defaults(func=run)


def run_configs(checkpoint: Path) -> list[str]:
    """The bundle configs that rebuild a run's network: ``train.json``, the overlay of the method it recorded
    (``configs/methods/<method>.json``; none for runs from before methods were recorded: CILMP), ``evaluate.json``.
    """
    from monai_cilmp.engines import load_checkpoint

    method = load_checkpoint(checkpoint).get("metadata", {}).get("method")
    return ["train.json", *([f"methods/{method}.json"] if method else []), "evaluate.json"]


def run_overrides(run_dir: Path, checkpoint: Path) -> dict[str, Any]:
    """Bundle overrides that rebuild the network a run was trained with, from its checkpoint's metadata."""
    from monai_cilmp.engines import load_checkpoint

    meta = load_checkpoint(checkpoint).get("metadata", {})
    missing = [k for k in ("class_names", "knowledge", "backbone", "preset", "network") if k not in meta]
    if missing:
        raise ValueError(f"Checkpoint '{checkpoint}' lacks {missing}: it was not written by `monai-cilmp train`.")
    overrides: dict[str, Any] = {
        "output_dir": str(run_dir),
        "checkpoint": str(checkpoint),
        "class_names": meta["class_names"],
        "preset": meta["preset"],
        "ordinal": meta.get("ordinal", False),
        "knowledge_file": meta["knowledge"],
        "backbone": meta["backbone"],
        "pretrained": meta.get("pretrained") or "none",
        "offline": True,
        "num_workers": 0,
    }
    overrides.update({f"network_def#{k}": v for k, v in meta["network"].items()})
    if meta.get("datalist"):
        overrides["datalist_file"] = meta["datalist"]
    return overrides


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run).resolve()
    checkpoint = run_dir / "checkpoints" / f"{args.checkpoint}.pt"
    overrides = run_overrides(run_dir, checkpoint)
    if args.datalist:
        overrides["datalist_file"] = str(Path(args.datalist).resolve())
    overrides["split"] = args.split
    # trust (issue 14): argparse checked these (a float, a choice, a flag): no user string reaches the config parser
    overrides.update({"conformal#alpha": args.alpha, "conformal#method": args.conformal})
    overrides["conformal#class_conditional"] = bool(args.class_conditional)
    print(f"Evaluating {checkpoint} on the {args.split} split of {overrides.get('datalist_file')}")
    run_bundle(run_configs(checkpoint), overrides)
    prefix = run_dir / args.split
    print(f"Metrics: {prefix}_metrics.json; confusion matrix: {prefix}_confusion.png;")
    print(f"predictions: {prefix}_predictions.csv; reliability diagram: {prefix}_reliability.png;")  # issue 14
    print(f"conformal coverage/size against alpha: {prefix}_conformal.png; calibration: {run_dir}/calibration.json")
    return 0
