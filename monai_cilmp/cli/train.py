"""``monai-cilmp train``: train CILMP on a datalist with the CILMP bundle's recipe."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monai_cilmp.cli import DefaultsHelpFormatter, _chain
from monai_cilmp.cli._bundle import (
    add_backbone_arguments,
    add_config_arguments,
    add_runtime_arguments,
    apply_runtime,
    class_overrides,
    config_settings,
    quick_gelu_option,
    run_bundle,
)
from monai_cilmp.cli._launch import add_launch_arguments, relaunch, torchrun_process


def positive(kind: type):
    """An argparse type: a number of ``kind`` greater than 0."""

    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train CILMP on a datalist and a knowledge bank (the CILMP bundle's train.json)",
        description=(
            "Train CILMP with the paper's recipe (SGD, warm-up + cosine, Gaussian prompt aggregation) on a datalist "
            "written by `monai-cilmp prepare` and a knowledge bank written by `monai-cilmp knowledge extract`. "
            "The run folder (--out) records everything that rebuilds the network (run.json), a copy of the "
            "knowledge bank, checkpoints (last.pt every epoch, final.pt at the end) and TensorBoard logs."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--datalist", required=True, help="datalist JSON written by `monai-cilmp prepare`")
    parser.add_argument("--knowledge", required=True, help="knowledge bank from `monai-cilmp knowledge extract`")
    parser.add_argument("--out", required=True, help="run folder (checkpoints, TensorBoard logs, metrics)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--dataset", help="registered dataset: its class names, preset and label type")
    group.add_argument("--classes", nargs="+", metavar="NAME", help="class names in label order")
    parser.add_argument("--preset", help="modality preset (default: the datalist's)")
    add_backbone_arguments(parser)
    parser.add_argument("--epochs", type=positive(int), default=100, help="training epochs")
    parser.add_argument(
        "--batch-size",
        type=positive(int),
        default=64,
        help="images per training step: the global batch, split over the processes of a distributed run",
    )
    parser.add_argument("--lr", type=positive(float), default=0.0025, help="learning rate of SGD")
    parser.add_argument("--seed", type=int, default=1, help="seed of shuffling, augmentation and initialisation")
    add_runtime_arguments(parser)
    add_config_arguments(parser)
    runs = parser.add_mutually_exclusive_group()
    runs.add_argument("--resume", action="store_true", help="continue the run in --out (same settings) from last.pt")
    runs.add_argument("--overwrite", action="store_true", help="replace a run of other settings in --out")
    add_launch_arguments(parser)
    parser.set_defaults(func=run)


def check_inputs(datalist: str, knowledge: str, class_names: list[str] | None) -> tuple[list[str], str]:
    """Fail early, in one sentence, on a missing or mismatched datalist or knowledge bank; return the classes and
    the datalist's modality preset (dermoscopy when it names none, as train.json)."""
    # lazy imports here and below: `--help` and argument errors load neither torch nor MONAI
    from monai_cilmp.data import load_datalist
    from monai_cilmp.knowledge import KnowledgeBank

    data = load_datalist(datalist, class_names)
    names = list(data["class_names"])
    if not data.get("training"):
        raise ValueError(f"Datalist '{datalist}' has no training images.")
    KnowledgeBank.load(knowledge).check_classes(names)
    return names, str(data.get("preset") or "dermoscopy")


def warn_random_weights(pretrained: str, backbone: str = "") -> None:
    """Say loudly, on standard error, that a backbone without pretrained weights learns nothing meaningful."""
    if str(backbone).startswith("hf-hub:") or Path(str(backbone)).is_dir():
        return  # a hub id or folder carries its own weights
    if str(pretrained).strip().lower() in ("", "none", "random"):
        print(
            "WARNING: --pretrained none trains on a backbone of RANDOM weights: results mean nothing beyond testing "
            "the pipeline. Use pretrained weights (e.g. --pretrained openai) or the demo's tiny CLIP (--backbone "
            "CILMP-Tiny --pretrained synthetic, made by `monai-cilmp demo`).",
            file=sys.stderr,
        )


def run(args: argparse.Namespace) -> int:
    launched = relaunch(args, getattr(args, "argv", None) or sys.argv[1:], args.batch_size)
    if launched is not None:  # the processes of torch.distributed.run did the work
        return launched
    process = torchrun_process()
    configs = ["train.json"]
    out = Path(args.out).resolve()
    if process is not None:  # one of the processes of torchrun: DDP, each its share of the global batch
        from monai_cilmp.engines import per_process_batch

        per_process_batch(args.batch_size, process.world_size)
        configs.append("multi_gpu_train.json")
        if process.restart and (out / "checkpoints" / "last.pt").is_file():
            args.resume, args.overwrite = True, False  # restarted by torchrun: continue from the last complete epoch
    say = print if process is None or process.main else (lambda *a, **k: None)
    overrides = class_overrides(args)
    names, preset = check_inputs(args.datalist, args.knowledge, overrides.get("class_names"))
    from monai_cilmp.transforms import get_preset

    preset = str(get_preset(overrides.get("preset") or preset).name)  # its overlay lists the modality's transforms
    pretrained = args.pretrained
    if Path(pretrained).expanduser().is_file():  # a weights file: recorded absolute, never relative to a cwd
        pretrained = str(Path(pretrained).expanduser().resolve())
    overrides.update(
        {
            "datalist_file": str(Path(args.datalist).resolve()),
            "knowledge_file": str(Path(args.knowledge).resolve()),
            "output_dir": str(out),
            "backbone": args.backbone,
            "pretrained": pretrained,
            "offline": args.offline,
            "recipe#max_epochs": args.epochs,
            "recipe#batch_size": args.batch_size,
            "recipe#lr": args.lr,
            "recipe#seed": args.seed,
            "resume": args.resume,
            "overwrite": args.overwrite,
            **apply_runtime(args),
        }
    )
    if process is not None and overrides["device"].startswith("cuda"):  # one GPU per process
        overrides["device"] = f"cuda:{process.local_rank}"
    quick_gelu = quick_gelu_option(args)
    if quick_gelu is not None:  # network_hparams records it with the network's settings: evaluation rebuilds the same
        overrides["network_def#quick_gelu"] = quick_gelu
    if args.resume and not (out / "checkpoints" / "last.pt").is_file():
        raise FileNotFoundError(f"Nothing to resume in '{out}': it has no checkpoints/last.pt.")
    if process is None or process.main:
        warn_random_weights(pretrained, args.backbone)
    doing = "Resuming" if args.resume else "Training"
    say(
        f"{doing} CILMP ({args.backbone}, {pretrained}) for {args.epochs} epochs on {len(names)} classes: "
        f"{', '.join(names)}"
    )
    settings = config_settings(args)
    try:
        run_bundle([configs[0], f"presets/{preset}.json", *configs[1:]], {**overrides, **settings}, existing=settings)
    except Exception as e:
        from monai_cilmp.engines.runs import RunFinished

        finished = next((cause for cause in _chain(e) if isinstance(cause, RunFinished)), None)
        if finished is None:
            raise
        print(finished)  # a finished run resumed as it is: said, nothing written, success
        return 0
    say(f"TensorBoard: tensorboard --logdir {out / 'tensorboard'}")
    say(f"Evaluate with: monai-cilmp evaluate --run {out}")
    return 0
