"""The grid on submitit: the cells as a job array on its local executor give the report of the serial run."""

from __future__ import annotations

import csv

import pytest

from monai_cilmp.compare import CELL_FILE, ExecutorKind, cell_executor
from tests.compare.test_compare import compare

pytest.importorskip("submitit")

METHODS = ["zero-shot-name", "coop", "linear-probe"]


def _table(path) -> list[dict]:
    """The report's rows without the timing column (seconds differ between any two runs)."""
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if "seconds" not in k} for row in csv.DictReader(f)]


@pytest.mark.distributed
def test_local_executor_gives_the_report_of_the_serial_run(tiny_data, tmp_path):
    serial = compare(tiny_data, tmp_path / "serial", METHODS, seeds=(1, 2))
    executor = cell_executor("local", tmp_path / "submitit", timeout_min=20)
    lines: list[str] = []
    arrayed = compare(tiny_data, tmp_path / "array", METHODS, seeds=(1, 2), executor=executor, log=lines.append)
    assert any("job array" in line for line in lines)
    # every cell ran in a task of its own, except the zero-shot method's second seed (a copy of its first cell)
    assert len(list((tmp_path / "submitit").glob("*_result.pkl"))) == 5
    assert arrayed["ran"] == serial["ran"] == 6
    for one, other in zip(serial["records"], arrayed["records"]):
        assert (one["method"], one["seed"]) == (other["method"], other["seed"])
        assert one["metrics"] == other["metrics"]
    assert _table(serial["files"]["csv"]) == _table(arrayed["files"]["csv"])
    # idempotent: again, nothing is submitted and the report is the same
    lines.clear()
    again = compare(tiny_data, tmp_path / "array", METHODS, seeds=(1, 2), executor=executor, log=lines.append)
    assert again["ran"] == 0 and not any("job array" in line for line in lines)
    assert _table(again["files"]["csv"]) == _table(serial["files"]["csv"])


@pytest.mark.distributed
def test_a_cell_of_two_tasks_trains_with_torch_distributed(tiny_data, tmp_path):
    """tasks_per_node=2 (``--gpus-per-cell 2`` on SLURM): the two tasks of a cell join a gloo group, train, and rank 0
    evaluates and writes the record."""
    executor = cell_executor("local", tmp_path / "submitit" / "%j", timeout_min=20, tasks_per_node=2)
    result = compare(tiny_data, tmp_path / "cmp", ["coop"], executor=executor)
    (record,) = result["records"]
    assert record["trained"] and record["n_train"] == 4 and 0.0 <= record["metrics"]["accuracy"] <= 1.0
    assert len(list((tmp_path / "submitit").rglob("*_result.pkl"))) == 2  # one per task
    (rank0,) = (tmp_path / "submitit").rglob("*_0_log.out")
    (rank1,) = (tmp_path / "submitit").rglob("*_1_log.out")
    assert "training and evaluating" in rank1.read_text()  # both tasks trained the cell,
    assert "accuracy" in rank0.read_text() and "accuracy" not in rank1.read_text()  # one group: rank 0 evaluated


def test_executor_kinds_and_a_failed_cell(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="serial executor runs the cells in this process"):
        cell_executor(ExecutorKind.SERIAL, tmp_path)
    with pytest.raises(ValueError):
        cell_executor("kubernetes", tmp_path)

    class Failing:
        """An executor whose tasks fail: the comparison says which cell, and keeps no report."""

        folder = tmp_path

        def map_array(self, function, *arguments):
            class Job:
                job_id = "7_0"

                class paths:  # noqa: N801 - mirrors submitit's job.paths
                    stderr = tmp_path / "7_0.err"

                def results(self):
                    raise RuntimeError("out of memory")

            return [Job() for _ in arguments[0]]

    with pytest.raises(RuntimeError, match=r"1 of 1 cells failed: coop.*\(out of memory\).*Run the comparison again"):
        compare(tiny_data, tmp_path / "cmp", ["coop"], executor=Failing())
    assert not list((tmp_path / "cmp").rglob(CELL_FILE))
