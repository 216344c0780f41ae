"""Throughput, memory and utilisation benchmark of the CILMP network (random weights, any open_clip shape).

Everything is measured in one process so that the ratios mean something on any machine: the achieved GFLOP/s
(FLOPs counted by ``torch.utils.flop_counter`` on the operations actually executed) against a dense matmul peak
measured right before, our throughput against a full-context run of the same network (what the reference code
executes: every prompt padded to CLIP's 77 tokens), against the same network with one speed lever off
(``--ablate``), and against the Ignite engine running the same step on in-memory tensors (``--engine``). A
per-phase split (``--phases``) times the image tower, the text side, the knowledge tokens and the optimiser step
apart. On the CPU every timing is also taken in process CPU time, which a machine shared with other work disturbs
less than wall time.

    python -m monai_cilmp.bench --batch-size 4 --classes 4 --knowledge-length 16 --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from monai_cilmp.bench_options import LEVERS, SHARED_PREFIX_SETTINGS, add_arguments
from monai_cilmp.engines import TrainingRecipe, create_trainer
from monai_cilmp.knowledge import KnowledgeBank
from monai_cilmp.networks import CILMP, load_backbone
from monai_cilmp.networks.blocks.fused_block import shared_prefix_pays

__all__ = ["LEVERS", "README_MARKERS", "main", "markdown_table", "matmul_peak_gflops", "run_benchmark", "update_readme"]

#: the lines between which :func:`update_readme` writes the benchmark table
README_MARKERS = ("<!-- bench-table:begin (scripts/readme_table.py writes this) -->", "<!-- bench-table:end -->")

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


def _time(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """Wall seconds and process CPU seconds of one call of ``fn`` (the device finished before and after)."""
    _sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - start, time.process_time() - cpu


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    scale = 1 if platform.system() == "Darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


def _variants(args: argparse.Namespace, device: torch.device) -> dict[str, dict[str, bool]]:
    """The networks to build: ours with the levers the options ask for (the shared prompt start as CILMP decides it
    on ``device``), then each ablation and the full context."""
    setting = SHARED_PREFIX_SETTINGS[args.shared_prefix]
    ours = {
        "truncate": True,
        "shared_prefix": shared_prefix_pays(device) if setting is None else setting,
        "compute_dtype": args.frozen_in_compute_dtype,
        "compile": args.compile,
    }
    variants = {"cilmp": ours}
    for lever in args.ablate or ():
        if ours[lever]:
            variants[f"without_{lever}"] = {**ours, lever: False}
    if args.full_context:  # the reference's amount of work: no truncation, no shared prefix, same dtype handling
        variants["full_context"] = {**ours, "truncate": False, "shared_prefix": False}
    return variants


def _build(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """One CILMP per variant; variants that keep frozen weights in different dtypes get their own backbone."""

    generator = torch.Generator().manual_seed(0)
    classes = [f"disease number {i}" for i in range(args.classes)]
    bank = KnowledgeBank.from_tensors(
        {c: torch.randn(args.knowledge_length, args.knowledge_dim, generator=generator) for c in classes},
        source_model="random (benchmark)",
    )
    backbones: dict[bool, Any] = {}
    nets = {}
    for name, levers in _variants(args, device).items():
        cast = levers["compute_dtype"] and dtype != torch.float32
        if cast not in backbones:  # random backbone weights do not depend on the global random state
            backbones[cast] = load_backbone(args.backbone, None, quick_gelu=args.activation == "quick_gelu")
        torch.manual_seed(0)
        net = CILMP(
            classes,
            bank,
            backbones[cast],
            conditional=not args.unconditional,
            truncate_context=levers["truncate"],
            shared_prefix=levers["shared_prefix"],
        )
        net.text_tower.grad_checkpointing = net.vision_tower.grad_checkpointing = args.grad_checkpointing
        net = net.to(device)
        if cast:
            net.to_compute_dtype(dtype)
        nets[name] = (net, levers)
    return nets


class _Steps:
    """One network's training step, inference step and phases on a fixed batch."""

    def __init__(self, net, levers: dict[str, bool], args: argparse.Namespace, device: torch.device, dtype) -> None:
        self.net, self.levers = net, levers
        self.images = torch.randn(args.batch_size, 3, net.image_size, net.image_size, device=device)
        self.labels = torch.arange(args.batch_size, device=device) % args.classes
        self.trainable = [p for p in net.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(self.trainable, lr=1e-6, momentum=0.9)
        self.autocast = (
            (lambda: torch.autocast(device_type=device.type, dtype=dtype)) if dtype != torch.float32 else nullcontext
        )
        self.run = torch.compile(net) if levers["compile"] else net

    def train(self) -> None:
        self.net.train()
        with self.autocast():
            loss = F.cross_entropy(self.run(self.images), self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def infer(self) -> None:
        self.net.eval()
        with torch.inference_mode(), self.autocast():
            self.run(self.images)

    # ----- phases (forward + backward of one part; eager, whatever --compile says) ---------------------------------

    def _embeddings(self) -> torch.Tensor:
        with torch.no_grad(), self.autocast():
            return self.net.encode_image(self.images).detach()

    def image_tower(self) -> None:
        self.net.train()
        with self.autocast():
            z = self.net.encode_image(self.images)
        z.float().square().sum().backward()

    def text_side(self, z: torch.Tensor) -> None:
        self.net.train()
        with self.autocast():
            text = self.net.encode_prompts(z)
        text.float().square().sum().backward()

    def knowledge_tokens(self, z: torch.Tensor) -> None:
        self.net.train()
        knowledge = self.net.knowledge
        if knowledge is None:
            return
        with self.autocast():
            total = knowledge.all_layers(z if self.net.conditional else None).sum()
        total.backward()

    def optimiser_step(self) -> None:
        self.optimizer.step()

    def phases(self) -> dict[str, Callable[[], None]]:
        z = self._embeddings()
        self.image_tower()  # gradients in place for the optimiser phase
        return {
            "image_tower": self.image_tower,
            "text_side": lambda: self.text_side(z),
            "knowledge_tokens": lambda: self.knowledge_tokens(z),
            "optimiser": self.optimiser_step,
        }

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


def _engine_iteration_s(step: _Steps, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Seconds per iteration of ``create_trainer``'s engine on in-memory tensors (the same network and batch size).

    The loader yields collated in-memory batches (``--engine-workers`` processes, pinned on a GPU); iterations are
    timed between consecutive completions, so loading, the host-device copy and the handlers all count.
    """
    from ignite.engine import Events

    iterations = args.steps + 3
    size = step.net.image_size
    items = [
        {"image": torch.randn(3, size, size), "label": torch.tensor(i % args.classes)}
        for i in range(iterations * args.batch_size)
    ]
    loader = torch.utils.data.DataLoader(
        items,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.engine_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    recipe = TrainingRecipe(max_epochs=1, batch_size=args.batch_size, warmup_epochs=0, gpa_std=0.0, val_interval=0)
    stamps: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as out_dir:
        trainer = create_trainer(
            step.net,
            loader,
            out_dir,
            recipe,
            device=device,
            amp=args.dtype if args.dtype != "fp32" else False,
            progress=False,
            compile=step.levers["compile"],
            frozen_in_compute_dtype=step.levers["compute_dtype"],
        )

        def stamp(_) -> None:
            _sync(device)
            stamps.append((time.perf_counter(), time.process_time()))

        trainer.add_event_handler(Events.ITERATION_COMPLETED, stamp)
        trainer.run()
    deltas = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps[2:], stamps[3:])]  # 2 warm-up iterations
    return {
        "iteration_s": statistics.median(d[0] for d in deltas),
        "iteration_cpu_s": statistics.median(d[1] for d in deltas),
    }


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark described by ``args`` (see :func:`monai_cilmp.bench_options.add_arguments`); the report.

    Timings alternate between the variants round by round and report medians, so that their ratios hold even on a
    machine whose speed drifts; the matmul peak is the best of a measurement before and after.
    """
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = _DTYPES[args.dtype]
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    peak_before = matmul_peak_gflops(device, dtype)
    nets = _build(args, device, dtype)
    steps = {name: _Steps(net, levers, args, device, dtype) for name, (net, levers) in nets.items()}
    compile_s: dict[str, float] = {}
    peak_memory_gb = 0.0
    for name, step in steps.items():  # warm-up (and compilation), ours first so that the peak memory is ours alone
        start = time.perf_counter()
        step.train()
        step.infer()
        compile_s[name] = time.perf_counter() - start
        if name == "cilmp":
            peak_memory_gb = _peak_memory_gb(device)
    kinds = ("train", "infer")
    phases = steps["cilmp"].phases() if args.phases else {}
    times: dict[str, dict[str, list[tuple[float, float]]]] = {name: {k: [] for k in kinds} for name in steps}
    phase_times: dict[str, list[tuple[float, float]]] = {k: [] for k in phases}
    for fn in phases.values():
        fn()  # warm-up
    for _ in range(args.steps):
        for name, step in steps.items():
            for kind in kinds:
                times[name][kind].append(_time(getattr(step, kind), device))
        for kind, fn in phases.items():
            phase_times[kind].append(_time(fn, device))
    peak = max(peak_before, matmul_peak_gflops(device, dtype))

    def median(samples: list[tuple[float, float]], index: int = 0) -> float:
        return statistics.median(s[index] for s in samples)

    results: dict[str, dict[str, float]] = {}
    for name, step in steps.items():
        train_flops, infer_flops = step.flops()
        train_s, infer_s = median(times[name]["train"]), median(times[name]["infer"])
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
        if device.type == "cpu":
            results[name]["train_step_cpu_s"] = median(times[name]["train"], 1)
            results[name]["infer_step_cpu_s"] = median(times[name]["infer"], 1)
        if step.levers["compile"]:
            results[name]["warmup_and_compile_s"] = compile_s[name]
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
            "levers": steps["cilmp"].levers,
            "shared_prefix_setting": args.shared_prefix,
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
    if phases:
        report["phases"] = _phase_report(steps["cilmp"], phases, phase_times, peak, device, ours)
    for name, result in results.items():
        if name == "cilmp":
            continue
        report[name] = result
        ratios = {
            "train": ours["train_images_per_s"] / result["train_images_per_s"],
            "infer": ours["infer_images_per_s"] / result["infer_images_per_s"],
            "train_flops": result["train_gflop_per_step"] / ours["train_gflop_per_step"],
            "infer_flops": result["infer_gflop_per_step"] / ours["infer_gflop_per_step"],
        }
        if device.type == "cpu":
            ratios["train_cpu_time"] = result["train_step_cpu_s"] / ours["train_step_cpu_s"]
            ratios["infer_cpu_time"] = result["infer_step_cpu_s"] / ours["infer_step_cpu_s"]
        report[f"speedup_vs_{name}"] = ratios
    if args.engine and device.type == "cpu" and dtype != torch.float32:
        report["engine_in_memory"] = {"skipped": "the engines train in float32 on the CPU; use --dtype fp32"}
    elif args.engine:
        engine = _engine_iteration_s(steps["cilmp"], args, device)
        engine["images_per_s"] = args.batch_size / engine["iteration_s"]
        engine["fraction_of_bench"] = engine["images_per_s"] / ours["train_images_per_s"]
        engine["overhead_s"] = engine["iteration_s"] - ours["train_step_s"]
        report["engine_in_memory"] = engine
    return report


def _phase_report(
    step: _Steps,
    phases: dict[str, Callable[[], None]],
    phase_times: dict[str, list[tuple[float, float]]],
    peak: float,
    device: torch.device,
    ours: dict[str, float],
) -> dict[str, Any]:
    """Seconds, share of the training step, GFLOP and utilisation of every phase; the text tower alone is the text
    side minus the knowledge tokens."""
    report: dict[str, Any] = {}
    for kind, fn in phases.items():
        seconds = statistics.median(t[0] for t in phase_times[kind])
        flops = _count_flops(fn) if kind != "optimiser" else 0.0
        entry = {"step_s": seconds, "share_of_train_step": seconds / ours["train_step_s"], "gflop": flops / 1e9}
        if device.type == "cpu":
            entry["step_cpu_s"] = statistics.median(t[1] for t in phase_times[kind])
        if flops:
            entry["utilisation"] = flops / seconds / 1e9 / peak
        report[kind] = entry
    text, knowledge = report["text_side"], report["knowledge_tokens"]
    tower = {k: text[k] - knowledge[k] for k in ("step_s", "gflop") if k in text}
    tower["share_of_train_step"] = tower["step_s"] / ours["train_step_s"]
    if tower["step_s"] > 0 and tower["gflop"] > 0:
        tower["utilisation"] = tower["gflop"] / tower["step_s"] / peak
    report["text_tower"] = tower
    accounted = sum(report[k]["step_s"] for k in ("image_tower", "text_side", "optimiser"))
    report["rest_of_step_s"] = ours["train_step_s"] - accounted  # loss, logits, zeroing, and what phases miss
    return report


def _pair(a: float, b: float, digits: int = 2, suffix: str = "") -> str:
    return f"{a:.{digits}f}{suffix} / {b:.{digits}f}{suffix}"


def markdown_table(reports: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of benchmark reports (one row each), every figure taken from the reports as they are.

    Columns: setting, our images/s, the full context's, the speed-up (wall time; CPU time on the CPU), FLOPs per step,
    utilisation of the in-process matmul peak, and what the shared prompt start saves (when ablated).
    """
    header = [
        "setting",
        "ours train / infer img/s",
        "full context train / infer img/s",
        "speed-up train / infer",
        "FLOPs / step train / infer",
        "utilisation train / infer",
        "shared prompt start: FLOPs saved, speed-up train / infer",
        "matmul peak",
    ]
    rows = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for report in reports:
        config, ours = report["config"], report["cilmp"]
        count = config["threads"]
        threads = f" ({count} thread{'s' if count != 1 else ''})" if "cpu" in config["device"] else ""
        setting = (
            f"{config['backbone']}, B={config['batch_size']}, C={config['classes']}, L={config['knowledge_length']}, "
            f"{config['dtype']}, {config['device']}{threads}"
        )
        full = report.get("full_context")
        ratio = report.get("speedup_vs_full_context")
        speedup = "-"
        if ratio:
            speedup = _pair(ratio["train"], ratio["infer"], suffix="×")
            if "train_cpu_time" in ratio:
                speedup += f" (CPU time {_pair(ratio['train_cpu_time'], ratio['infer_cpu_time'], suffix='×')})"
        flops = f"{ours['train_gflop_per_step']:.0f} / {ours['infer_gflop_per_step']:.0f} GF"
        if full:
            flops += f" (full: {full['train_gflop_per_step']:.0f} / {full['infer_gflop_per_step']:.0f})"
        shared = "-"
        ablated = report.get("speedup_vs_without_shared_prefix")
        if ablated:
            saved = 1 - 1 / ablated["train_flops"]
            shared = f"{saved:.0%}, {_pair(ablated['train'], ablated['infer'], suffix='×')}"
            if "train_cpu_time" in ablated:
                shared += f" (CPU time {_pair(ablated['train_cpu_time'], ablated['infer_cpu_time'], suffix='×')})"
        utilisation = report["utilisation"]
        cells = [
            setting,
            _pair(ours["train_images_per_s"], ours["infer_images_per_s"]),
            _pair(full["train_images_per_s"], full["infer_images_per_s"]) if full else "-",
            speedup,
            flops,
            f"{utilisation['train']:.0%} / {utilisation['infer']:.0%}",
            shared,
            f"{report['matmul_peak_gflops']:.0f} GFLOP/s",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def update_readme(readme: str, reports: Sequence[dict[str, Any]]) -> str:
    """``readme``'s text with the table between :data:`README_MARKERS` replaced by :func:`markdown_table`.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    begin, end = README_MARKERS
    start, stop = readme.find(begin), readme.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"The README has no benchmark table markers: add the lines '{begin}' and '{end}' around it.")
    return readme[: start + len(begin)] + "\n" + markdown_table(reports) + "\n" + readme[stop:]


def main(argv: Sequence[str] | None = None) -> int:
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
