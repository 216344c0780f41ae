"""``monai-cilmp evaluate``: metrics, confusion matrix and predictions of a trained run on a split."""

from __future__ import annotations

import argparse
from pathlib import Path

from monai_cilmp.cli._bundle import add_runtime_arguments, apply_runtime, run_bundle

CHECKPOINTS = ("final", "best", "last")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a trained run on a split (accuracy, balanced accuracy, macro-F1, AUC, kappa, confusion)",
        description=(
            "Evaluate a run folder written by `monai-cilmp train` (the CILMP bundle's evaluate.json). The network is "
            "rebuilt from what the run recorded (backbone weights checked against their hash, random weights from "
            "their seed, the run's own copy of the knowledge bank), so the numbers are the same on any machine."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--run", required=True, help="run folder written by `monai-cilmp train`")
    parser.add_argument("--datalist", help="datalist to evaluate (default: the one the run was trained on)")
    parser.add_argument("--split", default="test", choices=("training", "validation", "test"))
    parser.add_argument(
        "--checkpoint",
        default="final",
        choices=CHECKPOINTS,
        help="final: end of training; best: best validation accuracy; last: last epoch saved",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=0.1,
        help="conformal error rate: prediction sets miss the true class at most this often",
    )
    parser.add_argument("--conformal", default="lac", choices=("lac", "aps", "raps"), help="conformal score")
    parser.add_argument("--class-conditional", action="store_true", help="conformal coverage per class")
    add_runtime_arguments(parser)
    parser.set_defaults(func=run)


def run_configs(method: str | None) -> list[str]:
    """The bundle configs that rebuild a run's network: ``train.json``, the overlay of the method it recorded
    (``configs/methods/<method>.json``; none for runs from before methods were recorded: CILMP), ``evaluate.json``.
    """
    return ["train.json", *([f"methods/{method}.json"] if method else []), "evaluate.json"]


def run(args: argparse.Namespace) -> int:
    from monai_cilmp.cli._launch import one_process_only

    one_process_only("evaluate")
    from monai_cilmp.engines.runs import load_run

    trained = load_run(args.run, args.checkpoint)
    overrides = trained.bundle_overrides()
    if args.datalist:
        overrides["datalist_file"] = str(Path(args.datalist).resolve())
    if not overrides.get("datalist_file"):
        raise ValueError(f"Run '{trained.directory}' recorded no datalist: pass --datalist.")
    if not 0 < args.alpha < 1:
        raise ValueError(f"--alpha must be between 0 and 1 (exclusive), not {args.alpha}.")
    overrides["split"] = args.split
    overrides.update({"conformal#alpha": args.alpha, "conformal#method": args.conformal})
    overrides["conformal#class_conditional"] = bool(args.class_conditional)
    overrides.update(apply_runtime(args))
    print(f"Evaluating {trained.checkpoint} on the {args.split} split of {overrides['datalist_file']}")
    run_bundle(run_configs(trained.method), overrides)
    prefix = trained.directory / args.split
    print(f"Metrics: {prefix}_metrics.json; confusion matrix: {prefix}_confusion.png;")
    print(f"predictions: {prefix}_predictions.csv; reliability diagram: {prefix}_reliability.png;")
    print(f"coverage/size against alpha: {prefix}_conformal.png; calibration: {trained.directory / 'calibration.json'}")
    print(f"MONAI's metrics file (MetricsSaver): {trained.directory / 'metrics' / args.split / 'metrics.csv'}")
    return 0
