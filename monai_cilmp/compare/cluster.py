"""The grid on a cluster: the cells of a comparison as the tasks of a submitit job array (SLURM, or local processes).

A benchmark grid is thousands of independent cells (BiomedCoOp's 11 data sets x 12 methods x 5 shot counts x 3
seeds is about 2,000 runs). :func:`dispatch_cells` submits the cells a comparison still has to run as one job array
through `submitit <https://github.com/facebookincubator/submitit>`_ (``sbatch --array`` on SLURM; its local executor
runs them as processes of this machine, for tests and single machines). Each task is the function the caller passes
(:func:`~monai_cilmp.compare.run.run_cell_task`, so that this module does not import the comparison): the same
:func:`~monai_cilmp.compare.run_comparison` restricted to one cell, which rebuilds the comparison's context in its
own process and writes that cell's record last and atomically, so a task is idempotent (a finished cell is skipped)
and an interrupted or failed array resumes by running the comparison again. The caller then reads every record from
the comparison folder and writes the same report a serial run writes.

A cell with ``tasks_per_node > 1`` runs on several GPUs: submitit starts one task per GPU and
:func:`distributed_environment` joins them into a ``torch.distributed`` group
(``submitit.helpers.TorchDistributedEnvironment``), which the cell's training then uses (see
:func:`~monai_cilmp.compare.cells.run_cell`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.utils import StrEnum, look_up_option, optional_import

from .cells import Cell

submitit, has_submitit = optional_import("submitit")

__all__ = ["ExecutorKind", "cell_executor", "dispatch_cells", "distributed_environment"]


class ExecutorKind(StrEnum):
    """Where the cells of a comparison run."""

    SERIAL = "serial"  # one after the other in this process (no submitit)
    LOCAL = "local"  # submitit's local executor: one process of this machine per cell
    SLURM = "slurm"  # a SLURM job array, one task per cell


def cell_executor(kind: str, folder: str | os.PathLike, **parameters: Any) -> Any:
    """A submitit executor for the cells of a comparison.

    Args:
        kind: ``"local"`` or ``"slurm"`` (:class:`ExecutorKind`).
        folder: where submitit keeps each job's logs, pickled call and result (``%j`` is the job id).
        parameters: submitit's ``update_parameters`` (e.g. ``timeout_min``, ``slurm_partition``, ``gpus_per_node``,
            ``tasks_per_node``, ``cpus_per_task``, ``slurm_array_parallelism``).

    Raises:
        ImportError: submitit is not installed (``pip install "monai-cilmp[cluster]"``).
    """
    kind = look_up_option(kind, ExecutorKind)
    if not has_submitit:
        raise ImportError(
            f"Running the comparison's cells on '{kind}' needs submitit: pip install \"monai-cilmp[cluster]\"."
        )
    if kind == ExecutorKind.LOCAL:
        executor = submitit.LocalExecutor(folder=str(folder))
    elif kind == ExecutorKind.SLURM:
        executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    else:
        raise ValueError("The serial executor runs the cells in this process: it has no submitit executor.")
    if parameters:
        executor.update_parameters(**parameters)
    return executor


def distributed_environment() -> Any | None:
    """Join the tasks of a multi-task submitit job into a process group (``None`` for a job of one task)."""
    if not has_submitit:
        return None
    try:
        environment = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job
        return None
    if environment.num_tasks < 2:
        return None
    import torch
    import torch.distributed as dist

    exported = submitit.helpers.TorchDistributedEnvironment().export()
    if torch.cuda.is_available():
        torch.cuda.set_device(exported.local_rank)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return exported


def _last_error(error: BaseException) -> str:
    """The last line of the task's own traceback in submitit's failure message (else the message's first line)."""
    lines = [line.strip() for line in str(error).splitlines()]
    separators = [i for i, line in enumerate(lines) if line and set(line) == {"-"}]
    if len(separators) >= 2:
        inside = [line for line in lines[separators[0] + 1 : separators[1]] if line]
        if inside:
            return inside[-1]
    return next((line for line in lines if line), type(error).__name__)


def dispatch_cells(
    executor: Any,
    task: Callable[[Mapping[str, Any], Cell], str],
    arguments: Mapping[str, Any],
    cells: Sequence[Cell],
    log: Callable[[str], None] = print,
) -> list[str]:
    """Submit ``cells`` as one job array and wait for it.

    Args:
        executor: a submitit executor (:func:`cell_executor`).
        task: what each task of the array runs, ``task(arguments, cell)`` (an importable function: submitit pickles
            it by name), i.e. :func:`~monai_cilmp.compare.run.run_cell_task`.
        arguments: :func:`~monai_cilmp.compare.run_comparison`'s arguments (``out`` included; picklable).
        cells: the cells to run.
        log: where progress lines go.

    Returns:
        one line per failed cell (empty when every cell finished); the finished cells' records are in ``out``.
    """
    if not cells:
        return []
    jobs = executor.map_array(task, [dict(arguments)] * len(cells), list(cells))
    folder = Path(str(getattr(executor, "folder", "")))
    log(f"Submitted {len(cells)} cells as job array {jobs[0].job_id.split('_')[0]} (logs in {folder}).")
    failures = []
    for cell, job in zip(cells, jobs):
        try:
            job.results()  # every task of the cell (one per GPU of a multi-GPU cell)
            log(f"{cell}: done (job {job.job_id})")
        except Exception as error:  # a failed task is reported; the others' records stand
            failures.append(f"{cell}: job {job.job_id} failed ({_last_error(error)}); its log: {job.paths.stderr}")
    return failures
