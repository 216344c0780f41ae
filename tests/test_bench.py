"""The README's benchmark table is generated from bench reports."""

from __future__ import annotations

import json

import pytest

from monai_cilmp.bench import README_MARKERS, markdown_table, update_readme


def _report(train: float, full_train: float) -> dict:
    ours = {"train_images_per_s": train, "infer_images_per_s": 3.0, "train_gflop_per_step": 300.0}
    ours["infer_gflop_per_step"] = 150.0
    full = {"train_images_per_s": full_train, "infer_images_per_s": 2.0}
    full.update(train_gflop_per_step=450.0, infer_gflop_per_step=220.0)
    return {
        "config": {"backbone": "ViT-B-16", "batch_size": 4, "classes": 4, "knowledge_length": 16, "dtype": "fp32"}
        | {"device": "cpu", "threads": 2},
        "cilmp": ours,
        "full_context": full,
        "speedup_vs_full_context": {"train": train / full_train, "infer": 1.5, "train_cpu_time": 1.25}
        | {"infer_cpu_time": 1.5},
        "speedup_vs_without_shared_prefix": {"train": 1.05, "infer": 1.02, "train_flops": 1.25, "infer_flops": 1.2},
        "utilisation": {"train": 0.8, "infer": 0.9},
        "matmul_peak_gflops": 140.0,
    }


def test_table_rows_come_from_the_reports():
    table = markdown_table([_report(1.5, 1.0), _report(1.0, 0.5)]).splitlines()
    assert len(table) == 4
    assert "ViT-B-16, B=4, C=4, L=16, fp32, cpu (2 threads)" in table[2]
    assert "1.50 / 3.00" in table[2] and "1.50× / 1.50× (CPU time 1.25× / 1.50×)" in table[2]
    assert "2.00× / 1.50×" in table[3]
    assert "300 / 150 GF (full: 450 / 220)" in table[2] and "80% / 90%" in table[2]
    assert "20%, 1.05× / 1.02×" in table[2] and "140 GFLOP/s" in table[2]


def test_readme_is_rewritten_between_the_markers_only(tmp_path):
    from scripts.readme_table import main

    begin, end = README_MARKERS
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{begin}\nold table typed by hand\n{end}\noutro\n")
    report = tmp_path / "r.json"
    report.write_text(json.dumps(_report(1.5, 1.0)))
    assert main([str(report), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(f"intro\n{begin}\n| setting |") and text.endswith(f"{end}\noutro\n")
    assert "typed by hand" not in text
    assert update_readme(text, [_report(1.5, 1.0)]) == text  # idempotent
    with pytest.raises(ValueError, match="no benchmark table markers"):
        update_readme("no markers", [])


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_shared_prompt_start_is_on_by_default_only_where_it_pays(device):
    """The bench builds CILMP with the shared prompt start CILMP's default chooses on the device (CUDA: on, CPU: off),
    records it among the levers, and ablates it only where it is on."""
    import argparse

    import torch

    from monai_cilmp.bench import _variants
    from monai_cilmp.bench_options import add_arguments

    def variants(*argv: str) -> dict:
        return _variants(add_arguments(argparse.ArgumentParser()).parse_args(list(argv)), torch.device(device))

    auto = variants("--ablate", "shared_prefix")
    assert auto["cilmp"]["shared_prefix"] is (device == "cuda")
    assert ("without_shared_prefix" in auto) is (device == "cuda")
    assert variants("--shared-prefix", "on")["cilmp"]["shared_prefix"] is True
    assert variants("--no-shared-prefix")["cilmp"]["shared_prefix"] is False
