"""The methods a comparison runs, by the names used on a command line, and how to build each one.

A small registry in the spirit of timm's: every name maps to a :class:`MethodSpec` (the network class, its
constructor defaults, and the facts an engine needs: does it train, does it need a knowledge bank or class
descriptions, does its recipe use Gaussian prompt aggregation, can it train on cached image features).
:func:`build_method` builds the network; unknown names get MONAI's "did you mean" error.

=========================  =========================================================================
name                       network
=========================  =========================================================================
``zero-shot-name``         :class:`ZeroShotCLIP`, bare class names
``zero-shot-template``     :class:`ZeroShotCLIP`, "a photo of a {}."
``zero-shot-ensemble``     :class:`ZeroShotCLIP`, :data:`MEDICAL_TEMPLATES`
``zero-shot-attributes``   :class:`ZeroShotCLIP`, attribute prompts (+ synonyms) from the descriptions
``zero-shot-descriptions`` :class:`ZeroShotCLIP`, the description texts
``linear-probe``           :class:`LinearProbe`, random head, on cached features
``linear-probe-zs``        :class:`LinearProbe`, head initialised from the zero-shot classifier
``coop``                   :class:`CoOp`, 16 unified context tokens
``coop-csc``               :class:`CoOp`, 16 class-specific context tokens
``cocoop``                 :class:`CoCoOp`, 4 tokens from "a photo of a" + meta-network
``kgcoop``                 :class:`KgCoOp`, 4 tokens from "a photo of a", W = 8 (the code's 1 - cosine)
``ivlp``                   :class:`IVLP`, CILMP's deep V-L prompts without knowledge
``cilmp``                  :class:`CILMP`, the paper's defaults
``cilmp-uncond``           :class:`CILMP`, ``conditional=False``
``cilmp-shallow``          :class:`CILMP`, ``knowledge_depth=1``
``cilmp-nogpa``            :class:`CILMP`, trained without GPA (recipe ``gpa_std=0``; the network is ``cilmp``)
``biomedcoop``             :class:`BiomedCoOp`, CoOp + description SCCM and pruned-teacher KDSP
``clip-adapter``           :class:`CLIPAdapter`, residual feature adapter, on cached features
``tip-adapter``            :class:`TipAdapter`, training-free cache of the training features
``tip-adapter-f``          :class:`TipAdapter`, cache keys fine-tuned, on cached features
``lp++``                   :class:`LPPlusPlus`, blended visual/text class weights, on cached features
``prograd``                :class:`ProGrad`, CoOp with prompt-aligned gradients
``maple``                  :class:`MaPLe`, coupled deep V-L prompts
``promptsrc``              :class:`PromptSRC`, deep V-L prompts + consistency terms + GPA
=========================  =========================================================================
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from monai_cilmp.networks.backbone_spec import BackboneSpec
from monai_cilmp.networks.backbones import Backbone

from .base import CLIPClassifier, look_up
from .biomedcoop import BiomedCoOp
from .cilmp import CILMP
from .clip_adapter import CLIPAdapter
from .cocoop import CoCoOp
from .coop import CoOp
from .ivlp import IVLP
from .kgcoop import KgCoOp
from .linear_probe import LinearProbe
from .lp_plus_plus import LPPlusPlus
from .maple import MaPLe
from .prograd import ProGrad
from .promptsrc import PromptSRC
from .tip_adapter import TipAdapter
from .zeroshot import ZeroShotCLIP, knowledge_prompts

__all__ = [
    "METHODS",
    "NETWORK_INPUTS",
    "SPEED_SWITCHES",
    "MethodSpec",
    "build_method",
    "get_method",
    "list_methods",
    "register_method",
]

#: constructor arguments that are the network's inputs, not its settings: the backbone and its options
#: (:class:`~monai_cilmp.networks.BackboneSpec`), the data the bundle wires in (``knowledge``, ``prompts``)
NETWORK_INPUTS = frozenset(
    {"self", "class_names", "backbone", "pretrained", "backbone_options", "knowledge", "prompts"}
)
#: keywords that change how fast a network computes, never what (each checked exact by the network tests)
SPEED_SWITCHES = frozenset({"truncate_context", "shared_prefix"})


def _plain(value: Any) -> Any:
    """``value`` as JSON data (an option enum as its string, a tuple as a list)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class MethodSpec:
    """What a method is and what running it needs.

    Attributes:
        name: the command-line name.
        network: the network class.
        summary: one line for tables and ``--help``.
        kwargs: constructor defaults (overridden by :func:`build_method`'s keywords).
        needs_training: ``False`` for zero-shot methods (evaluate only).
        needs_knowledge: needs a knowledge bank (``knowledge=``).
        uses_descriptions: builds its texts from class descriptions (``descriptions=`` / ``dataset=``; the curated
            ones by default).
        gpa: the recipe uses Gaussian prompt aggregation (otherwise ``gpa_std=0``).
        cached_features: can train on cached image features (:func:`~monai_cilmp.networks.nets.extract_features`).
        knowledge_text: for ``uses_descriptions``: the :class:`~monai_cilmp.networks.nets.KnowledgeText` kind.
        recipe: :class:`~monai_cilmp.engines.TrainingRecipe` fields this method sets (e.g. a linear probe's ``lr``).
    """

    name: str
    network: type[CLIPClassifier]
    summary: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    needs_training: bool = True
    needs_knowledge: bool = False
    uses_descriptions: bool = False
    gpa: bool = False
    cached_features: bool = False
    knowledge_text: str = "attributes"
    recipe: Mapping[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> dict[str, Any]:
        """Every setting of the method's network with its value, as JSON data: the network's keyword defaults (the
        one place they are declared) with :attr:`kwargs` on top; what a run records to rebuild the network, and
        what ``scripts/write_method_configs.py`` writes into the method's bundle overlay."""
        defaults = {
            k: p.default
            for k, p in inspect.signature(self.network.__init__).parameters.items()
            if p.kind is p.KEYWORD_ONLY and k not in NETWORK_INPUTS | SPEED_SWITCHES
        }
        unknown = sorted(set(self.kwargs) - set(defaults))
        if unknown:
            raise ValueError(f"Method '{self.name}' sets {unknown}, which {self.network.__name__} has no keyword for.")
        return {k: _plain(v) for k, v in {**defaults, **self.kwargs}.items()}

    @property
    def recipe_overrides(self) -> dict[str, Any]:
        """Training-recipe fields this method changes (``TrainingRecipe`` names)."""
        return {**({} if self.gpa else {"gpa_std": 0.0}), **self.recipe}


METHODS: dict[str, MethodSpec] = {}

# A head on unit-norm features barely moves at the prompt learners' lr of 0.0025 in a few-shot budget of steps;
# from 0.3 to 10 the demo data's accuracy sits on a plateau, 1.0 is its middle (sweep in docs/compare.md).
LINEAR_PROBE_RECIPE = {"lr": 1.0}
# Tip-Adapter-F as the authors' code trains it: AdamW (lr 0.001, eps 1e-4, torch's default decay 0.01), no warm-up.
# CLIP-Adapter's residual adapter on unit-norm features (ratio 0.2) barely moves below lr 1 with SGD; from 3 to 100
# the demo's 16-shot accuracy sits on a plateau (sweep in docs/compare.md).
TIP_ADAPTER_F_RECIPE = {"optimizer": "adamw", "lr": 0.001, "eps": 1e-4, "weight_decay": 0.01, "warmup_epochs": 0}
CLIP_ADAPTER_RECIPE = {"lr": 10.0}


def register_method(spec: MethodSpec, overwrite: bool = False) -> MethodSpec:
    """Add a method to the registry.

    Raises:
        ValueError: the name is taken and ``overwrite`` is off.
    """
    if spec.name in METHODS and not overwrite:
        raise ValueError(f"A method named '{spec.name}' is already registered.")
    METHODS[spec.name] = spec
    return spec


def list_methods() -> list[str]:
    """The registered method names, in registration order."""
    return list(METHODS)


def get_method(name: str) -> MethodSpec:
    """The spec of ``name``.

    Raises:
        ValueError: unknown name, with a did-you-mean suggestion and the valid names.
    """
    return look_up(str(name), METHODS)


def build_method(
    name: str,
    class_names: Sequence[str],
    backbone: str | BackboneSpec | Backbone = "ViT-B-16",
    pretrained: str | None = "openai",
    *,
    knowledge: Any = None,
    descriptions: Mapping[str, Any] | str | os.PathLike | None = None,
    dataset: str | None = None,
    offline: bool = False,
    cache_dir: str | os.PathLike | None = None,
    **kwargs: Any,
) -> CLIPClassifier:
    """Build the network of method ``name``.

    Pass a loaded :class:`~monai_cilmp.networks.backbones.Backbone` to build several methods on one backbone (the
    networks share its frozen modules; nothing is copied), or a :class:`~monai_cilmp.networks.BackboneSpec` (which
    holds its own ``pretrained``, ``offline``, ``cache_dir`` and ``quick_gelu``).

    Args:
        name: a registered method name (:func:`list_methods`).
        class_names: class names in label order.
        backbone: model name, backbone spec or loaded backbone.
        pretrained: pretrained tag or checkpoint file, for a model name (``None``: random weights).
        knowledge: knowledge bank or its path, for methods that need one (ignored by the others).
        descriptions: class descriptions (mapping or file) for methods that use them; default the curated ones.
        dataset: registry name of the dataset, to pick its curated descriptions.
        offline: never download backbone weights (for a model name).
        cache_dir: where backbone weights are cached (for a model name).
        **kwargs: constructor keywords overriding the method's defaults.

    Raises:
        ValueError: unknown method, or a method that needs a knowledge bank without one.
    """
    spec = get_method(name)
    options = {**spec.kwargs, **kwargs}
    if spec.needs_knowledge:
        if knowledge is None:
            raise ValueError(
                f"Method '{spec.name}' needs a knowledge bank: build one with `monai-cilmp knowledge extract` and "
                "pass its path as knowledge."
            )
        options["knowledge"] = knowledge
    if spec.uses_descriptions and "prompts" not in options:
        options["prompts"] = knowledge_prompts(class_names, descriptions, dataset, spec.knowledge_text)
    if isinstance(backbone, str):
        options = {"offline": offline, "cache_dir": cache_dir, **options}
    return spec.network(class_names, backbone=backbone, pretrained=pretrained, **options)


for _spec in (
    MethodSpec("zero-shot-name", ZeroShotCLIP, "zero-shot CLIP, bare class names", {"text": "name"}, False),
    MethodSpec("zero-shot-template", ZeroShotCLIP, "zero-shot CLIP, 'a photo of a {}.'", {"text": "template"}, False),
    MethodSpec(
        "zero-shot-ensemble", ZeroShotCLIP, "zero-shot CLIP, medical template ensemble", {"text": "ensemble"}, False
    ),
    MethodSpec(
        "zero-shot-attributes",
        ZeroShotCLIP,
        "zero-shot CLIP, attribute prompts (averaged over synonyms)",
        {"text": "descriptions"},
        False,
        uses_descriptions=True,
    ),
    MethodSpec(
        "zero-shot-descriptions",
        ZeroShotCLIP,
        "zero-shot CLIP, class description texts",
        {"text": "descriptions"},
        False,
        uses_descriptions=True,
        knowledge_text="descriptions",
    ),
    MethodSpec(
        "linear-probe",
        LinearProbe,
        "linear probe on frozen image features",
        cached_features=True,
        recipe=LINEAR_PROBE_RECIPE,
    ),
    MethodSpec(
        "linear-probe-zs",
        LinearProbe,
        "linear probe initialised from zero-shot CLIP",
        {"init": "zero-shot"},
        cached_features=True,
        recipe=LINEAR_PROBE_RECIPE,
    ),
    MethodSpec("coop", CoOp, "CoOp, 16 unified context tokens", {"n_ctx": 16}),
    MethodSpec("coop-csc", CoOp, "CoOp, 16 class-specific context tokens", {"n_ctx": 16, "class_specific": True}),
    MethodSpec("cocoop", CoCoOp, "CoCoOp, image-conditioned context"),
    MethodSpec("kgcoop", KgCoOp, "KgCoOp, CoOp + knowledge-guided regulariser"),
    MethodSpec("ivlp", IVLP, "deep vision-language prompts without knowledge", gpa=True),
    MethodSpec("cilmp", CILMP, "CILMP", needs_knowledge=True, gpa=True),
    MethodSpec(
        "cilmp-uncond",
        CILMP,
        "CILMP without image conditioning",
        {"conditional": False},
        needs_knowledge=True,
        gpa=True,
    ),
    MethodSpec(
        "cilmp-shallow",
        CILMP,
        "CILMP, knowledge at the input layer only",
        {"knowledge_depth": 1},
        needs_knowledge=True,
        gpa=True,
    ),
    MethodSpec("cilmp-nogpa", CILMP, "CILMP trained without GPA", needs_knowledge=True, gpa=False),
    MethodSpec(
        "biomedcoop",
        BiomedCoOp,
        "BiomedCoOp, CoOp + LLM-description consistency and pruned distillation",
        uses_descriptions=True,
        knowledge_text="all",
    ),
    MethodSpec(
        "clip-adapter",
        CLIPAdapter,
        "CLIP-Adapter, residual adapter on image features",
        cached_features=True,
        recipe=CLIP_ADAPTER_RECIPE,
    ),
    MethodSpec(
        "tip-adapter",
        TipAdapter,
        "Tip-Adapter, training-free cache of the few-shot features",
        {"fine_tune": False},
        cached_features=True,
    ),
    MethodSpec(
        "tip-adapter-f",
        TipAdapter,
        "Tip-Adapter-F, cache keys fine-tuned",
        {"fine_tune": True},
        cached_features=True,
        recipe=TIP_ADAPTER_F_RECIPE,
    ),
    MethodSpec(
        "lp++",
        LPPlusPlus,
        "LP++, linear probe with text-blended class weights",
        cached_features=True,
        recipe=LINEAR_PROBE_RECIPE,
    ),
    MethodSpec("prograd", ProGrad, "ProGrad, CoOp with prompt-aligned gradients"),
    MethodSpec("maple", MaPLe, "MaPLe, coupled deep vision-language prompts"),
    MethodSpec("promptsrc", PromptSRC, "PromptSRC, self-regulated deep prompts", gpa=True, recipe={"gpa_std": 1.0}),
):
    register_method(_spec)
del _spec
