"""``monai-cilmp train``: train CILMP on a datalist with the CILMP bundle's recipe."""

from __future__ import annotations

import argparse
from pathlib import Path

from monai_cilmp.cli._bundle import add_backbone_arguments, class_overrides, quick_gelu_option, run_bundle


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train CILMP on a datalist and a knowledge bank (the CILMP bundle's train.json)",
        description="Train CILMP with the paper's recipe (SGD, warm-up + cosine, Gaussian prompt aggregation).",
    )
    parser.add_argument("--datalist", required=True, help="datalist JSON written by `monai-cilmp prepare`")
    parser.add_argument("--knowledge", required=True, help="knowledge bank from `monai-cilmp knowledge extract`")
    parser.add_argument("--out", required=True, help="run folder (checkpoints, TensorBoard logs, metrics)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--dataset", help="registered dataset: its class names, preset and label type")
    group.add_argument("--classes", nargs="+", metavar="NAME", help="class names in label order")
    parser.add_argument("--preset", help="modality preset (default: the datalist's)")
    add_backbone_arguments(parser)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.0025)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=4, help="data loading processes")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.set_defaults(func=run)


def check_inputs(datalist: str, knowledge: str, class_names: list[str] | None) -> list[str]:
    """Fail early, in one sentence, on a missing or mismatched datalist or knowledge bank; return the classes."""
    from monai_cilmp.data import load_datalist
    from monai_cilmp.knowledge import KnowledgeBank

    data = load_datalist(datalist, class_names)
    names = list(data["class_names"])
    if not data.get("training"):
        raise ValueError(f"Datalist '{datalist}' has no training images.")
    KnowledgeBank.load(knowledge).check_classes(names)
    return names


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    overrides = class_overrides(args)
    names = check_inputs(args.datalist, args.knowledge, overrides.get("class_names"))
    overrides.update(
        {
            "datalist_file": str(Path(args.datalist).resolve()),
            "knowledge_file": str(Path(args.knowledge).resolve()),
            "output_dir": str(out),
            "backbone": args.backbone,
            "pretrained": args.pretrained,
            "offline": args.offline,
            "recipe#max_epochs": args.epochs,
            "recipe#batch_size": args.batch_size,
            "recipe#lr": args.lr,
            "recipe#seed": args.seed,
            "num_workers": args.workers,
            "train#trainer#resume": args.resume,
        }
    )
    if quick_gelu_option(args) is not None:  # recorded with the network's settings, so evaluation rebuilds the same
        overrides.update(
            {"network_def#quick_gelu": quick_gelu_option(args), "network_hparams#quick_gelu": "@network_def#quick_gelu"}
        )
    if args.resume and not (out / "checkpoints" / "last.pt").is_file():
        raise FileNotFoundError(f"Nothing to resume in '{out}': it has no checkpoints/last.pt.")
    print(
        f"Training CILMP ({args.backbone}, {args.pretrained}) for {args.epochs} epochs on {len(names)} classes: "
        f"{', '.join(names)}"
    )
    run_bundle(["train.json"], overrides)
    print(f"Done. Checkpoints: {out / 'checkpoints'}; TensorBoard: tensorboard --logdir {out / 'tensorboard'}")
    print(f"Evaluate with: monai-cilmp evaluate --run {out}")
    return 0
