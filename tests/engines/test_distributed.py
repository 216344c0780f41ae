"""Distributed training on CPU with gloo: N processes equal one, per-rank random streams, the logged loss is global,
small validation sets, two nodes on loopback, an elastic restart.

The process-level tests start ``torchrun`` (``python -m torch.distributed.run``) on
``tests/engines/distributed_worker.py`` and take a few minutes in all: they are marked ``distributed`` (deselected
from the default run; ``.ci/run`` runs them with ``-m distributed``). The helpers' own tests run in the default run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_cilmp.engines import reseed
from monai_cilmp.engines.distributed import ShardSampler, gather_in_dataset_order, per_process_batch, rank_seed

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("distributed_worker.py")
TIMEOUT = 600
METHODS = ("cilmp", "tip-adapter-f", "lp++", "linear-probe")


def _environment() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(launcher: list[str], *worker_args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, str(WORKER), *worker_args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_environment())


def _finish(process: subprocess.Popen, timeout: float = TIMEOUT) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{output[-3000:]}")
    assert process.returncode == 0, output[-4000:]
    return output


def _standalone(nproc: int, *worker_args: str, extra: tuple[str, ...] = ()) -> str:
    return _finish(_torchrun(["--standalone", "--nnodes=1", f"--nproc-per-node={nproc}", *extra], *worker_args))


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest difference over the entries of two states, relative to ``max(1, |value|)`` (float32 rounding of an
    entry of LP++'s ``alpha``, about 62, is 4e-6)."""
    assert a.keys() == b.keys()
    return max(float(((a[k].float() - b[k].float()).abs() / a[k].float().abs().clamp(min=1.0)).max()) for k in a)


# ---- the helpers, in one process -------------------------------------------------------------------------------


def test_rank_zero_keeps_the_seed_and_other_ranks_get_distinct_reproducible_ones():
    assert rank_seed(700_022) == 700_022 and rank_seed(700_022, 0) == 700_022  # one process: as before
    seeds = [rank_seed(700_022, r) for r in range(8)]
    assert len(set(seeds)) == 8 and seeds == [rank_seed(700_022, r) for r in range(8)]
    assert all(0 <= s < 2**63 for s in seeds) and rank_seed(700_023, 1) != seeds[1]


def test_the_batch_size_is_the_global_batch_and_must_divide_over_the_processes():
    assert per_process_batch(64) == 64 and per_process_batch(64, 8) == 8 and per_process_batch(6, 3) == 2
    with pytest.raises(ValueError, match="batch size 10 is the global batch .* over the 4 processes: .* such as 12"):
        per_process_batch(10, 4)
    with pytest.raises(ValueError, match="multiple of 2"):
        per_process_batch(0, 2)


def test_shard_sampler_splits_without_padding_and_allows_empty_ranks():
    shards = [list(ShardSampler(range(3), num_replicas=4, rank=r)) for r in range(4)]
    assert shards == [[0], [1], [2], []] and [len(ShardSampler(range(3), 4, r)) for r in range(4)] == [1, 1, 1, 0]
    assert sorted(i for r in range(3) for i in ShardSampler(range(10), 3, r)) == list(range(10))
    with pytest.raises(ValueError, match="rank 4 is not one of 4 ranks"):
        ShardSampler(range(3), 4, 4)


def test_gathering_puts_one_process_rows_in_dataset_order():
    from monai.data import DataLoader, DistributedSampler

    data = list(range(6))
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=3)
    loader = DataLoader(data, batch_size=2, sampler=sampler)
    rows = torch.tensor([float(i) for batch in loader for i in batch])
    assert rows.tolist() != sorted(rows.tolist())  # shuffled by the sampler
    (ordered,) = gather_in_dataset_order(loader, rows)
    assert ordered.tolist() == [float(i) for i in data]
    plain = DataLoader(data, batch_size=2, shuffle=True)  # not sharded: left as it is
    assert gather_in_dataset_order(plain, rows)[0] is rows


# ---- torchrun on CPU with gloo ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def equivalence_runs(tmp_path_factory) -> dict[int, dict[str, dict]]:
    """The four methods trained on 1 and on 2 processes, global batch 4 (1 x 4 and 2 x 2)."""
    results = {}
    for nproc in (1, 2):
        out = tmp_path_factory.mktemp(f"nproc{nproc}")
        _standalone(nproc, "equivalence", str(out))
        results[nproc] = {m: torch.load(out / f"{m}.pt", weights_only=False) for m in METHODS}
    return results


@pytest.mark.distributed
@pytest.mark.parametrize("method", METHODS)
def test_two_processes_train_what_one_process_trains(equivalence_runs, method):
    one, two = equivalence_runs[1][method], equivalence_runs[2][method]
    difference = _max_difference(one["state"], two["state"])
    print(f"{method}: max |1 process - 2 processes| / max(1, |value|) over the trained state = {difference:.2e}")
    assert difference <= 1e-6
    for key in ("val_accuracy", "val_loss"):  # validation sharded over 2 ranks, metrics reduced: the same
        assert two["val"][key] == pytest.approx(one["val"][key], abs=1e-6)


@pytest.mark.distributed
def test_the_logged_loss_is_the_mean_over_ranks(equivalence_runs):
    for method in METHODS:
        ranks = equivalence_runs[2][method]["losses"]
        local = np.array([rank["local"] for rank in ranks])  # (ranks, steps): each rank's own shard
        for rank in ranks:  # every rank logs the global mean, not its own
            np.testing.assert_allclose(rank["logged"], local.mean(0), atol=1e-6)
        assert not np.allclose(local[0], local[1])  # the shards differ: rank 0's loss alone would be wrong
        single = equivalence_runs[1][method]["losses"][0]["logged"]  # the loss of the same global batch
        np.testing.assert_allclose(ranks[0]["logged"], single, atol=1e-5)


@pytest.mark.distributed
def test_ranks_draw_distinct_reproducible_streams(tmp_path):
    _standalone(2, "streams", str(tmp_path))
    drawn = torch.load(tmp_path / "streams.pt", weights_only=False)  # [rank][epoch]
    assert len(drawn) == 2 and len(drawn[0]) == 2
    for epoch in range(2):
        zero, one = drawn[0][epoch], drawn[1][epoch]
        for key in ("torch", "numpy", "transform"):
            assert not np.allclose(np.asarray(zero[key]), np.asarray(one[key])), (key, epoch)
        # rank 0 draws what a single process always drew: the run's seed mixed with the epoch
        reseed(7 * 100_003 + epoch + 1)
        assert torch.equal(zero["torch"], torch.rand(4)) and np.array_equal(zero["numpy"], np.random.rand(4))
        reseed(rank_seed(7 * 100_003 + epoch + 1, 1))  # and rank 1 a stream of its own, the same on every run
        assert torch.equal(one["torch"], torch.rand(4))
    assert not torch.equal(drawn[0][0]["torch"], drawn[0][1]["torch"])  # and they change with the epoch


@pytest.mark.distributed
def test_a_three_image_validation_set_on_four_processes(tmp_path):
    _standalone(4, "small-validation", str(tmp_path))
    ranks = torch.load(tmp_path / "validation.pt", weights_only=False)
    assert len(ranks) == 4
    for rank in ranks:  # every image counted once, the empty rank included, the same metrics on every rank
        for source in ("trainer", "evaluator"):
            assert rank[source]["val_accuracy"] == pytest.approx(ranks[0]["direct"]["val_accuracy"], abs=1e-7)
            assert rank[source]["val_loss"] == pytest.approx(ranks[0]["direct"]["val_loss"], abs=1e-6)


@pytest.mark.distributed
def test_two_nodes_on_loopback_train_what_one_node_trains(tmp_path, equivalence_runs):
    port = _free_port()
    launcher = [
        "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
        f"--rdzv-id=loopback-{port}",
    ]  # fmt: skip
    nodes = [_torchrun(launcher, "equivalence", str(tmp_path), "cilmp") for _ in range(2)]
    for node in nodes:
        _finish(node)
    two_nodes = torch.load(tmp_path / "cilmp.pt", weights_only=False)
    difference = _max_difference(two_nodes["state"], equivalence_runs[2]["cilmp"]["state"])
    print(f"cilmp: max |2 nodes x 1 - 1 node x 2| = {difference:.2e}")
    assert difference <= 1e-6


@pytest.mark.distributed
def test_a_non_finite_loss_on_one_rank_stops_every_rank_with_the_same_sentence(tmp_path):
    """Rank 1 alone gets a NaN loss: without the ranks' agreement rank 0 would wait for it in the next all-reduce
    (gloo's 30-minute timeout); with it both stop at once, before the optimiser step, with rank 1's sentence."""
    _finish(_torchrun(["--standalone", "--nnodes=1", "--nproc-per-node=2"], "nonfinite", str(tmp_path)), timeout=240)
    said = [(tmp_path / f"nonfinite{rank}.txt").read_text().splitlines() for rank in (0, 1)]
    assert said[0] == said[1], said
    assert said[0][0].startswith("The training loss became nan at epoch 1, iteration 2"), said[0]
    assert said[0][1] == "weights changed: False"


@pytest.mark.distributed
def test_an_elastic_restart_resumes_from_the_last_complete_epoch(tmp_path):
    launcher = ["--standalone", "--nnodes=1", "--nproc-per-node=2", "--max-restarts=2", "--monitor-interval=1"]
    process = _torchrun(launcher, "elastic", str(tmp_path))
    output, _ = process.communicate(timeout=TIMEOUT)
    if process.returncode != 0:
        # only gloo refusing the connection of a restarted group on a loaded machine (seen under pytest, not by hand)
        # is forgiven: a new launch resumes the same way (the kill is done, last.pt is there)
        assert "connectFullMesh failed" in output, output[-4000:]
        output = _standalone(2, "elastic", str(tmp_path))
    assert (tmp_path / "killed").exists()
    interrupted = torch.load(tmp_path / "elastic.pt", weights_only=False)
    reference = torch.load(tmp_path / "reference.pt", weights_only=False)
    assert interrupted["resumed"] and not reference["resumed"], output[-2000:]  # it did die and resume
    difference = _max_difference(interrupted["state"], reference["state"])
    print(f"elastic restart: max |resumed - uninterrupted| = {difference:.2e}")
    assert difference <= 1e-6
