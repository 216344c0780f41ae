"""monai-cilmp: medical knowledge from large language models in prompt-tuned CLIP, as a MONAI extension.

Sub-packages are imported on first use (``monai_cilmp.networks``, ``monai_cilmp.engines``, ...), so that
``import monai_cilmp`` and the command line's ``--help`` stay light. Importing ``monai_cilmp.networks`` registers the
project's open_clip configurations (``CILMP-Tiny``); bundle configs name components by full dotted path
(``monai_cilmp.networks.nets.CILMP``), which works whichever config file's ``imports`` list won the merge.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY_SUBMODULES = (
    "compare",
    "data",
    "demo",
    "engines",
    "handlers",
    "knowledge",
    "metrics",
    "networks",
    "transforms",
    "utils",
)


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["__version__", *_LAZY_SUBMODULES]
