"""The offline demo: a synthetic dermoscopy-like set, a tiny backbone made meaningful, and CILMP trained on both.

In the order the demo runs them:

- :func:`make_synthetic_dataset`: images (a folder per class), a MONAI datalist and a descriptions file;
- :func:`pretrain_tiny_clip`: a short contrastive pre-training of ``CILMP-Tiny`` on synthetic image-caption pairs,
  saved for ``load_backbone("CILMP-Tiny", path)``;
- knowledge extraction with the embedded MiniLM (``monai_cilmp.knowledge.extract_knowledge``);
- :func:`zero_shot_baselines`: the backbone's zero-shot accuracy (:class:`~monai_cilmp.networks.nets.ZeroShotCLIP`);
- CILMP training and evaluation (``monai_cilmp.engines``).

The CILMP bundle's ``configs/demo.json`` runs all of it (see :mod:`.pipeline`); so does ``monai-cilmp demo``.
"""

from __future__ import annotations

from .pipeline import BACKBONE_FILE, MANIFEST_FILE, demo_report, prepare_demo, zero_shot_baselines
from .pretrain import PretrainResult, pretrain_tiny_clip, read_pretrain_info
from .synthetic import SYNTHETIC_CLASSES, SyntheticClass, make_synthetic_dataset

__all__ = [
    "BACKBONE_FILE",
    "MANIFEST_FILE",
    "SYNTHETIC_CLASSES",
    "PretrainResult",
    "SyntheticClass",
    "make_synthetic_dataset",
    "pretrain_tiny_clip",
    "demo_report",
    "prepare_demo",
    "read_pretrain_info",
    "zero_shot_baselines",
]
