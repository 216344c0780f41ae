"""``monai-cilmp predict``: class probabilities of images with a trained run, one JSON line per image."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from monai_cilmp.cli import DefaultsHelpFormatter
from monai_cilmp.cli._bundle import add_runtime_arguments, apply_runtime, from_run_configs, parse_bundle
from monai_cilmp.cli._launch import add_launch_arguments, relaunch, torchrun_process
from monai_cilmp.cli.evaluate import CHECKPOINTS
from monai_cilmp.utils import atomic_write

_SKIP = {".json", ".csv", ".txt", ".md", ".safetensors", ".pt", ".log", ".lock"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict images (files or folders) with a trained run; one JSON line per image",
        description=(
            "Predict with a run folder written by `monai-cilmp train` (the CILMP bundle's inference.json). Files "
            "that cannot be read are reported one sentence each on standard error and the others are predicted; "
            "the exit status is then 1. With --nproc-per-node N the images are shared among N processes (torchrun) "
            "and the first writes the same lines as one process would."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--run", required=True, help="run folder written by `monai-cilmp train`")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders (recursive)")
    parser.add_argument("--out", help="write the JSON lines to this file instead of standard output")
    parser.add_argument("--checkpoint", default="final", choices=CHECKPOINTS, help="which checkpoint of the run")
    parser.add_argument(
        "--batch-size", type=int, default=16, help="images per forward pass (of each process: a memory setting)"
    )
    add_runtime_arguments(parser)
    add_launch_arguments(parser)
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


def warn_if_learned_nothing(probabilities: list, class_names: list[str], calibration: object | None) -> None:
    """Print to stderr what :func:`~monai_cilmp.metrics.learning_warnings` says of these predictions and the run's
    calibration (``predict`` and ``explain``)."""
    # lazy imports here and below: `--help` and argument errors load neither torch nor MONAI
    from monai_cilmp.metrics import learning_warnings

    fitted = calibration is not None
    warnings = learning_warnings(
        probabilities if len(probabilities) else None,
        None,
        class_names,
        "predicted",
        temperature=getattr(calibration, "temperature", None),
        n_calibration=getattr(calibration, "n", None) if fitted else None,
        fitted_on=getattr(calibration, "fitted_on", None),
    )
    for warning in warnings:
        print(f"WARNING: {warning}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from monai_cilmp.engines import load_calibration, load_run, predict_images

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, not {args.batch_size}.")
    launched = relaunch(args, getattr(args, "argv", None) or sys.argv[1:])
    if launched is not None:  # the processes of torch.distributed.run did the work
        return launched
    process = torchrun_process()  # one of several: each predicts its share, the first writes the whole
    main = process is None or process.main
    trained = load_run(args.run, args.checkpoint)
    images = collect_images(args.inputs)
    runtime = apply_runtime(args)
    if process is not None and runtime["device"].startswith("cuda"):  # one GPU per process
        runtime["device"] = f"cuda:{process.local_rank}"
    if main:
        print(f"Predicting {len(images)} images with {trained.checkpoint}", file=sys.stderr)
    parser = parse_bundle(
        from_run_configs(trained.metadata["preset"]),
        {"output_dir": str(trained.directory), "checkpoint_name": args.checkpoint, "device": runtime["device"]},
    )
    if process is not None:
        from monai_cilmp.engines.distributed import end_process_group, start_process_group

        start_process_group(runtime["device"])
    predictions = predict_images(
        parser.get_parsed_content("network"),
        images,
        parser.get_parsed_content("preprocessing"),
        parser.get_parsed_content("device"),
        batch_size=args.batch_size,
        num_workers=runtime["num_workers"],
        calibration=(calibration := load_calibration(trained.directory)),  # the temperature and sets of `evaluate`
    )
    if process is not None:  # every rank holds the whole result now
        end_process_group()
    if not main:
        return 1 if predictions.errors else 0
    names = trained.class_names
    sets = predictions.sets or {}
    lines = [
        json.dumps(
            {
                "image": image,
                "predicted": names[int(row.argmax())],
                "probabilities": {n: round(float(p), 6) for n, p in zip(names, row)},
                **({"prediction_set": [n for n, m in zip(names, sets[image]) if m]} if image in sets else {}),
            },
            ensure_ascii=False,
        )
        for image, row in predictions.items()
    ]
    text = "\n".join(lines) + "\n" if lines else ""
    if args.out:
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        print(f"Predictions of {len(lines)} images written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    warn_if_learned_nothing([row for _, row in predictions.items()], names, calibration)
    for message in predictions.errors.values():
        print(f"monai-cilmp predict: skipped: {message}", file=sys.stderr)
    if predictions.errors:
        print(
            f"monai-cilmp predict: error: {len(predictions.errors)} of {len(images)} images could not be predicted "
            "(listed above); the others were.",
            file=sys.stderr,
        )
        return 1
    return 0
