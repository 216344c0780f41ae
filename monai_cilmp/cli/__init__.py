"""The ``monai-cilmp`` command line: thin fronts over the package and its bundles.

Each sub-command lives in its own module of this package and exposes ``add_parser(subparsers)``, which
registers the command and sets ``func`` (called with the parsed arguments, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]

# module names under monai_cilmp.cli, in the order their commands are listed by --help
COMMANDS = ("demo", "prepare", "knowledge", "train", "evaluate", "predict", "explain", "compare", "bench")


class UserError(Exception):
    """An error whose message is meant for the user as it is (printed without a traceback)."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    from monai_cilmp import __version__

    parser = argparse.ArgumentParser(
        prog="monai-cilmp",
        description="CILMP for MONAI: medical knowledge from LLMs in prompt-tuned CLIP for image classification.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (UserError, FileNotFoundError, ValueError, KeyError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"monai-cilmp {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
