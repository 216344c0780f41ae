"""``monai-cilmp bench``: throughput, memory and utilisation of the CILMP network."""

from __future__ import annotations

import argparse

from monai_cilmp import bench


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark CILMP (random weights) and print a JSON report",
        description=bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_arguments(parser)
    parser.set_defaults(func=bench._run)
