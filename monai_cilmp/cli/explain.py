"""``monai-cilmp explain``: why a trained run predicted what it did, image by image.

Writes per image a saliency overlay (HiResCAM or Grad-CAM) of the image tower's patch tokens
(``<image>_saliency.png``) and, for CILMP runs, a plot of the class-description words that moved each class's score
most (``<image>_knowledge.png``); prints the prediction, its conformal set (when ``evaluate`` calibrated the run) and
the top words per class.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monai_cilmp.cli._bundle import add_runtime_arguments, apply_runtime, from_run_configs, parse_bundle
from monai_cilmp.cli.evaluate import CHECKPOINTS
from monai_cilmp.cli.predict import collect_images, warn_if_learned_nothing
from monai_cilmp.utils import write_json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="saliency maps and knowledge-word attributions of a trained run's predictions",
        description="Explain the predictions of a run folder written by `monai-cilmp train` (see docs/trust.md).",
    )
    parser.add_argument("--run", required=True, help="run folder written by `monai-cilmp train`")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders (recursive)")
    parser.add_argument("--out", help="folder for the PNGs and explanations.json (default: <run>/explanations)")
    parser.add_argument("--class", dest="target_class", help="explain this class (default: each predicted class)")
    parser.add_argument("--top-k", type=int, default=8, help="words per class in the printout and the plot")
    parser.add_argument("--saliency", default="hirescam", choices=("hirescam", "gradcam"), help="map weighting")
    parser.add_argument("--checkpoint", default="final", choices=CHECKPOINTS, help="which checkpoint of the run")
    add_runtime_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # lazy imports here and below: `--help` and argument errors load neither torch nor MONAI
    from monai_cilmp.engines import load_calibration, load_run
    from monai_cilmp.explain import explain_images, format_explanation

    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}.")
    trained = load_run(args.run, args.checkpoint)
    run_dir = trained.directory
    images = collect_images(args.inputs)
    if args.target_class is not None and args.target_class not in trained.class_names:
        raise ValueError(f"--class '{args.target_class}' is not one of the run's classes {trained.class_names}.")
    runtime = apply_runtime(args)
    out_dir = Path(args.out).resolve() if args.out else run_dir / "explanations"
    print(f"Explaining {len(images)} images with {trained.checkpoint}", file=sys.stderr)
    parser = parse_bundle(
        from_run_configs(trained.metadata["preset"]),
        {"output_dir": str(run_dir), "checkpoint_name": args.checkpoint, "device": runtime["device"]},
    )
    network = parser.get_parsed_content("network")
    results = explain_images(
        network,
        images,
        parser.get_parsed_content("preprocessing"),
        out_dir,
        calibration=(calibration := load_calibration(run_dir)),
        target_class=args.target_class,
        top_k=args.top_k,
        device=parser.get_parsed_content("device"),
        saliency=args.saliency,
    )
    for result in results:
        print(format_explanation(result, top_k=min(args.top_k, 5)))
    probabilities = [[r["probabilities"][n] for n in trained.class_names] for r in results]
    warn_if_learned_nothing(probabilities, trained.class_names, calibration)
    summary = write_json(
        out_dir / "explanations.json", [{k: v for k, v in r.items() if k != "saliency"} for r in results]
    )
    print(f"Explanations written to {out_dir} ({summary.name})", file=sys.stderr)
    return 0
