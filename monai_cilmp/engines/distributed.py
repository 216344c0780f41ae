"""What makes a run on several processes (``torchrun``, ``torch.distributed``) equal to the same run on one.

A distributed run shards its data across ranks (a ``DistributedSampler``) and averages gradients (DDP); the rest of
what a run computes or reports has to be made global or rank-aware explicitly:

- random streams: :func:`rank_seed` derives each rank's seed from the run's seed (and the epoch the trainer mixes in)
  and the rank, so augmentation and dropout differ across ranks while a run stays reproducible; rank 0, and a single
  process, keep the seed unchanged (a one-process run draws exactly what it always did);
- the logged training loss: :func:`reduce_logged_loss` replaces the batch loss in the trainer's output with its mean
  over ranks before any handler logs it (the epoch line, TensorBoard, the progress bar);
- fitted state (Tip-Adapter's cache, LP++'s centroids, a linear probe's cached features):
  :func:`gather_in_dataset_order` collects every rank's rows and puts them in the dataset's order, dropping the
  sampler's padding, so every rank fits on the whole training set;
- evaluation on any number of ranks: :class:`ShardSampler` splits a set without padding (a 3-image validation set on
  4 ranks leaves one rank empty; no image is counted twice) and :class:`ShardedEvaluator` runs an empty shard through
  its events with no iteration, so the ranks still meet in the metrics' all-reduce;
- the end of a run: :func:`end_process_group` leaves the group so that a finished run exits with status 0.

In one process without a process group nothing here changes what a run computes.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from monai.engines import SupervisedEvaluator

__all__ = [
    "ShardSampler",
    "ShardedEvaluator",
    "any_rank",
    "end_process_group",
    "gather_in_dataset_order",
    "per_process_batch",
    "rank_and_world_size",
    "rank_seed",
    "reduce_logged_loss",
    "sharded_indices",
    "start_process_group",
]


def rank_and_world_size() -> tuple[int, int]:
    """This process's rank and the number of processes of the default group (``(0, 1)`` without one)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def start_process_group(device: torch.device | str) -> None:
    """Join the default process group of a ``torchrun`` launch, if not joined yet (its rendezvous is in the
    environment torchrun set): NCCL for a GPU ``device`` (made the current one), gloo for the CPU. The counterpart of
    :func:`end_process_group`, for the commands that run their own code rather than a bundle's (``predict``); the
    bundle's ``multi_gpu_*.json`` overlays do the same in their ``initialize``."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def end_process_group() -> None:
    """Leave the default process group at the end of a run, so that the process exits cleanly (a no-op without one).

    Gloo runs each collective on a thread of its own, which releases the collective's tensors after the caller has
    already returned, and needs Python's GIL to do so. If the interpreter is shutting down by then, that thread is
    stopped in the middle of a C++ destructor and the whole process aborts (SIGABRT, "terminate called without an
    active exception"): ``torchrun`` then reports a finished run as failed. The same happens when the group itself
    is freed during shutdown, which is the case after a ``DistributedDataParallel`` network: the network and the
    engines that hold it form a reference cycle that keeps the group alive after ``destroy_process_group``.

    So every rank first meets the others in a barrier (waiting without the GIL, while Gloo's threads finish), then
    destroys the group, collects the cycles that still hold it while Python is fully alive, and tells Ignite (MONAI's
    metrics) that the group is gone.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    from ignite import distributed as idist

    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    gc.collect()
    idist.sync()


def per_process_batch(global_batch: int, world_size: int | None = None) -> int:
    """The batch of each process of a run whose batch (``--batch-size``, ``recipe#batch_size``) is ``global_batch``.

    The batch size means one thing whatever the number of processes: the images of one optimiser step. Each of the
    ``world_size`` processes takes its share, so a recipe trains the same on 1 GPU or 8 (same steps per epoch, same
    learning rate).

    Args:
        global_batch: the images of one step, over all processes.
        world_size: the number of processes (default: the default group's size).

    Raises:
        ValueError: ``global_batch`` does not divide evenly over the processes.
    """
    world_size = rank_and_world_size()[1] if world_size is None else int(world_size)
    global_batch = int(global_batch)
    if global_batch < 1 or global_batch % world_size:
        larger = (global_batch // world_size + 1) * world_size
        raise ValueError(
            f"The batch size {global_batch} is the global batch of one step and must divide evenly over the "
            f"{world_size} processes: choose a multiple of {world_size} such as {larger}."
        )
    return global_batch // world_size


def rank_seed(seed: int, rank: int | None = None) -> int:
    """The seed of ``rank``'s random streams in a run seeded with ``seed``: ``seed`` itself on rank 0, else a seed
    derived from ``(seed, rank)`` by NumPy's ``SeedSequence`` (independent streams, the same on every run).

    Args:
        seed: the run's seed (the trainer passes one that already mixes in the epoch).
        rank: the process's rank (default: this process's).
    """
    rank = rank_and_world_size()[0] if rank is None else int(rank)
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed) % 2**63, rank]).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


def reduce_logged_loss(engine: Any) -> None:
    """Replace the batch loss in ``engine.state.output`` with its mean over ranks (a no-op in one process).

    Attached by :class:`~monai_cilmp.engines.RunFolderTrainer` to MONAI's ``IterationEvents.MODEL_COMPLETED``, after
    the optimiser step and before any ``ITERATION_COMPLETED`` handler: the backward pass used the local loss (DDP
    averages the gradients), every handler that logs the loss sees the global one. Every rank runs it at every step.
    """
    from ignite import distributed as idist

    if idist.get_world_size() < 2:
        return
    output = engine.state.output
    items = output if isinstance(output, list) else [output]
    losses = [item for item in items if isinstance(item, dict) and item.get("loss") is not None]
    if not losses:
        return
    local = torch.as_tensor(losses[0]["loss"]).detach().float().reshape(())
    total = idist.all_reduce(local.clone())
    mean = total / idist.get_world_size()
    for item in losses:
        item["loss"] = mean


def sharded_indices(loader: Any) -> list[int] | None:
    """The dataset indices ``loader`` gives on this rank, in its order, when its sampler shards the data across ranks
    (a ``DistributedSampler`` or a :class:`ShardSampler`); ``None`` for a loader that is not sharded."""
    sampler = getattr(loader, "sampler", None)
    if sampler is None or not hasattr(sampler, "num_replicas") or not hasattr(sampler, "rank"):
        return None
    indices = [int(i) for i in iter(sampler)]
    batch_sampler = getattr(loader, "batch_sampler", None)
    if getattr(batch_sampler, "drop_last", False):
        size = int(batch_sampler.batch_size)
        indices = indices[: len(indices) // size * size]
    return indices


def gather_in_dataset_order(loader: Any, *rows: torch.Tensor | Sequence[Any]) -> tuple[Any, ...]:
    """Rows that every rank computed for its shard of ``loader`` (same order as the loader gave them), gathered from
    every rank and put in the dataset's order, each dataset item once (a ``DistributedSampler`` pads a shard by
    repeating items: the repeats are dropped).

    The result is the same on any number of ranks, one included (a ``DistributedSampler`` of one replica shuffles:
    its rows are put in the dataset's order too). For a loader that is not sharded (no ``DistributedSampler`` or
    :class:`ShardSampler`: every rank holds the whole set, in the loader's order) ``rows`` are returned unchanged.
    Every rank of the group must call it (it is a collective), an empty shard included.

    Args:
        loader: the loader the rows were computed from (its sampler says which dataset items they are).
        rows: tensors whose first dimension runs over the loader's items, or lists of one object per item (file
            names); a tensor comes back as a tensor on its device, a list as a list.

    Raises:
        ValueError: the rows do not have one entry per item of this rank's shard.
    """
    indices = sharded_indices(loader)
    if indices is None:
        return rows
    rank, world_size = rank_and_world_size()
    if any(len(r) != len(indices) for r in rows):
        raise ValueError(f"Rank {rank} has {len(indices)} items in its shard but rows of {[len(r) for r in rows]}.")
    local = [r.detach().cpu() if isinstance(r, torch.Tensor) else list(r) for r in rows]
    shards: list[Any] = [(indices, local)]
    if world_size > 1:
        shards = [None] * world_size
        torch.distributed.all_gather_object(shards, (indices, local))
    order = torch.tensor([i for shard, _ in shards for i in shard], dtype=torch.long)
    unique, first = _first_occurrences(order)
    picked = first[torch.argsort(unique)]
    result: list[Any] = []
    for position, original in enumerate(rows):
        if isinstance(original, torch.Tensor):
            gathered = torch.cat([shard_rows[position] for _, shard_rows in shards])
            result.append(gathered[picked].to(original.device))
        else:
            gathered_list = [item for _, shard_rows in shards for item in shard_rows[position]]
            result.append([gathered_list[i] for i in picked.tolist()])
    return tuple(result)


def any_rank(flag: bool | torch.Tensor) -> bool:
    """Whether ``flag`` is true on at least one rank (an all-reduce of one number; ``flag`` itself in one process).

    A decision that stops a run (a non-finite loss, an unreadable batch) must be taken by every rank together: a
    rank that raises alone leaves the others waiting in their next collective (DDP's gradient all-reduce) until the
    launcher's timeout. Every rank of the group must call it at the same point.

    Args:
        flag: this rank's answer, a ``bool`` or a one-element tensor (which may stay on its device: with NCCL the
            all-reduce runs there and the result is read back once).
    """
    _, world_size = rank_and_world_size()
    if world_size < 2:
        return bool(flag)
    device = torch.device("cpu")
    if torch.distributed.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    value = torch.as_tensor(flag).detach().reshape(1).to(device=device, dtype=torch.float32)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item() > 0)


def _first_occurrences(order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct values of ``order`` and the position of each one's first occurrence."""
    seen: dict[int, int] = {}
    for position, index in enumerate(order.tolist()):
        seen.setdefault(index, position)
    return torch.tensor(list(seen), dtype=torch.long), torch.tensor(list(seen.values()), dtype=torch.long)


class ShardSampler(torch.utils.data.Sampler):
    """Evaluation sharding without padding: rank ``r`` of ``n`` takes items ``r, r + n, r + 2n, ...`` in order.

    Unlike a ``DistributedSampler``, it repeats no item (metrics count every image once) and accepts a set smaller
    than the number of ranks (the ranks past its length get no item; :class:`ShardedEvaluator` runs them anyway).

    Args:
        dataset: the evaluated set (only its length is used).
        num_replicas: the number of ranks (default: the default group's size).
        rank: this rank (default: this process's).
    """

    def __init__(self, dataset: Sequence[Any], num_replicas: int | None = None, rank: int | None = None) -> None:
        own_rank, world_size = rank_and_world_size()
        self.num_replicas = world_size if num_replicas is None else int(num_replicas)
        self.rank = own_rank if rank is None else int(rank)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is not one of {self.num_replicas} ranks.")
        self.dataset_length = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.dataset_length, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.dataset_length, self.num_replicas))

    def set_epoch(self, epoch: int) -> None:
        """Nothing changes with the epoch (no shuffling); here for the engines that call it on every sampler."""


class ShardedEvaluator(SupervisedEvaluator):
    """MONAI's ``SupervisedEvaluator`` that also runs a rank whose shard is empty.

    MONAI skips the run of an engine with no batch, so under ``torch.distributed`` that rank would never reach the
    all-reduce of the metrics and the others would wait for it forever. Here such a rank runs one epoch of no
    iteration: its events fire (the metrics reset and join the all-reduce), no batch is read. In one process an empty
    loader is skipped as MONAI does.
    """

    def run(self, global_epoch: int = 1) -> None:
        if self.state.epoch_length == 0 and rank_and_world_size()[1] > 1:
            self.state.epoch_length = 1  # Ignite ends the epoch at the first empty fetch, after its events
        super().run(global_epoch)
