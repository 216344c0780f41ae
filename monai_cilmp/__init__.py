"""monai-cilmp: medical knowledge from large language models in prompt-tuned CLIP, as a MONAI extension.

Importing the package registers the project's open_clip configurations (``CILMP-Tiny``) and makes its
networks resolvable by short name in MONAI bundle configs (after ``"imports": ["$import monai_cilmp"]``).
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import knowledge, networks  # noqa: E402
from .networks.backbones import register_model_configs  # noqa: E402

register_model_configs()

# imported on first use, so that `import monai_cilmp` stays light and a bundle expression such as
# `$monai_cilmp.demo.prepare_demo(...)` works whichever config file's "imports" list won the merge
_LAZY_SUBMODULES = ("data", "demo", "engines", "handlers", "metrics", "transforms", "utils")


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["__version__", "knowledge", "networks", *_LAZY_SUBMODULES]
