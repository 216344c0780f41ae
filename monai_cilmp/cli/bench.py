"""``monai-cilmp bench``: throughput, memory and utilisation of the CILMP network."""

from __future__ import annotations

import argparse

from monai_cilmp.bench_options import DESCRIPTION, add_arguments


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark CILMP (random weights) and print a JSON report",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # lazy imports here and below: `--help` and argument errors load neither torch nor MONAI
    from monai_cilmp import bench

    return bench._run(args)
