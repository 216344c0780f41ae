"""monai-cilmp: medical knowledge from large language models in prompt-tuned CLIP, as a MONAI extension.

Importing the package registers the project's open_clip configurations (``CILMP-Tiny``) and makes its
networks resolvable by short name in MONAI bundle configs (after ``"imports": ["$import monai_cilmp"]``).
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import knowledge, networks  # noqa: E402
from .networks.backbones import register_model_configs  # noqa: E402

register_model_configs()

__all__ = ["__version__", "knowledge", "networks"]
