"""Zero-shot CLIP: classify by the similarity of an image to fixed class texts; nothing trains.

Each class is the normalised mean of the normalised text embeddings of its prompt variants (CLIP's prompt
ensembling). Four kinds of text (:class:`ZeroShotText`):

- ``name``: the bare class name, ``"melanoma"``;
- ``template``: one template, ``"a photo of a melanoma."``;
- ``ensemble``: a small list of medical templates (:data:`MEDICAL_TEMPLATES`);
- ``descriptions``: any texts per class, e.g. attribute prompts ("pink, round bump in the rectum"; Qin et al.,
  ICLR 2023) or curated descriptions; :func:`knowledge_prompts` and :meth:`ZeroShotCLIP.from_knowledge` get them
  from :mod:`monai_cilmp.knowledge`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_cilmp.knowledge import ClassDescription, describe, load_description_file, zero_shot_prompts
from monai_cilmp.knowledge.attributes import ATTRIBUTE_PROMPTS_FORMAT
from monai_cilmp.networks.backbone_spec import BackboneLike
from monai_cilmp.networks.backbones import Backbone
from monai_cilmp.networks.blocks.towers import build_text_tower, build_vision_tower

from .base import CLIPClassifier, OptionEnum, as_plain_tensor, look_up

__all__ = [
    "DEFAULT_TEMPLATE",
    "KnowledgeText",
    "MEDICAL_TEMPLATES",
    "ZeroShotCLIP",
    "ZeroShotText",
    "knowledge_prompts",
    "zero_shot_texts",
]

DEFAULT_TEMPLATE = "a photo of a {}."

#: A small template ensemble for medical images (our own wording).
MEDICAL_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a medical image of {}.",
    "a medical image showing {}.",
    "a clinical photo of {}.",
    "an image of a patient with {}.",
    "a close-up image of {}.",
    "a scan showing {}.",
    "an example of {}.",
)


class ZeroShotText(OptionEnum):
    """Which class texts a zero-shot classifier uses."""

    NAME = "name"
    TEMPLATE = "template"
    ENSEMBLE = "ensemble"
    DESCRIPTIONS = "descriptions"


class KnowledgeText(OptionEnum):
    """Which texts :func:`knowledge_prompts` takes from class descriptions."""

    ATTRIBUTES = "attributes"  # hand-written attribute prompts with the class name and each synonym
    DESCRIPTIONS = "descriptions"  # the description text
    ALL = "all"  # both


def _words(name: str) -> str:
    return str(name).replace("_", " ")


def zero_shot_texts(
    class_names: Sequence[str],
    text: str = ZeroShotText.TEMPLATE,
    template: str = DEFAULT_TEMPLATE,
    templates: Sequence[str] | None = None,
    prompts: Mapping[str, Sequence[str] | str] | None = None,
) -> dict[str, list[str]]:
    """The texts of every class for a :class:`ZeroShotText` kind.

    Args:
        class_names: the classes.
        text: ``"name"``, ``"template"``, ``"ensemble"`` or ``"descriptions"``.
        template: the template of ``"template"`` (``{}`` is the class name).
        templates: the templates of ``"ensemble"`` (default :data:`MEDICAL_TEMPLATES`).
        prompts: class -> text(s), for ``"descriptions"``.

    Raises:
        ValueError: unknown kind (with a did-you-mean), ``descriptions`` without ``prompts`` or missing classes,
            a template without ``{}``.
    """
    kind = look_up(text, ZeroShotText)
    if kind == ZeroShotText.NAME:
        return {n: [_words(n)] for n in class_names}
    if kind in (ZeroShotText.TEMPLATE, ZeroShotText.ENSEMBLE):
        chosen = [template] if kind == ZeroShotText.TEMPLATE else list(templates or MEDICAL_TEMPLATES)
        if not chosen or any("{}" not in t for t in chosen):
            raise ValueError(f"Zero-shot templates must each contain '{{}}' for the class name, got {chosen}.")
        return {n: [t.format(_words(n)) for t in chosen] for n in class_names}
    if prompts is None:
        raise ValueError("Zero-shot text 'descriptions' needs prompts: a mapping class -> texts.")
    missing = [n for n in class_names if not prompts.get(n)]
    if missing:
        raise ValueError(f"The zero-shot prompts lack texts for the classes {missing}.")
    return {n: [prompts[n]] if isinstance(prompts[n], str) else [str(t) for t in prompts[n]] for n in class_names}


def _description_variants(description: Any, kind: KnowledgeText) -> tuple[list[str], bool]:
    """Texts of one :class:`~monai_cilmp.knowledge.ClassDescription` and whether it lacked attributes."""
    attributes = []
    if getattr(description, "attributes", None):
        nouns = [None, *description.synonyms]
        attributes = list(dict.fromkeys(description.attribute_prompt(noun) for noun in nouns))
    if kind == KnowledgeText.DESCRIPTIONS:
        return [description.text], False
    if kind == KnowledgeText.ATTRIBUTES:
        return (attributes, False) if attributes else ([description.text], True)
    return [*attributes, description.text], not attributes


def knowledge_prompts(
    class_names: Sequence[str],
    descriptions: Mapping[str, Any] | str | os.PathLike | None = None,
    dataset: str | None = None,
    kind: str = KnowledgeText.ATTRIBUTES,
) -> dict[str, list[str]]:
    """Zero-shot texts per class from the project's medical knowledge.

    Sources, first that applies:

    - ``descriptions`` as a file written by ``monai-cilmp knowledge attributes`` (masked-LM / VQA attribute
      prompts): all its prompts per class (``kind`` does not apply);
    - ``descriptions`` as a descriptions JSON file (:func:`~monai_cilmp.knowledge.load_description_file`) or a
      mapping class -> :class:`~monai_cilmp.knowledge.ClassDescription`, text or list of texts;
    - otherwise the curated descriptions (:func:`~monai_cilmp.knowledge.describe`, of ``dataset`` when given).

    From a description, ``kind="attributes"`` takes the hand-written attribute prompt with the class name and with
    each synonym (Qin et al.'s attribute + synonym prompts); a class without attributes falls back to its
    description text (logged). ``"descriptions"`` takes the description text, ``"all"`` both.

    Raises:
        ValueError: a class without texts, an unknown ``kind``, an unreadable file.
    """

    kind = look_up(kind, KnowledgeText)
    names = [str(n) for n in class_names]
    if isinstance(descriptions, (str, os.PathLike)):
        path = Path(descriptions)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raw = None
        if isinstance(raw, dict) and raw.get("format") == ATTRIBUTE_PROMPTS_FORMAT:
            return zero_shot_texts(names, ZeroShotText.DESCRIPTIONS, prompts=zero_shot_prompts(raw))
        descriptions = load_description_file(path)
    if descriptions is None:
        descriptions = describe(names, dataset=dataset)
    out: dict[str, list[str]] = {}
    plain = []
    for name in names:
        value = descriptions.get(name)
        if isinstance(value, ClassDescription):
            out[name], lacked = _description_variants(value, kind)
            if lacked:
                plain.append(name)
        elif isinstance(value, str):
            out[name] = [value]
        elif value:
            out[name] = [str(v) for v in value]
    if plain:
        logging.getLogger(__name__).info("No attribute phrases for %s: their description texts are used.", plain)
    return zero_shot_texts(names, ZeroShotText.DESCRIPTIONS, prompts=out)


class ZeroShotCLIP(CLIPClassifier):
    """Zero-shot CLIP classifier: fixed class text embeddings, no trained parameters.

    The class embeddings are computed once, at construction; the text encoder is not kept.

    Args:
        class_names: class names in label order; ``_`` reads as a space.
        backbone: the frozen backbone: a :class:`~monai_cilmp.networks.BackboneSpec`, a loaded ``Backbone``, or a
            model name with ``pretrained`` and ``backbone_options`` (:func:`~monai_cilmp.networks.resolve_backbone`).
        text: a :class:`ZeroShotText` kind; default ``"descriptions"`` when ``prompts`` are given, else
            ``"template"``.
        template: the single template (``{}`` is the class name).
        templates: the ensemble's templates (default :data:`MEDICAL_TEMPLATES`).
        prompts: class -> text or texts (``"descriptions"``), or a file :func:`knowledge_prompts` reads.

    Attributes:
        prompts: the texts used per class.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        backbone: BackboneLike = "ViT-B-16",
        pretrained: str | None = "openai",
        *,
        text: str | None = None,
        template: str = DEFAULT_TEMPLATE,
        templates: Sequence[str] | None = None,
        prompts: Mapping[str, Sequence[str] | str] | str | os.PathLike | None = None,
        **backbone_options: Any,
    ) -> None:
        super().__init__()
        backbone = self._init_classifier(class_names, backbone, pretrained, **backbone_options)
        if isinstance(prompts, (str, os.PathLike)):
            prompts = knowledge_prompts(self.class_names, prompts)
        self.text = look_up(text or ("descriptions" if prompts is not None else "template"), ZeroShotText)
        self.prompts = zero_shot_texts(self.class_names, self.text, template, templates, prompts)
        self.vision_tower = build_vision_tower(backbone.model)
        self.text_tower = build_text_tower(backbone.model, backbone.tokenizer)
        self.register_buffer("class_embeddings", self._class_text_embeddings(self.prompts))
        del self.text_tower  # the class embeddings are all this network needs of the text side

    @classmethod
    def from_knowledge(
        cls,
        class_names: Sequence[str],
        backbone: str | Backbone = "ViT-B-16",
        pretrained: str | None = "openai",
        *,
        descriptions: Mapping[str, Any] | str | os.PathLike | None = None,
        dataset: str | None = None,
        kind: str = KnowledgeText.ATTRIBUTES,
        **kwargs: Any,
    ) -> ZeroShotCLIP:
        """A zero-shot classifier on the texts of :func:`knowledge_prompts` (attribute prompts by default)."""
        prompts = knowledge_prompts(class_names, descriptions, dataset, kind)
        return cls(class_names, backbone, pretrained, text=ZeroShotText.DESCRIPTIONS, prompts=prompts, **kwargs)

    def text_features(self) -> torch.Tensor:
        """The normalised class embeddings ``(C, embed_dim)``."""
        return self.class_embeddings

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, C)`` for a normalised image batch ``(B, 3, H, W)``."""
        return self._logits(self.encode_image(as_plain_tensor(images)), self.class_embeddings)
