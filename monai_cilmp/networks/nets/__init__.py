"""Networks: CILMP, its ablations and the baselines it is compared with, and the registry of methods by name.

Every network is a :class:`CLIPClassifier` (same constructor core, attributes, ``forward`` and trainable-state
interface), so the same engines train and evaluate all of them; :func:`build_method` builds one by its
command-line name (``"coop"``, ``"cilmp-shallow"``, ...).
"""

from __future__ import annotations

from .base import CLIPClassifier, TrainableState
from .biomedcoop import BiomedCoOp, select_prompt_sets
from .cilmp import CILMP
from .clip_adapter import CLIPAdapter
from .cocoop import CoCoOp
from .coop import CoOp
from .distillation import teacher_kl
from .feature_head import FrozenFeatureClassifier
from .ivlp import IVLP
from .kgcoop import KgCoOp
from .linear_probe import LinearProbe, ProbeFit, ProbeInit, extract_features, feature_items, search_logistic_regression
from .lp_plus_plus import LPPlusPlus, LPPlusPlusFit, lp_plus_plus_init, lp_plus_plus_step_sizes
from .maple import MaPLe
from .methods import (
    METHODS,
    NETWORK_INPUTS,
    SPEED_SWITCHES,
    MethodSpec,
    build_method,
    get_method,
    list_methods,
    register_method,
)
from .prograd import ProGrad
from .promptsrc import PromptSRC
from .tip_adapter import TipAdapter, cache_logits
from .zeroshot import MEDICAL_TEMPLATES, KnowledgeText, ZeroShotCLIP, ZeroShotText, knowledge_prompts, zero_shot_texts

__all__ = [
    "BiomedCoOp",
    "CILMP",
    "CLIPAdapter",
    "CLIPClassifier",
    "CoCoOp",
    "CoOp",
    "FrozenFeatureClassifier",
    "IVLP",
    "KgCoOp",
    "KnowledgeText",
    "LPPlusPlus",
    "LPPlusPlusFit",
    "LinearProbe",
    "MEDICAL_TEMPLATES",
    "METHODS",
    "NETWORK_INPUTS",
    "MaPLe",
    "MethodSpec",
    "ProGrad",
    "ProbeFit",
    "SPEED_SWITCHES",
    "ProbeInit",
    "PromptSRC",
    "TipAdapter",
    "TrainableState",
    "ZeroShotCLIP",
    "ZeroShotText",
    "build_method",
    "cache_logits",
    "extract_features",
    "feature_items",
    "get_method",
    "knowledge_prompts",
    "list_methods",
    "lp_plus_plus_init",
    "lp_plus_plus_step_sizes",
    "search_logistic_regression",
    "register_method",
    "select_prompt_sets",
    "teacher_kl",
    "zero_shot_texts",
]
