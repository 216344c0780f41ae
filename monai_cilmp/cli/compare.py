"""``monai-cilmp compare``: CILMP and its baselines over shots and seeds, with a results table and a plot."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from monai_cilmp.cli._bundle import add_backbone_arguments, add_runtime_arguments, apply_runtime, quick_gelu_option


def _benchmark_names() -> list[str]:
    """The benchmarks of ``monai_cilmp/compare/benchmarks.json``, read without importing the comparison engine."""
    import json
    from pathlib import Path

    return list(json.loads((Path(__file__).parents[1] / "compare" / "benchmarks.json").read_text()))


class ListMethods(argparse.Action):
    """``--list-methods``: print the registered methods with their one-line summaries, then exit."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        # lazy imports here and below: `--help` and argument errors load neither torch nor MONAI
        from monai_cilmp.networks.nets import get_method, list_methods

        for name in list_methods():
            print(f"{name:24s} {get_method(name).summary}")
        parser.exit()


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare methods (zero-shot, linear probe, CoOp, ..., CILMP) over shots and seeds; resumable",
        description=(
            "Train and evaluate every method x shots x seed on the same datalist with the same engine and test "
            "split, then write results.md / results.csv (mean ± std of accuracy, macro-F1 and AUC over seeds), a "
            "plot of accuracy against shots, and each method's trainable parameters and training time. A re-run "
            "into the same --out skips the cells already done. `--list-methods` lists the methods."
        ),
    )
    parser.add_argument("--datalist", required=True, help="datalist JSON written by `monai-cilmp prepare`")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--dataset", help="registered dataset: its class names, preset and curated descriptions")
    group.add_argument("--classes", nargs="+", metavar="NAME", help="class names in label order")
    parser.add_argument("--methods", nargs="+", required=True, metavar="METHOD", help="methods to compare")
    parser.add_argument("--list-methods", action=ListMethods, help="list the registered methods and exit")
    parser.add_argument(
        "--shots", nargs="+", default=["1", "2", "4", "8", "16"], metavar="K", help="images per class; 'all': all"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], metavar="S")
    parser.add_argument("--out", required=True, help="comparison folder (re-running resumes; other backbones add)")
    parser.add_argument(
        "--protocol",
        choices=["few-shot", "base-to-novel"],
        default="few-shot",
        help="base-to-novel: train on the first ceil(C/2) classes, report base, novel and harmonic-mean accuracy",
    )
    parser.add_argument("--sampler", choices=["monai-cilmp", "dassl"], default="monai-cilmp", help="few-shot draw")
    parser.add_argument(
        "--benchmark",
        default=None,
        metavar="NAME",
        help=f"one of {', '.join(_benchmark_names())}: apply that paper's released settings per method (tokens, "
        "depths, loss weights, optimiser, schedule, epochs, batch size, class names); --epochs/--batch-size/--lr/"
        "--warmup-epochs/--gpa-std given win",
    )
    parser.add_argument("--knowledge", help="knowledge bank for CILMP (monai-cilmp knowledge extract)")
    parser.add_argument("--descriptions", help="class descriptions / attribute prompts for the zero-shot methods")
    parser.add_argument("--preset", help="modality preset (default: the dataset's or the datalist's)")
    add_backbone_arguments(parser)
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the recipe's, 100)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per step (default 64)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate of the prompt learners (default 0.0025)")
    parser.add_argument(
        "--lr-probe",
        type=float,
        default=None,
        help="learning rate of the methods that train on cached features (linear probes, LP++, adapters)",
    )
    parser.add_argument("--warmup-epochs", type=int, default=None, help="constant warm-up epochs (default 1)")
    parser.add_argument(
        "--gpa-std", type=float, default=None, help="GPA standard deviation in epochs (default: 30 %% of the epochs)"
    )
    add_runtime_arguments(parser)
    cluster = parser.add_argument_group(
        'the cells on a cluster (submitit: pip install "monai-cilmp[cluster]"; see docs/scaling.md)'
    )
    cluster.add_argument(
        "--executor",
        choices=["serial", "local", "slurm"],
        default="serial",
        help="serial: one cell after the other here; local: one process per cell on this machine; slurm: a SLURM "
        "job array, one task per cell (the report is written here once every cell is done)",
    )
    cluster.add_argument("--submitit-folder", help="the jobs' logs and results (default: <out>/submitit/%%j)")
    cluster.add_argument("--slurm-partition", help="SLURM partition of the job array")
    cluster.add_argument("--cell-timeout-min", type=int, default=240, help="time limit of one cell in minutes")
    cluster.add_argument(
        "--gpus-per-cell",
        type=int,
        default=0,
        help="GPUs of one cell; more than one trains it with torch.distributed, one task per GPU (--batch-size stays "
        "the global batch)",
    )
    cluster.add_argument("--cpus-per-cell", type=int, default=None, help="CPU cores of one cell (of each task)")
    cluster.add_argument("--array-parallelism", type=int, default=None, help="cells running at once on SLURM")
    parser.set_defaults(func=run)


def cluster_executor(args: argparse.Namespace):
    """The submitit executor of ``--executor`` (``None`` for serial)."""
    if args.executor == "serial":
        return None
    from pathlib import Path

    from monai_cilmp.compare import cell_executor

    gpus = max(0, int(args.gpus_per_cell))
    parameters = {"timeout_min": int(args.cell_timeout_min), "tasks_per_node": max(1, gpus)}
    if gpus:
        parameters["gpus_per_node"] = gpus
    if args.cpus_per_cell:
        parameters["cpus_per_task"] = int(args.cpus_per_cell)
    if args.executor == "slurm":
        if args.slurm_partition:
            parameters["slurm_partition"] = args.slurm_partition
        if args.array_parallelism:
            parameters["slurm_array_parallelism"] = int(args.array_parallelism)
    folder = args.submitit_folder or str(Path(args.out).expanduser().resolve() / "submitit" / "%j")
    return cell_executor(args.executor, folder, **parameters)


def run(args: argparse.Namespace) -> int:
    from monai_cilmp.cli.train import warn_random_weights  # lazy too: cli.train loads subprocess (via _launch)
    from monai_cilmp.compare import base_recipe, run_comparison

    runtime = apply_runtime(args)
    warn_random_weights(args.pretrained, args.backbone)
    from monai_cilmp.engines import TrainingRecipe
    from monai_cilmp.networks.nets import get_method

    epochs = args.epochs if args.epochs is not None else TrainingRecipe().max_epochs
    gpa_std = args.gpa_std if args.gpa_std is not None else max(1.0, 0.3 * epochs)
    recipe = base_recipe(
        max_epochs=epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_epochs=args.warmup_epochs,
        gpa_std=gpa_std,
    )
    given = {
        "max_epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "warmup_epochs": args.warmup_epochs,
        "gpa_std": args.gpa_std,
    }
    method_recipes = {}
    if args.lr_probe is not None:
        method_recipes = {s.name: {"lr": args.lr_probe} for s in map(get_method, args.methods) if s.cached_features}
    from monai_cilmp.compare.cells import CELL_FILE
    from monai_cilmp.compare.run import SETTINGS_FILE

    out = Path(args.out).expanduser()
    existed = out.exists()
    settings_existed = (out / SETTINGS_FILE).exists()
    executor = cluster_executor(args)
    try:
        run_comparison(
            args.datalist,
            args.methods,
            args.shots,
            args.seeds,
            args.out,
            class_names=args.classes,
            dataset=args.dataset,
            knowledge=args.knowledge,
            descriptions=args.descriptions,
            backbone=args.backbone,
            pretrained=args.pretrained,
            offline=args.offline,
            quick_gelu=quick_gelu_option(args),
            recipe=recipe,
            method_recipes=method_recipes,
            preset=args.preset,
            device=runtime["device"],
            num_workers=runtime["num_workers"],
            protocol=args.protocol,
            sampler=args.sampler,
            executor=executor,
            benchmark=args.benchmark,
            recipe_given=[field for field, value in given.items() if value is not None],
            log=lambda line: print(line, flush=True),  # which cell runs and how far along, also in a log file
        )
    except BaseException:
        # a comparison that fails before its first cell (e.g. backbone weights not available offline) leaves nothing
        if not settings_existed and not any((out / "cells").rglob(CELL_FILE)):
            (out / SETTINGS_FILE).unlink(missing_ok=True)
            if not existed:
                shutil.rmtree(out, ignore_errors=True)
        raise
    return 0
