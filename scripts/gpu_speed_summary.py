"""Summarise the reports of ``scripts/gpu_speed.sh`` as the ratios issue 17's targets ask for.

    python scripts/gpu_speed_summary.py gpu_speed_out

Every figure is read from the bench reports of that run, except the reference code's own figures, which no run here
measures (the reference needs its own environment): those are the ones recorded in the issue for one H200 and are
labelled as such wherever they are used.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

#: the reference code on one H200 (bf16 autocast, ViT-B/16 shape, B=64, C=4, L=16), as recorded in issue 17: figures of
#: an earlier session's run, not of this one
REFERENCE_H200 = {"train_images_per_s": 29.0, "infer_images_per_s": 120.0, "peak_memory_gb_c4": 10.0}


def _load(folder: Path, name: str) -> dict | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def summary(folder: Path) -> list[tuple[str, str, str]]:
    """Rows of (what, measured, target)."""
    rows: list[tuple[str, str, str]] = []
    levers, compiled = _load(folder, "levers"), _load(folder, "compiled")
    batch256, classes8 = _load(folder, "batch256"), _load(folder, "classes8")
    best = max((r for r in (levers, compiled) if r), key=lambda r: r["cilmp"]["train_images_per_s"], default=None)
    if best:
        train = best["cilmp"]["train_images_per_s"]
        which = "compiled" if best is compiled else "eager"
        rows.append((f"training images/s ({which}, all levers)", f"{train:.0f}", ">= 2500"))
        rows.append(("  x the reference's 29 img/s (issue's figure, not this run)", f"{train / 29.0:.1f}x", ">= 85x"))
        rows.append(("  utilisation of the in-process matmul peak", f"{best['utilisation']['train']:.1%}", "-"))
    if levers:
        for name, label in (
            ("without_shared_prefix", "shared prompt start"),
            ("without_compute_dtype", "frozen weights in the compute dtype"),
            ("full_context", "context truncation + shared start (vs full context)"),
        ):
            ratio = levers.get(f"speedup_vs_{name}")
            if ratio:
                rows.append((f"lever: {label}, train / infer", f"{ratio['train']:.2f}x / {ratio['infer']:.2f}x", "> 1"))
        phases = levers.get("phases")
        if phases:
            image, text = phases["image_tower"], phases["text_tower"]
            for name in ("image_tower", "text_side", "text_tower", "knowledge_tokens", "optimiser"):
                phase = phases[name]
                use = f", {phase['utilisation']:.1%} of peak" if "utilisation" in phase else ""
                rows.append((f"phase {name}", f"{phase['step_s'] * 1e3:.1f} ms{use}", "-"))
            if image.get("utilisation") and text.get("utilisation"):
                rows.append(
                    ("text tower per FLOP vs image tower", f"{text['utilisation'] / image['utilisation']:.2f}", ">= 1")
                )
        engine = levers.get("engine_in_memory", {})
        if "fraction_of_bench" in engine:
            rows.append(("engine on in-memory tensors / bench", f"{engine['fraction_of_bench']:.0%}", ">= 85%"))
        memory = levers["cilmp"]["peak_memory_gb"]
        ratio = memory / REFERENCE_H200["peak_memory_gb_c4"]
        rows.append(
            (
                "peak memory C=4 (x the reference's 10.0 GB, issue's figure)",
                f"{memory:.2f} GB ({ratio:.2f}x)",
                "<= 0.5x",
            )
        )
    if compiled and "speedup_vs_without_compile" in compiled:
        ratio = compiled["speedup_vs_without_compile"]
        rows.append(("lever: torch.compile, train / infer", f"{ratio['train']:.2f}x / {ratio['infer']:.2f}x", "> 1"))
        rows.append(
            ("  compile time (train + infer graphs)", f"{compiled['cilmp'].get('warmup_and_compile_s', 0):.0f} s", "-")
        )
    if batch256:
        infer = batch256["cilmp"]["infer_images_per_s"]
        rows.append((f"inference images/s at batch {batch256['config']['batch_size']}", f"{infer:.0f}", ">= 10000"))
    if classes8:
        memory = classes8["cilmp"]["peak_memory_gb"]
        rows.append((f"peak memory C={classes8['config']['classes']}", f"{memory:.2f} GB", "<= 0.5x the reference's"))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0] if args else "gpu_speed_out")
    rows = summary(folder)
    if not rows:
        print(f"error: no bench reports in {folder}; run scripts/gpu_speed.sh first.", file=sys.stderr)
        return 1
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'measured':>24}  target")
    for what, measured, target in rows:
        print(f"{what:<{width}}  {measured:>24}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
