"""Published benchmarks' settings as data: what each paper's released configs set for each method it ran.

``benchmarks.json`` (beside this module) is one table: per benchmark (``biomedcoop``, ``coop``, ``cocoop``,
``maple``, ``promptsrc``), per method, the network keywords (tokens, depths, initialisation, loss weights), the
training recipe (optimiser, learning rate, schedule, epochs, batch size: :class:`~monai_cilmp.engines.TrainingRecipe`
fields) and, for Tip-Adapter, the validation search of ``alpha``/``beta``; per data set where the configs differ
(BiomedCoOp's per-dataset loss weights, KgCoOp's ``W``, ProGrad's ``T``), and the class names the benchmark's prompts
use where ours are spelt otherwise. ``monai-cilmp compare --benchmark NAME`` applies them
(:func:`benchmark_settings`) and prints them in its report (:func:`benchmark_markdown`). The values were read from
the authors' repositories (each entry's ``source``); nothing else of them is here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["BENCHMARKS_FILE", "benchmark_markdown", "benchmark_settings", "list_benchmarks", "load_benchmarks"]

BENCHMARKS_FILE = Path(__file__).with_name("benchmarks.json")
#: what an entry sets per method: network keywords, recipe fields, recipe fields per shot count K (``{"1": {...}}``:
#: CoOp's epochs grow with K) and the keywords of a search on the validation split (Tip-Adapter's alpha/beta, a
#: linear probe's C)
_KINDS = ("network", "recipe", "recipe_by_shots", "search")
_HEADERS = ("network", "recipe", "recipe per shot count", "search on validation")


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    return json.loads(BENCHMARKS_FILE.read_text())


def load_benchmarks() -> dict[str, Any]:
    """The whole table (a copy)."""
    return json.loads(json.dumps(_table()))


def list_benchmarks() -> list[str]:
    """The benchmark names."""
    return list(_table())


def benchmark_settings(
    name: str, methods: Sequence[str], dataset: str | None = None, class_names: Sequence[str] = ()
) -> dict[str, Any]:
    """What benchmark ``name`` sets for ``methods`` on ``dataset``.

    Args:
        name: a benchmark of the table (:func:`list_benchmarks`).
        methods: the compared methods; those the benchmark did not run keep this package's defaults.
        dataset: registry name of the data set (its per-dataset values and class names); ``None``: the values
            common to every data set only.
        class_names: the datalist's class names (to list the renamed ones).

    Returns:
        ``{"benchmark", "title", "source", "dataset", "methods": {method: {"network", "recipe", "recipe_by_shots",
        "search"}},
        "class_names": {ours: the benchmark's}, "not_in_benchmark": [...]}`` (plain data, recorded with a comparison).

    Raises:
        ValueError: unknown benchmark (did-you-mean message).
    """
    from monai.utils import look_up_option

    table = _table()
    entry = table[look_up_option(str(name), list(table))]
    per_dataset = entry.get("datasets", {}).get(dataset or "", {})
    applied: dict[str, dict[str, Any]] = {}
    for method in methods:
        common, specific = entry["methods"].get(method), per_dataset.get("methods", {}).get(method, {})
        if common is None and not specific:
            continue
        common = common or {}
        applied[method] = {k: {**common.get(k, {}), **specific.get(k, {})} for k in _KINDS}
        applied[method] = {k: v for k, v in applied[method].items() if v}
    renamed = {k: v for k, v in per_dataset.get("class_names", {}).items() if not class_names or k in class_names}
    return {
        "benchmark": str(look_up_option(str(name), list(table))),
        "title": entry["title"],
        "source": entry["source"],
        "dataset": dataset,
        "methods": applied,
        "class_names": renamed,
        "not_in_benchmark": [m for m in methods if m not in applied],
    }


def _value(value: Any) -> str:
    return "random" if value is None else json.dumps(value) if isinstance(value, str) else str(value)


def _fields(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in values.items())


def benchmark_markdown(settings: Mapping[str, Any], kept: Mapping[str, Any] | None = None) -> str:
    """The settings :func:`benchmark_settings` returned, as a report section (one row per method).

    Args:
        settings: what :func:`benchmark_settings` returned.
        kept: recipe fields given on the command line that win over the benchmark's (listed in the section).
    """
    lines = [
        f"## Benchmark settings: {settings['title']}",
        "",
        f"Applied with `--benchmark {settings['benchmark']}`"
        + (f" for data set `{settings['dataset']}`" if settings.get("dataset") else " (no data set: common values)")
        + f"; read from {settings['source']}.",
        "",
        "| method | " + " | ".join(_HEADERS) + " |",
        "|---|" + "---|" * len(_HEADERS),
    ]
    for method, applied in settings["methods"].items():
        cells = [", ".join(f"{k}: {_fields(v)}" for k, v in applied.get("recipe_by_shots", {}).items())]
        cells = [(cells[0] if kind == "recipe_by_shots" else _fields(applied.get(kind, {}))) or "-" for kind in _KINDS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if settings.get("class_names"):
        names = ", ".join(f"{k} -> {v}" for k, v in settings["class_names"].items())
        lines += ["", f"Class names in the prompts (methods without a knowledge bank): {names}."]
    if settings.get("not_in_benchmark"):
        lines += ["", f"Not in this benchmark (this package's defaults): {', '.join(settings['not_in_benchmark'])}."]
    if kept:
        given = ", ".join(f"{k}={v}" for k, v in kept.items())
        lines += ["", f"Given on the command line, winning over the benchmark's recipe: {given}."]
    return "\n".join(lines) + "\n"
