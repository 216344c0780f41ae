"""The report: one folder and one table for several backbones; the papers' shape (methods x shots, mean ± std)."""

from __future__ import annotations

import csv

import open_clip
import pytest
import torch

from monai_cilmp.compare import backbone_label, run_comparison, summarise_cells, write_report

from .test_compare import LABEL, TINY, recipe


@pytest.mark.slow  # two comparisons of two seeds
def test_one_report_holds_several_backbones(tiny_data, tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    other = tmp_path / "tiny_other.safetensors"
    save_file({k: v.contiguous() for k, v in open_clip.create_model("CILMP-Tiny").state_dict().items()}, other)
    kwargs = dict(recipe=recipe(), log=lambda line: None)
    first = run_comparison(tiny_data["datalist"], ["zero-shot-name"], [2], [1, 2], tmp_path / "cmp", **TINY, **kwargs)
    second = run_comparison(
        tiny_data["datalist"],
        ["zero-shot-name"],
        [2],
        [1, 2],
        tmp_path / "cmp",
        **{**TINY, "pretrained": str(other)},
        **kwargs,
    )
    assert first["ran"] == 2 and second["ran"] == 2  # the second backbone does not reuse the first one's cells
    label = backbone_label("CILMP-Tiny", str(other))
    assert label == "CILMP-Tiny (tiny_other.safetensors)"
    rows = list(csv.DictReader((tmp_path / "cmp" / "results.csv").open()))
    assert [(r["backbone"], r["method"], r["n_seeds"]) for r in rows] == [
        (LABEL, "zero-shot-name", "2"),
        (label, "zero-shot-name", "2"),
    ]
    assert (
        rows[0]["accuracy_mean"] != rows[1]["accuracy_mean"] or rows[0]["macro_auc_mean"] != rows[1]["macro_auc_mean"]
    )
    text = (tmp_path / "cmp" / "results.md").read_text()
    assert f"| {LABEL} | zero-shot-name |" in text and f"| {label} | zero-shot-name |" in text
    (tmp_path / "elsewhere").mkdir()
    same_name = tmp_path / "elsewhere" / other.name  # same label, other weights: never mixed into the same cells
    same_name.write_bytes(other.read_bytes())
    with pytest.raises(ValueError, match="made from other weights"):
        run_comparison(
            tiny_data["datalist"],
            ["zero-shot-name"],
            [2],
            [1],
            tmp_path / "cmp",
            **{**TINY, "pretrained": str(same_name)},
            **kwargs,
        )


def record(method, shots, seed, accuracy, backbone="B"):
    metrics = {"accuracy": accuracy, "macro_f1": accuracy, "macro_auc": None, "kappa": 0.0, "n": 10}
    return {
        "method": method,
        "shots": shots,
        "seed": seed,
        "backbone": backbone,
        "metrics": metrics,
        "trainable_parameters": 5,
        "train_seconds": 1.0,
    }


def test_table_is_methods_by_shots_with_mean_and_sample_std(tmp_path):
    records = [record("coop", k, s, a) for k, s, a in ((1, 1, 0.5), (1, 2, 0.7), (4, 1, 0.8), (4, 2, 0.9))]
    rows, _ = summarise_cells(records, ["coop"], [1, 4])
    assert [round(r["accuracy_mean"], 6) for r in rows] == [0.6, 0.85]
    assert round(rows[0]["accuracy_std"], 6) == round(float(torch.tensor([0.5, 0.7]).std()), 6)  # ddof=1
    files = write_report(tmp_path, records, ["coop"], [1, 4])
    text = files["markdown"].read_text()
    assert "| backbone | method | 1-shot | 4-shot |" in text
    assert "| B | coop | 60.0 ± 14.1 | 85.0 ± 7.1 |" in text
    assert "n/a" in text  # the undefined AUC


def test_series_with_equal_accuracy_stay_visible_in_the_plot():
    from monai_cilmp.compare.report import PLOT_MARKERS, accuracy_figure

    def row(method, shots):
        return {"backbone": "b", "method": method, "shots": shots, "accuracy_mean": 0.4, "accuracy_std": 0.0}

    rows = [row("zero-shot-template", 1), row("zero-shot-template", 2), row("cilmp", 1), row("cilmp", 2)]
    ax = accuracy_figure(rows, [1, 2], n_classes=4).axes[0]
    drawn = [line for line in ax.get_lines() if line.get_marker() in PLOT_MARKERS]  # the series, not chance or caps
    assert len(drawn) == 2
    (zs_x, cilmp_x) = (list(line.get_xdata()) for line in drawn)
    assert all(a != b for a, b in zip(zs_x, cilmp_x))  # side by side, not on top of each other
    assert drawn[0].get_marker() != drawn[1].get_marker()
