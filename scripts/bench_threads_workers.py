"""Training steps per second of the default threads/workers against other settings, measured in one run.

Each setting trains CILMP for a few steps through :func:`monai_cilmp.engines.create_trainer` on real PNG files read
and augmented by the CILMP bundle's training transforms (so DataLoader workers do the work they do in a real run),
in a fresh process of its own (clean thread pools). Prints, per setting, the median wall time of a step, the CPU
time per step of the main process and of the loader workers, and the ratio to the fastest setting; the default
(:func:`monai_cilmp.utils.runtime.configure_runtime` with nothing given) should be within 1.2x of the best.

    PYTHONPATH=. python scripts/bench_threads_workers.py                       # ViT-B-16 shape, random weights
    PYTHONPATH=. python scripts/bench_threads_workers.py --backbone CILMP-Tiny --steps 10
    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=. python scripts/bench_threads_workers.py   # threads sleep while they wait

The machine may be shared: the CPU times show how much of a step's wall time was this run's own work.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (threads, workers); None: the default of monai_cilmp.utils.runtime. (-1, 4): torch's own thread count with the
# 4 workers the CLI used before.
SETTINGS = [(None, None), (-1, 4), (1, 0), (2, 0), (1, 1), (1, 2), (2, 2)]


def _write_images(folder: Path, n: int, size: int) -> list[dict]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        items.append({"image": str(path), "label": i % 2})
    return items


def child(args: argparse.Namespace) -> dict:
    """Train ``warmup + steps`` steps with one setting; return the timings (run in a process of its own)."""
    import torch
    from ignite.engine import Events
    from monai.data import DataLoader, Dataset

    import monai_cilmp  # noqa: F401  (registers CILMP-Tiny)
    from monai_cilmp.engines import TrainingRecipe, create_trainer
    from monai_cilmp.knowledge import KnowledgeBank
    from monai_cilmp.networks import CILMP, load_backbone
    from monai_cilmp.transforms import get_preset
    from monai_cilmp.utils.runtime import configure_runtime

    if args.threads == -1:  # torch's own default thread count
        workers = args.workers
    else:
        workers = configure_runtime("cpu", threads=args.threads, workers=args.workers).workers
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    backbone = load_backbone(args.backbone, None)
    classes = ["benign lesion", "malignant lesion"]
    generator = torch.Generator().manual_seed(0)
    bank = KnowledgeBank.from_tensors(
        {c: torch.randn(16, 384, generator=generator) for c in classes},
        source_model="random",
        mode="tokens",
        layer=-1,
        texts={c: c for c in classes},
    )
    network = CILMP(classes, bank, backbone)
    items = json.loads(Path(args.items).read_text())
    transform = get_preset("dermoscopy").train_transforms(
        keys="image", image_size=network.image_size, mean=network.image_mean, std=network.image_std
    )
    loader = DataLoader(Dataset(items, transform), batch_size=args.batch_size, shuffle=True, num_workers=workers)
    recipe = TrainingRecipe(max_epochs=1, batch_size=args.batch_size, gpa_std=0.0, val_interval=0)
    with tempfile.TemporaryDirectory() as out:
        trainer = create_trainer(network, loader, out, recipe, device="cpu", progress=False)
        stamps: list[tuple[float, float]] = []

        def stamp(engine) -> None:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            stamps.append((time.perf_counter(), usage.ru_utime + usage.ru_stime))
            if engine.state.iteration >= args.warmup + args.steps:
                engine.terminate()

        trainer.add_event_handler(Events.ITERATION_COMPLETED, stamp)
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        trainer.run()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker_cpu = (children.ru_utime + children.ru_stime) - (children_before.ru_utime + children_before.ru_stime)
    timed = stamps[args.warmup - 1 :]
    walls = [b[0] - a[0] for a, b in zip(timed, timed[1:])]
    cpus = [b[1] - a[1] for a, b in zip(timed, timed[1:])]
    return {
        "threads": threads,
        "workers": workers,
        "step_s": statistics.median(walls),
        "main_cpu_per_step_s": statistics.median(cpus),
        "worker_cpu_per_step_s": worker_cpu / len(stamps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="ViT-B-16", help="open_clip model shape (random weights)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--image-size", type=int, default=256, help="side of the PNG files")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--items", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.items:
        print(json.dumps(child(args)))
        return

    from monai_cilmp.utils.runtime import available_cores, configure_runtime

    default = configure_runtime("cpu")
    print(f"{available_cores()} cores; default on cpu: {default.threads} threads, {default.workers} workers")
    print(f"load average before: {os.getloadavg()}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        n = args.batch_size * (args.warmup + args.steps + 1)
        items = _write_images(Path(tmp), n, args.image_size)
        (Path(tmp) / "items.json").write_text(json.dumps(items))
        for threads, workers in SETTINGS:
            command = [sys.executable, __file__, "--items", str(Path(tmp) / "items.json")]
            command += ["--backbone", args.backbone, "--batch-size", str(args.batch_size)]
            command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
            if threads is not None:
                command += ["--threads", str(threads), "--workers", str(workers)]
            env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
            out = subprocess.run(command, capture_output=True, text=True, env=env)
            if out.returncode:
                raise SystemExit(f"setting threads={threads} workers={workers} failed:\n{out.stderr[-3000:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            result["setting"] = "default" if threads is None else ("torch default + 4 workers" if threads == -1 else "")
            results.append(result)
            done = f"{result['threads']} threads, {result['workers']} workers: {result['step_s']:.2f} s/step"
            print(f"  {done}", flush=True)
    best = min(r["step_s"] for r in results)
    print(f"load average after: {os.getloadavg()}")
    header = f"{'threads':>7} {'workers':>7} {'s/step':>8} {'x best':>7} {'main CPU s':>10} {'worker CPU s':>12}"
    print(f"\n{header}  setting")
    for r in results:
        r["ratio_to_best"] = r["step_s"] / best
        print(
            f"{r['threads']:>7} {r['workers']:>7} {r['step_s']:>8.2f} {r['ratio_to_best']:>7.2f} "
            f"{r['main_cpu_per_step_s']:>10.2f} {r['worker_cpu_per_step_s']:>12.2f}  {r['setting']}"
        )
    ratio = results[0]["ratio_to_best"]
    print(f"\ndefault / best = {ratio:.2f} ({'within' if ratio <= 1.2 else 'NOT within'} 1.2x)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
