"""The benchmark's options and speed levers: what ``monai-cilmp bench`` and ``python -m monai_cilmp.bench`` accept.

Kept apart from :mod:`monai_cilmp.bench` (which imports torch and open_clip) so that the command line can list its
options without loading them.
"""

from __future__ import annotations

import argparse

__all__ = ["DESCRIPTION", "DTYPES", "LEVERS", "SHARED_PREFIX_SETTINGS", "add_arguments"]

#: autocast dtypes of the benchmark (fp32: none)
DTYPES = ("bf16", "fp16", "fp32")

#: the speed levers --ablate can switch off (each variant is the main network minus one lever)
LEVERS = ("shared_prefix", "compute_dtype", "compile")

#: --shared-prefix: CILMP's ``shared_prefix`` None (where it pays), True, False
SHARED_PREFIX_SETTINGS = {"auto": None, "on": True, "off": False}

DESCRIPTION = """Throughput, memory and utilisation of the CILMP network (random weights, any open_clip shape).

Everything is measured in one process so that the ratios mean something on any machine: the achieved GFLOP/s
(FLOPs counted on the operations actually executed) against a dense matmul peak measured right before, and the
throughput against a full-context run of the same network (every prompt padded to CLIP's 77 tokens), against the
network with one speed lever off (--ablate) and against the training engine on in-memory tensors (--engine);
--phases splits a training step into image tower, text tower, knowledge tokens and optimiser. On the CPU every
timing is also reported in process CPU time (steadier than wall time on a shared machine)."""


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the benchmark's options to ``parser``."""
    parser.add_argument("--backbone", default="ViT-B-16", help="open_clip model shape (random weights)")
    parser.add_argument(
        "--activation",
        choices=("quick_gelu", "gelu"),
        default="quick_gelu",
        help="MLP activation of the random backbone (quick_gelu: as OpenAI's CLIP weights, the paper's setting)",
    )
    parser.add_argument("--batch-size", "-B", type=int, default=4, help="images per step")
    parser.add_argument("--classes", "-C", type=int, default=4, help="classes (prompts per image)")
    parser.add_argument("--knowledge-length", "-L", type=int, default=16, help="knowledge tokens per class")
    parser.add_argument("--knowledge-dim", "-D", type=int, default=4096, help="LLM hidden size")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32", help="autocast dtype (fp32: none)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the first GPU if any, else cpu)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--steps", type=int, default=5, help="timed rounds (median reported)")
    parser.add_argument("--unconditional", action="store_true", help="benchmark the unconditional variant")
    parser.add_argument("--grad-checkpointing", action="store_true", help="recompute encoder blocks in backward")
    parser.add_argument(
        "--full-context", action="store_true", help="also run every prompt at the full context, for the ratio"
    )
    parser.add_argument("--compile", action="store_true", help="run the network through torch.compile")
    parser.add_argument(
        "--shared-prefix",
        choices=SHARED_PREFIX_SETTINGS,
        default="auto",
        help="run the start of the prompts (start token and context) once per layer instead of once per prompt: "
        "auto (CILMP's default) where it pays, on CUDA; on or off everywhere",
    )
    parser.add_argument(
        "--no-shared-prefix",
        dest="shared_prefix",
        action="store_const",
        const="off",
        help="the same as --shared-prefix off",
    )
    parser.add_argument(
        "--frozen-in-compute-dtype",
        action="store_true",
        help="keep the frozen weights in the autocast dtype (bf16/fp16) instead of casting them every step",
    )
    parser.add_argument(
        "--ablate",
        nargs="+",
        choices=LEVERS,
        default=(),
        help="also run the network with each of these levers off (when on), for the ratios",
    )
    parser.add_argument(
        "--phases",
        action="store_true",
        help="time the phases apart: image tower, text side, knowledge tokens, optimiser (forward + backward each)",
    )
    parser.add_argument(
        "--engine", action="store_true", help="also run create_trainer's engine on in-memory tensors, for the ratio"
    )
    parser.add_argument("--engine-workers", type=int, default=0, help="loader processes of the --engine run")
    parser.add_argument("--out", help="also write the JSON report to this file")
    return parser
