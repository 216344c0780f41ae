"""Several processes for one command, through torch's own launcher (``torch.distributed.run``, i.e. ``torchrun``).

``monai-cilmp train|evaluate|predict --nproc-per-node N [--nnodes M --rdzv-endpoint HOST:PORT]`` re-launches the
same command line through ``python -m torch.distributed.run ... -m monai_cilmp`` (:func:`relaunch`); each process
then finds itself under torchrun (:func:`torchrun_process`: ``torchrun -m monai_cilmp train ...`` started by hand
is the same) and trains its share of every global batch, or evaluates / predicts its share of the images
(docs/scaling.md). The launcher options are this module's only concern: what a process does under torchrun is up
to the command.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["TorchrunProcess", "add_launch_arguments", "relaunch", "torchrun_process"]

#: the launcher's options (value-taking), removed from the command line the processes get
LAUNCH_OPTIONS = ("--nproc-per-node", "--nnodes", "--rdzv-endpoint", "--rdzv-id", "--max-restarts")


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """``--nproc-per-node``, ``--nnodes``, ``--rdzv-endpoint``, ``--rdzv-id``, ``--max-restarts``."""
    group = parser.add_argument_group("several processes, several nodes (torchrun; see docs/scaling.md)")
    group.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        help="processes on this node, one per GPU (CPU processes share the cores); >1 re-launches through "
        "torch.distributed.run; --batch-size stays the global batch",
    )
    group.add_argument("--nnodes", type=int, default=1, help="nodes of the run (each runs the same command)")
    group.add_argument("--rdzv-endpoint", help="HOST:PORT of the c10d rendezvous, on the first node (--nnodes > 1)")
    group.add_argument("--rdzv-id", default="monai-cilmp", help="rendezvous id, the same on every node")
    group.add_argument(
        "--max-restarts", type=int, default=0, help="restarts of all processes when one fails; they resume from last.pt"
    )


@dataclass(frozen=True)
class TorchrunProcess:
    """What torchrun tells a process it started."""

    rank: int
    local_rank: int
    world_size: int
    restart: int

    @property
    def main(self) -> bool:
        """Whether this process prints and writes (rank 0)."""
        return self.rank == 0


def torchrun_process() -> TorchrunProcess | None:
    """This process's place in a torchrun launch (``None`` when torchrun did not start it)."""
    if "LOCAL_RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return TorchrunProcess(
        rank=int(os.environ.get("RANK", "0")),
        local_rank=int(os.environ["LOCAL_RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        restart=int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")),
    )


def _without_launch_options(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
            continue
        name = item.split("=", 1)[0].replace("_", "-")
        if name in LAUNCH_OPTIONS:
            skip = "=" not in item
            continue
        out.append(item)
    return out


def relaunch(args: argparse.Namespace, argv: Sequence[str], global_batch: int | None = None) -> int | None:
    """Run this command line again as ``args.nproc_per_node`` x ``args.nnodes`` processes of ``torch.distributed.run``
    and return its exit code; ``None`` when nothing is to be launched (one process, or already under torchrun).

    Each process gets ``OMP_NUM_THREADS`` = this node's cores / processes unless it is set.

    Args:
        args: the parsed command line (its launcher options).
        argv: the command line as given (``train ...``), launcher options included (they are removed).
        global_batch: the batch to check against the number of processes before anything starts.

    Raises:
        ValueError: a launcher option is out of range, several nodes without a rendezvous endpoint, or a global batch
            that does not divide over the processes.
    """
    nproc, nnodes = int(getattr(args, "nproc_per_node", 1) or 1), int(getattr(args, "nnodes", 1) or 1)
    if nproc < 1 or nnodes < 1:
        raise ValueError(f"--nproc-per-node and --nnodes must be at least 1, not {nproc} and {nnodes}.")
    if torchrun_process() is not None or nproc * nnodes == 1:
        return None
    if nnodes > 1 and not args.rdzv_endpoint:
        raise ValueError(
            f"--nnodes {nnodes} needs --rdzv-endpoint HOST:PORT (the first node's host and a free port), the same "
            "on every node."
        )
    if global_batch is not None:
        # lazy imports here and below: `--help` and argument errors load neither torch nor MONAI
        from monai_cilmp.engines.distributed import per_process_batch

        per_process_batch(global_batch, nproc * nnodes)
    from monai_cilmp.utils.runtime import available_cores

    command = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--nnodes={nnodes}",
        f"--max-restarts={int(args.max_restarts or 0)}",
    ]  # fmt: skip
    if nnodes == 1:
        command.append("--standalone")
    else:
        command += ["--rdzv-backend=c10d", f"--rdzv-endpoint={args.rdzv_endpoint}", f"--rdzv-id={args.rdzv_id}"]
    # "--": the launcher's own parser must not take the command's options for abbreviations of its own ("--run" of
    # evaluate/predict would be an ambiguous "--run-path")
    command += ["-m", "--", "monai_cilmp", *_without_launch_options(argv)]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, available_cores() // nproc)))
    process = subprocess.Popen(command, env=env)
    try:
        return process.wait()
    except BaseException:  # Ctrl-C or SIGTERM here: the launcher stops its workers, none is left behind
        process.terminate()
        process.wait()
        raise
