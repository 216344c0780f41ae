"""The ``monai-cilmp`` command line: thin fronts over the package and its bundles.

Each sub-command lives in its own module of this package and exposes ``add_parser(subparsers)``, which
registers the command and sets ``func`` (called with the parsed arguments, returning an exit code). Only the module
of the command being run is imported (``monai-cilmp --help`` imports none), and command modules import torch, MONAI
and open_clip inside their ``run`` functions, so that ``--help`` answers at once.

Errors: a failure prints one sentence (the root cause, not the MONAI config machinery that wrapped it) and exits
with status 2 for a user error, 1 otherwise; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from monai_cilmp import __version__

__all__ = ["COMMANDS", "DefaultsHelpFormatter", "UserError", "build_parser", "main", "plain_text", "user_message"]

#: module name under monai_cilmp.cli -> one line for ``monai-cilmp --help``, in the order they are listed
COMMANDS = {
    "demo": "run the offline demo end to end (synthetic lesions, tiny CLIP, MiniLM knowledge)",
    "prepare": "build MONAI datalists from downloads, folders, CSV files; few-shot and base/novel splits",
    "knowledge": "build LLM knowledge banks and attribute prompts, show banks",
    "train": "train CILMP (or a baseline) on a datalist and a knowledge bank",
    "evaluate": "evaluate a trained run on a split (accuracy, balanced accuracy, macro-F1, AUC, kappa, confusion)",
    "predict": "predict images (files or folders) with a trained run; one JSON line per image",
    "export": "export a trained run's network as TorchScript or ONNX and check it against PyTorch",
    "explain": "saliency maps and knowledge-word attributions of a trained run's predictions",
    "compare": "compare methods (zero-shot, linear probe, CoOp, ..., CILMP) over shots and seeds; resumable",
    "bench": "benchmark CILMP (random weights) and print a JSON report",
}


def plain_text(doc: str) -> str:
    """A module docstring as ``--help`` text: reST's double back-quotes and ``::`` literal markers removed."""
    return doc.replace("``", "").replace("::\n", ":\n")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's formatter that shows each option's default, except where there is none to show (``None``) or the
    help text already says it ("(default: ...)")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or "(default" in text:
            return text
        return super()._get_help_string(action)


class UserError(Exception):
    """An error whose message is meant for the user as it is (printed without a traceback)."""


def _command_in(argv: Sequence[str]) -> str | None:
    """The first argument that names a command (options such as ``--debug`` may come before it)."""
    for arg in argv:
        if arg in COMMANDS:
            return arg
        if not arg.startswith("-"):
            return None
    return None


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser; only ``commands`` (default: all) get their full sub-parser, the others a stub."""

    parser = argparse.ArgumentParser(
        prog="monai-cilmp",
        description="CILMP for MONAI: medical knowledge from LLMs in prompt-tuned CLIP for image classification.",
        epilog="Run `monai-cilmp COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, summary in COMMANDS.items():
        if commands is None or name in commands:
            importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
        else:
            subparsers.add_parser(name, help=summary, add_help=False)
    return parser


def _chain(error: BaseException) -> list[BaseException]:
    seen: set[int] = set()
    out: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def _raised_in_project(error: BaseException) -> bool:
    """Whether the innermost frame of the error's traceback is in this package (whose errors are sentences)."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    package = str(Path(__file__).resolve().parents[1])
    return str(Path(tb.tb_frame.f_code.co_filename).resolve()).startswith(package)


_USER_ERRORS = (UserError, FileNotFoundError, ValueError, KeyError, PermissionError, NotImplementedError)


def user_message(error: BaseException) -> tuple[str, bool]:
    """The one sentence to show for ``error`` and whether it is the user's to fix (else an unexpected failure).

    MONAI's config machinery wraps the exceptions of the code it runs ("Failed to instantiate component ...",
    "Failed to evaluate ..."); the sentence is that of the innermost exception raised by this package, else of the
    innermost exception at all.
    """
    # heavy: loaded only when an error is reported (`--help` and the parser load neither torch nor MONAI)
    from monai_cilmp.transforms.readers import ImageReadError, reader_error

    image = reader_error(error)  # an image the readers refused, also from inside a DataLoader worker
    if isinstance(image, ImageReadError) or (image is not None and _raised_in_project(image)):
        return " ".join(str(image).split()), True
    chain = _chain(error)
    ours = [e for e in chain if isinstance(e, _USER_ERRORS) and _raised_in_project(e)]
    chosen = ours[-1] if ours else chain[-1]
    if isinstance(chosen, OSError) and chosen.errno is not None and not ours:
        import errno as errno_codes

        where = f" '{chosen.filename}'" if chosen.filename else ""
        if chosen.errno == errno_codes.ENOSPC:
            return f"No space left on device while writing{where}: free some space and run again.", True
        if chosen.errno in (errno_codes.EACCES, errno_codes.EROFS, errno_codes.EPERM):
            return f"Cannot write to{where} ({chosen.strerror}): choose a writable location.", True
    message = chosen.args[0] if isinstance(chosen, KeyError) and chosen.args else chosen
    text = " ".join(str(message).split()) if "\n" not in str(message) else str(message).strip()
    if ours or isinstance(chosen, _USER_ERRORS):
        return text, True
    return f"{type(chosen).__name__}: {text} (run with --debug for the traceback)", False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    # OpenMP threads that spin while they wait made training several times slower on a loaded small machine
    # (scripts/bench_threads_workers.py); OpenMP reads the policy once, when torch is imported, which is after this line
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, also after the command
    argv = [a for a in argv if a != "--debug"]
    command = _command_in(argv)
    parser = build_parser([command] if command else [])
    args = parser.parse_args(argv)
    args.argv = argv  # a command that re-launches itself (torchrun) repeats it
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from monai_cilmp.utils.signals import process_signal_handlers

    try:
        # the command owns the process: Ctrl-C and SIGTERM unwind once (DataLoader workers end, temporary files go,
        # the run folder's lock is released), a second one ends the process at once; put back when it returns
        with process_signal_handlers():
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(
            f"monai-cilmp {args.command}: interrupted; a training run can be continued with --resume.", file=sys.stderr
        )
        return 130
    except Exception as e:
        if debug or os.environ.get("MONAI_CILMP_DEBUG"):
            raise
        message, users = user_message(e)
        print(f"monai-cilmp {args.command}: error: {message}", file=sys.stderr)
        return 2 if users else 1


if __name__ == "__main__":
    sys.exit(main())
