"""Throughput, memory and utilisation benchmark of the CILMP network (random weights, any open_clip shape).

Everything is measured in one process so that the ratios mean something on any machine: the achieved GFLOP/s
(FLOPs counted by ``torch.utils.flop_counter`` on the operations actually executed) against a dense matmul peak
measured right before, and our throughput against a full-context run of the same network (what the reference
code executes: every prompt padded to CLIP's 77 tokens).

    python -m monai_cilmp.bench --batch-size 4 --classes 4 --knowledge-length 16 --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["REFERENCE_CPU", "main", "run_benchmark"]

# The reference implementation (github usr922/cilmp, patched to run fp32 on CPU) measured on the development
# machine class (2 cores, fp32, 2 threads, ViT-B/16 shape, B=4, C=4, L=16): figures of another run, not of this one.
REFERENCE_CPU = {"train_images_per_s": 1.5, "infer_images_per_s": 4.0, "peak_memory_gb": 3.1}

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, size: int = 2048, seconds: float = 1.0) -> float:
    """Dense ``size x size`` matmul throughput in GFLOP/s, the best of repeated timed runs."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    best, spent = 0.0, 0.0
    while spent < seconds:
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        _sync(device)
        took = time.perf_counter() - start
        spent += took
        best = max(best, 4 * 2 * size**3 / took / 1e9)
    return best


def _count_flops(fn: Callable[[], Any]) -> float:
    """FLOPs of one call of ``fn``; the same matmuls run, but through ops the counter can see."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused inference kernel hides its matmuls from the counter
    try:
        counter = FlopCounterMode(display=False)
        with counter:
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return float(counter.get_total_flops())


def _time(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    scale = 1 if platform.system() == "Darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


def _build(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """CILMP (and, with ``--full-context``, the same network at the full context) on one shared random backbone."""
    from monai_cilmp.knowledge import KnowledgeBank
    from monai_cilmp.networks import CILMP, load_backbone

    generator = torch.Generator().manual_seed(0)
    classes = [f"disease number {i}" for i in range(args.classes)]
    bank = KnowledgeBank.from_tensors(
        {c: torch.randn(args.knowledge_length, args.knowledge_dim, generator=generator) for c in classes},
        source_model="random (benchmark)",
    )
    backbone = load_backbone(args.backbone, None, quick_gelu=args.activation == "quick_gelu")
    variants = {"cilmp": True, "full_context": False} if args.full_context else {"cilmp": True}
    nets = {}
    for name, truncate in variants.items():
        torch.manual_seed(0)
        net = CILMP(classes, bank, backbone, conditional=not args.unconditional, truncate_context=truncate)
        net.text_tower.grad_checkpointing = net.vision_tower.grad_checkpointing = args.grad_checkpointing
        nets[name] = net.to(device)
    return nets


class _Steps:
    """One network's training step and inference step on a fixed batch."""

    def __init__(self, net, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> None:
        self.net = net
        self.images = torch.randn(args.batch_size, 3, net.image_size, net.image_size, device=device)
        self.labels = torch.arange(args.batch_size, device=device) % args.classes
        self.trainable = [p for p in net.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(self.trainable, lr=1e-6, momentum=0.9)
        self.autocast = (
            (lambda: torch.autocast(device_type=device.type, dtype=dtype)) if dtype != torch.float32 else nullcontext
        )

    def train(self) -> None:
        self.net.train()
        with self.autocast():
            loss = F.cross_entropy(self.net(self.images), self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def infer(self) -> None:
        self.net.eval()
        with torch.inference_mode(), self.autocast():
            self.net(self.images)

    def flops(self) -> tuple[float, float]:
        train = _count_flops(self.train)
        # the flop counter's module tracker cannot hook parameters that need grad inside inference mode
        for p in self.trainable:
            p.requires_grad_(False)
        try:
            infer = _count_flops(self.infer)
        finally:
            for p in self.trainable:
                p.requires_grad_(True)
        return train, infer


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark described by ``args`` (see :func:`monai_cilmp.cli.bench.add_arguments`) and return the report.

    Timings alternate between the variants round by round and report medians, so that their ratios hold even on a
    machine whose speed drifts; the matmul peak is the best of a measurement before and after.
    """
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = _DTYPES[args.dtype]
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    peak_before = matmul_peak_gflops(device, dtype)
    steps = {name: _Steps(net, args, device, dtype) for name, net in _build(args, device).items()}
    for name, step in steps.items():  # warm-up, ours first so that the peak memory is ours alone
        step.train()
        step.infer()
        if name == "cilmp":
            peak_memory_gb = _peak_memory_gb(device)
    times: dict[str, dict[str, list[float]]] = {name: {"train": [], "infer": []} for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            for kind in ("train", "infer"):
                times[name][kind].append(_time(getattr(step, kind), device))
    peak = max(peak_before, matmul_peak_gflops(device, dtype))

    results: dict[str, dict[str, float]] = {}
    for name, step in steps.items():
        train_flops, infer_flops = step.flops()
        train_s, infer_s = statistics.median(times[name]["train"]), statistics.median(times[name]["infer"])
        results[name] = {
            "train_images_per_s": args.batch_size / train_s,
            "infer_images_per_s": args.batch_size / infer_s,
            "train_step_s": train_s,
            "infer_step_s": infer_s,
            "train_gflop_per_step": train_flops / 1e9,
            "infer_gflop_per_step": infer_flops / 1e9,
            "train_gflops": train_flops / train_s / 1e9,
            "infer_gflops": infer_flops / infer_s / 1e9,
        }
    ours = results["cilmp"]
    ours["peak_memory_gb"] = peak_memory_gb
    net = steps["cilmp"].net
    report: dict[str, Any] = {
        "config": {
            "backbone": args.backbone,
            "activation": args.activation,
            "batch_size": args.batch_size,
            "classes": args.classes,
            "knowledge_length": args.knowledge_length,
            "knowledge_dim": args.knowledge_dim,
            "dtype": args.dtype,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "rounds": args.steps,
            "conditional": not args.unconditional,
            "trainable_parameters": sum(p.numel() for p in net.parameters() if p.requires_grad),
            "text_tokens_per_prompt": int(net.prompt_embeddings.shape[1]),
            "torch": torch.__version__,
        },
        "matmul_peak_gflops": peak,
        "cilmp": ours,
        "utilisation": {"train": ours["train_gflops"] / peak, "infer": ours["infer_gflops"] / peak},
    }
    if device.type == "cuda":
        report["config"]["gpu"] = torch.cuda.get_device_name(device)
    if "full_context" in results:
        full = results["full_context"]
        report["full_context"] = full
        report["speedup_vs_full_context"] = {
            "train": ours["train_images_per_s"] / full["train_images_per_s"],
            "infer": ours["infer_images_per_s"] / full["infer_images_per_s"],
            "train_flops": full["train_gflop_per_step"] / ours["train_gflop_per_step"],
            "infer_flops": full["infer_gflop_per_step"] / ours["infer_gflop_per_step"],
        }
    setting = (args.backbone, args.batch_size, args.classes, args.knowledge_length, args.dtype, device.type)
    if setting == ("ViT-B-16", 4, 4, 16, "fp32", "cpu") and torch.get_num_threads() == 2:
        report["vs_reference_cpu_figures"] = {
            "note": "ratios to the reference code's figures on the 2-core machine class (same setting); compare "
            "matmul_peak_gflops with the 260-310 GFLOP/s that machine measured before trusting them",
            "train": ours["train_images_per_s"] / REFERENCE_CPU["train_images_per_s"],
            "infer": ours["infer_images_per_s"] / REFERENCE_CPU["infer_images_per_s"],
            "memory": ours["peak_memory_gb"] / REFERENCE_CPU["peak_memory_gb"],
        }
    return report


def main(argv: Sequence[str] | None = None) -> int:
    from monai_cilmp.cli.bench import add_arguments

    args = add_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0])).parse_args(argv)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    report = run_benchmark(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
