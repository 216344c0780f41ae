"""``monai-cilmp evaluate``: metrics, confusion matrix and predictions of a trained run on a split."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from monai_cilmp.cli import DefaultsHelpFormatter, UserError, _chain
from monai_cilmp.cli._bundle import add_runtime_arguments, apply_runtime, run_bundle
from monai_cilmp.cli._launch import add_launch_arguments, relaunch, torchrun_process
from monai_cilmp.utils.files import staged_folder

CHECKPOINTS = ("final", "best", "last")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a trained run on a split (accuracy, balanced accuracy, macro-F1, AUC, kappa, confusion)",
        description=(
            "Evaluate a run folder written by `monai-cilmp train` (the CILMP bundle's evaluate.json). The network is "
            "rebuilt from what the run recorded (backbone weights checked against their hash, random weights from "
            "their seed, the run's own copy of the knowledge bank), so the numbers are the same on any machine. With "
            "--nproc-per-node N the split is shared among N processes (torchrun) and the first writes the report."
        ),
        formatter_class=DefaultsHelpFormatter,
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
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="write the report (metrics, predictions, figures, calibration.json) into DIR instead of the run folder, "
        "which then stays as it is (e.g. a read-only shared model store); default: the run folder",
    )
    add_runtime_arguments(parser)
    add_launch_arguments(parser)
    parser.set_defaults(func=run)


def run_configs(method: str | None, preset: str | None = None) -> list[str]:
    """The bundle configs that rebuild a run's network and evaluation transforms: ``train.json``, the overlay of the
    modality preset it recorded (``configs/presets/<preset>.json``), the overlay of the method it recorded
    (``configs/methods/<method>.json``; none for runs from before methods were recorded: CILMP), ``evaluate.json``.
    """
    # lazy imports here and below: `--help` and argument errors load neither torch nor MONAI
    from monai_cilmp.transforms import get_preset

    presets = [f"presets/{get_preset(preset).name}.json"] if preset else []
    return ["train.json", *presets, *([f"methods/{method}.json"] if method else []), "evaluate.json"]


def run(args: argparse.Namespace) -> int:
    import sys

    from monai_cilmp.engines.runs import load_run

    if not 0 < args.alpha < 1:
        raise ValueError(f"--alpha must be between 0 and 1 (exclusive), not {args.alpha}.")
    launched = relaunch(args, getattr(args, "argv", None) or sys.argv[1:])
    if launched is not None:  # the processes of torch.distributed.run did the work
        return launched
    process = torchrun_process()  # one of several: each evaluates its share, the first writes the report
    main = process is None or process.main

    trained = load_run(args.run, args.checkpoint)
    overrides = trained.bundle_overrides()
    if args.datalist:
        overrides["datalist_file"] = str(Path(args.datalist).resolve())
    if not overrides.get("datalist_file"):
        raise ValueError(f"Run '{trained.directory}' recorded no datalist: pass --datalist.")
    overrides["split"] = args.split
    overrides.update({"conformal#alpha": args.alpha, "conformal#method": args.conformal})
    overrides["conformal#class_conditional"] = bool(args.class_conditional)
    overrides.update(apply_runtime(args))
    report_dir = Path(args.out).expanduser().resolve() if args.out else trained.directory
    configs = run_configs(trained.method, overrides.get("preset"))
    if process is not None:  # the split sharded over the processes, rank 0 writes
        configs.append("multi_gpu_evaluate.json")
        if overrides["device"].startswith("cuda"):  # one GPU per process
            overrides["device"] = f"cuda:{process.local_rank}"
    if not main:  # it writes nothing: no staging folder of its own
        run_bundle(configs, {**overrides, "report_dir": str(report_dir)})
        return 0
    print(f"Evaluating {trained.checkpoint} on the {args.split} split of {overrides['datalist_file']}")
    write_report(configs, overrides, trained.directory, report_dir)
    prefix = report_dir / args.split
    print(f"Metrics: {prefix}_metrics.json; confusion matrix: {prefix}_confusion.png;")
    print(f"predictions: {prefix}_predictions.csv; reliability diagram: {prefix}_reliability.png;")
    print(f"coverage/size against alpha: {prefix}_conformal.png; calibration: {report_dir / 'calibration.json'}")
    print(f"MONAI's metrics file (MetricsSaver): {report_dir / 'metrics' / args.split / 'metrics.csv'}")
    return 0


def write_report(configs: list[str], overrides: dict, run_dir: Path, report_dir: Path) -> None:
    """Run the evaluation bundle so that its report lands in ``report_dir`` all or nothing: it is written into a
    staging folder there (:func:`~monai_cilmp.utils.files.staged_folder`) and moved into place only once complete. A
    folder that cannot be written is one sentence before any work; a disk that fills up one sentence naming the file,
    and nothing of the new report is kept (a previous report stays whole)."""
    import shutil

    from monai_cilmp.engines.bundle_metadata import RUN_METADATA

    staging: Path | None = None
    failure: str | None = None
    loggers = [logging.getLogger(name) for name in _ENGINE_LOGGERS]
    for logger in loggers:
        logger.addFilter(_no_failure_logs)
    try:
        with staged_folder(report_dir) as staging:
            if report_dir == run_dir and (run_dir / RUN_METADATA).is_file():  # its eval_metrics belong to the report
                (staging / RUN_METADATA).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run_dir / RUN_METADATA, staging / RUN_METADATA)
            run_bundle(configs, {**overrides, "report_dir": str(staging)})
            for report in staging.glob("*.json"):  # the files the report lists are where they are moved to
                report.write_text(report.read_text(encoding="utf-8").replace(str(staging), str(report_dir)), "utf-8")
    except Exception as e:
        failure = _write_failure(e, staging, run_dir, report_dir)
        if failure is None:
            raise
    finally:
        for logger in loggers:
            logger.removeFilter(_no_failure_logs)
    if failure is not None:  # raised outside the handler: the sentence is the whole story
        raise UserError(failure)


#: the loggers through which MONAI's StatsHandler and Ignite's evaluator log a failure (with its traceback) before
#: raising it: the command says it in one sentence instead (``--debug`` shows the traceback)
_ENGINE_LOGGERS = (
    "monai.handlers.StatsHandler",
    "ignite.engine.engine.SupervisedEvaluator",
    "ignite.engine.engine.ShardedEvaluator",  # evaluate.json's evaluator (it shards the test set over processes)
)


def _no_failure_logs(record: logging.LogRecord) -> bool:
    return not (record.exc_info or str(record.msg).startswith(("Exception:", "Engine run is terminating")))


def _write_failure(error: BaseException, staging: Path | None, run_dir: Path, report_dir: Path) -> str | None:
    """The sentence for a report that could not be written (``None``: ``error`` is another failure)."""
    import errno
    import os

    codes = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM)
    cause = next((c for c in _chain(error) if isinstance(c, OSError) and c.errno in codes), None)
    if cause is None:
        return None
    elsewhere = "pass --out DIR to write it elsewhere" if report_dir == run_dir else "choose another --out"
    reason = os.strerror(cause.errno).lower()
    if staging is None:  # the folder itself cannot be written: nothing was evaluated
        return f"Cannot write the evaluation report into '{report_dir}' ({reason}): {elsewhere}."
    named = [str(cause.filename or "")] + str(cause).replace("'", " ").split()
    written = next((Path(part) for part in named if part.startswith(str(staging))), None)
    file = report_dir / written.relative_to(staging) if written is not None else report_dir
    return (
        f"The evaluation report could not be written ({reason} while writing '{file}'): nothing of it was kept in "
        f"'{report_dir}'; free some space or {elsewhere}."
    )
