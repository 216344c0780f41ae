"""How many threads and data-loading processes a run uses, chosen from the machine and the device.

PyTorch's defaults (one compute thread per core) plus a fixed number of DataLoader workers oversubscribe a small
CPU machine: each worker decodes and augments images while the training step wants every core, and OpenMP threads
that wait for a core spin. Measured on a loaded 2-core machine (``scripts/bench_threads_workers.py``, a ViT-B/16-shape
CILMP step on 8 images), torch's 2 spinning threads made a step 1.5-4x slower than 1 thread and took up to 2.4x its
CPU time; with one thread, the step's CPU time hardly depends on the workers, and one worker overlapping the
loading with the step was the fastest. The rules here:

- CPU training: the network's matrix products dominate, so every core but the loaders' goes to compute threads;
  images are loaded by one worker process up to 15 cores, ``cores // 8`` (at most 4) on bigger machines, and in the
  main process on a single core. Where OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE`` set before torch
  is imported), a thread that finds its core busy costs nothing, and every core computes: measured under load,
  2 passive threads took 10.5 s per step with 6.8 s of CPU, as fast as 1 thread, where 2 spinning threads took
  17.6 s and 10.8 s of CPU; with the machine less loaded, 2 passive threads were 1.9x as fast as one.
- GPU training: the GPU computes, so the CPU's job is to keep it fed: up to 8 workers (one core left for the main
  process), and a few threads for what runs on the CPU in the main process.

- Several processes on one node (``torchrun``, which sets ``LOCAL_WORLD_SIZE``): the cores are shared, so each
  process plans for its share, ``cores // LOCAL_WORLD_SIZE`` (:func:`process_cores`).
- ``OMP_NUM_THREADS`` set in the environment is the user's (or the launcher's) choice of threads and wins over the
  rules above (torchrun sets it to 1 unless it is already set; ``monai-cilmp --nproc-per-node`` sets each process's
  share of the cores).

:func:`configure_runtime` applies a choice (given values win over the defaults) and returns it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "RuntimeSettings",
    "available_cores",
    "configure_runtime",
    "default_threads",
    "default_workers",
    "local_processes",
    "passive_waiting",
    "process_cores",
]


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. a container's CPU set), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def local_processes() -> int:
    """The processes of this run on this node: ``LOCAL_WORLD_SIZE`` as torchrun sets it, else 1."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def process_cores() -> int:
    """This process's share of the cores it may run on: :func:`available_cores` // :func:`local_processes`, at least
    1."""
    return max(1, available_cores() // local_processes())


def _omp_threads() -> int | None:
    try:
        threads = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return threads if threads > 0 else None


def _device_type(device: Any) -> str:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type


def default_workers(device: Any = None, cores: int | None = None) -> int:
    """DataLoader worker processes for training or evaluating on ``device`` (``None``: a GPU if there is one).

    Args:
        device: the device the network runs on.
        cores: CPU cores to plan for (default: :func:`process_cores`).
    """
    cores = process_cores() if cores is None else max(1, int(cores))
    if _device_type(device) == "cpu":
        return 0 if cores == 1 else min(4, max(1, cores // 8))
    return min(8, cores - 1)


def default_threads(device: Any = None, cores: int | None = None, workers: int | None = None) -> int:
    """Intra-op threads of torch in the main process for a run on ``device`` with ``workers`` loader processes.

    Args:
        device: the device the network runs on (``None``: a GPU if there is one).
        cores: CPU cores to plan for (default: :func:`process_cores`).
        workers: the run's DataLoader workers (default: :func:`default_workers`).

    ``OMP_NUM_THREADS``, when set to a positive number, is returned as it is.
    """
    if _omp_threads() is not None:
        return _omp_threads()
    cores = process_cores() if cores is None else max(1, int(cores))
    workers = default_workers(device, cores) if workers is None else max(0, int(workers))
    if _device_type(device) != "cpu":
        return max(1, min(4, cores - workers))
    if passive_waiting():  # idle threads sleep: a busy core costs a waiting thread nothing, so use them all
        return cores
    return max(1, cores - workers)


def passive_waiting() -> bool:
    """Whether torch's OpenMP threads sleep rather than spin while they wait (``OMP_WAIT_POLICY=PASSIVE``).

    OpenMP reads the policy once, when torch is first imported: a program that sets it must do so before that (the
    ``monai-cilmp`` command line can; a ``python -m monai.bundle run`` has imported torch before any config runs).
    """
    return os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"


@dataclass(frozen=True)
class RuntimeSettings:
    """The settings :func:`configure_runtime` applied."""

    device: torch.device
    threads: int
    workers: int


def configure_runtime(device: Any = None, threads: int | None = None, workers: int | None = None) -> RuntimeSettings:
    """Set torch's thread count for a run on ``device`` and return it with the number of loader workers to use.

    Args:
        device: where the network runs (``None``/``"auto"``: the first GPU if there is one, else the CPU).
        threads: intra-op threads (``None`` or ``0``: :func:`default_threads`).
        workers: DataLoader worker processes (``None`` or negative: :func:`default_workers`).

    Returns:
        the device, threads and workers in effect.

    Raises:
        ValueError: an unknown device, or a GPU asked for on a machine without one.
    """
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"Unknown device '{device}': use cpu, cuda or cuda:N.") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device '{device}' was asked for but this machine has no usable GPU: use --device cpu.")
    workers = default_workers(device) if workers is None or int(workers) < 0 else int(workers)
    threads = default_threads(device, workers=workers) if not threads else int(threads)
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}.")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return RuntimeSettings(device=device, threads=threads, workers=workers)
