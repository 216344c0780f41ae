"""Method comparisons: CILMP and its baselines over shots and seeds, through the same engine, splits and test set.

- :mod:`.cells`: one cell (method x shots x seed, on a backbone) under a protocol (few-shot or base-to-novel):
  few-shot subset, training, test evaluation, its record;
- :mod:`.run`: the grid, run resumably (:func:`run_comparison`, behind ``monai-cilmp compare``);
- :mod:`.cluster`: the grid's cells as a submitit job array (SLURM, or local processes) (:func:`dispatch_cells`);
- :mod:`.benchmarks`: the published benchmarks' settings per method (``benchmarks.json``, ``--benchmark``);
- :mod:`.report`: the papers' table (mean ± std over seeds; base / novel / HM for base-to-novel; a backbone column)
  as ``results.md`` / ``results.csv`` and a plot against shots.
"""

from __future__ import annotations

from .cells import (
    CELL_FILE,
    FULL,
    Cell,
    CellContext,
    Protocol,
    backbone_label,
    class_specific_parameters,
    harmonic_mean,
    parse_shots,
    read_cell,
    run_cell,
    shots_label,
)
from .cluster import ExecutorKind, cell_executor, dispatch_cells
from .report import REPORTED_METRICS, plot_accuracy, plot_base_novel, summarise_cells, write_report
from .run import SETTINGS_FILE, base_recipe, plan_cells, run_cell_task, run_comparison

__all__ = [
    "CELL_FILE",
    "FULL",
    "REPORTED_METRICS",
    "SETTINGS_FILE",
    "Cell",
    "CellContext",
    "ExecutorKind",
    "Protocol",
    "backbone_label",
    "base_recipe",
    "cell_executor",
    "class_specific_parameters",
    "dispatch_cells",
    "harmonic_mean",
    "parse_shots",
    "plan_cells",
    "plot_accuracy",
    "plot_base_novel",
    "read_cell",
    "run_cell",
    "run_cell_task",
    "run_comparison",
    "shots_label",
    "summarise_cells",
    "write_report",
]
