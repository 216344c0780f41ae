"""Networks: CILMP, its ablations and the baselines it is compared with, and the registry of methods by name.

Every network is a :class:`CLIPClassifier` (same constructor core, attributes, ``forward`` and trainable-state
interface), so the same engines train and evaluate all of them; :func:`build_method` builds one by its
command-line name (``"coop"``, ``"cilmp-shallow"``, ...).
"""

from __future__ import annotations

from .base import CLIPClassifier
from .cilmp import CILMP
from .cocoop import CoCoOp
from .coop import CoOp
from .ivlp import IVLP
from .kgcoop import KgCoOp
from .linear_probe import LinearProbe, ProbeInit, extract_features, feature_items
from .methods import METHODS, MethodSpec, build_method, get_method, list_methods, register_method
from .zeroshot import MEDICAL_TEMPLATES, KnowledgeText, ZeroShotCLIP, ZeroShotText, knowledge_prompts, zero_shot_texts

__all__ = [
    "CILMP",
    "CLIPClassifier",
    "CoCoOp",
    "CoOp",
    "IVLP",
    "KgCoOp",
    "KnowledgeText",
    "LinearProbe",
    "MEDICAL_TEMPLATES",
    "METHODS",
    "MethodSpec",
    "ProbeInit",
    "ZeroShotCLIP",
    "ZeroShotText",
    "build_method",
    "extract_features",
    "feature_items",
    "get_method",
    "knowledge_prompts",
    "list_methods",
    "register_method",
    "zero_shot_texts",
]
