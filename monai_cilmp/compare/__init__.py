"""Method comparisons: CILMP and its baselines over shots and seeds, through the same engine, splits and test set.

- :mod:`.cells`: one cell (method x shots x seed): few-shot subset, training, test evaluation, its record;
- :mod:`.run`: the grid, run resumably (:func:`run_comparison`, behind ``monai-cilmp compare``);
- :mod:`.report`: mean ± std over seeds as ``results.md`` / ``results.csv`` and a plot of accuracy against shots.
"""

from __future__ import annotations

from .cells import CELL_FILE, FULL, Cell, CellContext, parse_shots, read_cell, run_cell, shots_label
from .report import REPORTED_METRICS, plot_accuracy, summarise_cells, write_report
from .run import SETTINGS_FILE, base_recipe, plan_cells, run_comparison

__all__ = [
    "CELL_FILE",
    "FULL",
    "REPORTED_METRICS",
    "SETTINGS_FILE",
    "Cell",
    "CellContext",
    "base_recipe",
    "parse_shots",
    "plan_cells",
    "plot_accuracy",
    "read_cell",
    "run_cell",
    "run_comparison",
    "shots_label",
    "summarise_cells",
    "write_report",
]
