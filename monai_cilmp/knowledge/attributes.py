"""Attribute prompts (Qin et al., ICLR 2023): colour, shape, location and texture words per class, composed into text.

A bare class name transfers badly to medical images; describing the object with attributes that natural-image
pre-training understands ("pink, round bump in the rectum") works much better. Three automatic generators:

- :class:`MaskedLMAttributes`: a masked language model fills templates such as "The typical color of {c} is
  [MASK]."; the top-k whole words, without sub-word pieces, punctuation and stop-words, are the candidates, and
  the k-th prompt combines the k-th filler of every attribute.
- :class:`~monai_cilmp.knowledge.vqa.VQAAttributes`: a visual-question-answering model answers "What color is
  this {c}?" for each image.
- the hybrid (:data:`HYBRID_SOURCES`): colour and shape from VQA, location (and texture) from the masked LM.

:func:`attribute_prompts` runs them and returns JSON-ready results per class (and per image for VQA) with each
value's source and score; the result's ``description`` per class makes it a descriptions file for
``monai-cilmp knowledge extract --descriptions`` and :func:`zero_shot_prompts` gives all prompts for ensembling.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from monai.utils import StrEnum, look_up_option

from monai_cilmp.utils.files import read_json, write_json

from .loading import load_pretrained

__all__ = [
    "ATTRIBUTES",
    "ATTRIBUTE_PROMPTS_FORMAT",
    "Attribute",
    "AttributeValue",
    "HYBRID_SOURCES",
    "MLM_TEMPLATES",
    "MaskedLMAttributes",
    "attribute_prompts",
    "compose_prompt",
    "load_attribute_prompts",
    "save_attribute_prompts",
    "stop_words",
    "zero_shot_prompts",
]

ATTRIBUTE_PROMPTS_FORMAT = "monai_cilmp.attribute_prompts"


class ImageAttributeSource(Protocol):
    """What :func:`attribute_prompts` asks of a visual-question-answering source
    (:class:`~monai_cilmp.knowledge.vqa.VQAAttributes`; a protocol, so that this module does not import it)."""

    def describe(self, attributes: Sequence[str]) -> dict[str, Any]: ...

    def image_attributes(
        self, paths: Sequence[str], class_name: str, attributes: Sequence[str], progress: bool = False
    ) -> Any: ...


class Attribute(StrEnum):
    """The attributes an attribute prompt describes."""

    COLOUR = "colour"
    SHAPE = "shape"
    LOCATION = "location"
    TEXTURE = "texture"


ATTRIBUTES: tuple[str, ...] = tuple(a.value for a in Attribute)
ATTRIBUTE_ORDER = ("colour", "shape", "texture", "location")

MLM_TEMPLATES: dict[str, str] = {
    Attribute.COLOUR: "The typical color of {name} is {mask}.",
    Attribute.SHAPE: "The typical shape of {name} is {mask}.",
    Attribute.LOCATION: "The location of {name} is at {mask}.",
    Attribute.TEXTURE: "The typical texture of {name} is {mask}.",
}
"""Fill-mask templates (Qin et al.'s wording; ``{mask}`` becomes the model's mask token)."""

HYBRID_SOURCES: dict[str, str] = {
    Attribute.COLOUR: "vqa",
    Attribute.SHAPE: "vqa",
    Attribute.LOCATION: "mlm",
    Attribute.TEXTURE: "mlm",
}
"""Where the hybrid generator takes each attribute from: what an image shows from VQA, the rest from the MLM."""

_PREPOSITIONS = (
    "in",
    "on",
    "at",
    "near",
    "around",
    "along",
    "within",
    "inside",
    "over",
    "under",
    "below",
    "above",
    "between",
    "among",
    "across",
    "throughout",
    "beside",
    "behind",
    "through",
)


@dataclass(frozen=True)
class AttributeValue:
    """One attribute value with its origin.

    Attributes:
        value: the words (``"pink"``, ``"round"``, ``"colon"``).
        source: ``"mlm"``, ``"vqa"`` or ``"curated"``.
        score: the masked LM's probability of the word; for VQA, the model's answer score (mean over the images
            that gave the answer, for a class-level value); ``None`` when the model gives none.
        support: for a class-level VQA value, the number of the class's images that gave it.
    """

    value: str
    source: str
    score: float | None = None
    support: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "source": self.source, "score": self.score}
        if self.support is not None:
            out["support"] = self.support
        return out


# scikit-learn's stop-word list also holds content words that are good attribute values ("thick", "bottom")
_ATTRIBUTE_WORDS = frozenset({"top", "bottom", "front", "back", "side", "thick", "thin", "full", "empty"})


def stop_words() -> frozenset[str]:
    """English stop-words that are never attribute values: scikit-learn's list without a few attribute words."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) - _ATTRIBUTE_WORDS


def _location_phrase(location: str) -> str:
    location = location.strip()
    if location.split(" ", 1)[0].lower() in _PREPOSITIONS:
        return location
    return f"in {location}" if location.lower().startswith("the ") else f"in the {location}"


def compose_prompt(noun: str, attributes: Mapping[str, Any]) -> str:
    """Compose ``"{colour}, {shape} {noun} with {texture} texture in the {location}"``; missing parts are left out.

    Args:
        noun: the word for the object (class name or a synonym).
        attributes: attribute name -> words (or :class:`AttributeValue`, or ``None``); a location that starts with a
            preposition ("on the colon wall") is kept as it is, otherwise it reads "in the <location>".

    Returns:
        the prompt text, e.g. ``"pink, round polyp with smooth texture in the rectum"``.
    """

    def get(name: str) -> str | None:
        value = attributes.get(name)
        value = value.value if isinstance(value, AttributeValue) else value
        return (str(value).strip() or None) if value is not None else None

    colour, shape, texture, location = (get(a) for a in ATTRIBUTE_ORDER)
    adjectives = ", ".join(a for a in (colour, shape) if a)
    text = f"{adjectives} {noun}" if adjectives else str(noun)
    if texture:
        text += f" with {texture} texture"
    if location:
        text += f" {_location_phrase(location)}"
    return text


class MaskedLMAttributes:
    """Attribute words from a masked language model (any fill-mask model of transformers).

    Args:
        model: a masked LM (``AutoModelForMaskedLM``) in eval mode.
        tokenizer: its tokenizer (must have a mask token).
        provenance: what was loaded (see :func:`~monai_cilmp.knowledge.loading.load_pretrained`).
        templates: attribute -> template with ``{name}`` and ``{mask}``; default :data:`MLM_TEMPLATES`.

    Raises:
        ValueError: the tokenizer has no mask token.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        provenance: Mapping[str, Any] | None = None,
        templates: Mapping[str, str] | None = None,
    ) -> None:
        if tokenizer.mask_token is None:
            raise ValueError(f"{type(tokenizer).__name__} has no mask token: give a fill-mask (masked LM) model.")
        self.model, self.tokenizer = model, tokenizer
        self.provenance = dict(provenance or {"source_model": getattr(model, "name_or_path", type(model).__name__)})
        self.templates = dict(templates or MLM_TEMPLATES)
        self._stop_words = stop_words()
        self._special_ids = set(tokenizer.all_special_ids)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = "fp32",
        revision: str | None = None,
        trust_remote_code: bool = False,
        offline: bool = False,
        templates: Mapping[str, str] | None = None,
    ) -> MaskedLMAttributes:
        """Load a fill-mask model (a local folder or Hugging Face id, e.g. PubMedBERT as in Qin et al.).

        Raises:
            FileNotFoundError: the model cannot be found or downloaded.
        """
        from transformers import AutoModelForMaskedLM

        model, tokenizer, provenance = load_pretrained(
            name_or_path,
            AutoModelForMaskedLM,
            device=device,
            dtype=dtype,
            revision=revision,
            trust_remote_code=trust_remote_code,
            offline=offline,
        )
        return cls(model, tokenizer, provenance, templates)

    def _starts_word(self, piece: str) -> bool:
        """Whether a vocabulary piece begins a word (not a WordPiece ``##`` or BPE/SentencePiece continuation)."""
        # the decoder of every tokenizer family puts a space between "a" and a word-initial piece, and none before a
        # continuation ("##ing", BPE "ing" without "Ġ", SentencePiece "ing" without "▁")
        return self.tokenizer.convert_tokens_to_string(["a", piece]).startswith("a ")

    def whole_word(self, token_id: int, exclude: frozenset[str] = frozenset()) -> str | None:
        """The lower-case word of a vocabulary entry, or ``None`` when it is no attribute word.

        Refused: special tokens, sub-word pieces, anything not purely alphabetic (punctuation, digits), single
        letters, stop-words and the words of ``exclude`` (the template's and the class name's own words).
        """
        if token_id in self._special_ids:
            return None
        piece = self.tokenizer.convert_ids_to_tokens(int(token_id))
        if not isinstance(piece, str) or piece.startswith("##") or not self._starts_word(piece):
            return None
        word = self.tokenizer.convert_tokens_to_string([piece]).strip().lower()
        if len(word) < 2 or not word.isalpha() or word in self._stop_words or word in exclude:
            return None
        return word

    @torch.no_grad()
    def fill(
        self,
        class_names: Sequence[str],
        attributes: Sequence[str] = ATTRIBUTES,
        top_k: int = 3,
        candidates: int = 200,
        batch_size: int = 16,
        progress: bool = False,
    ) -> dict[str, dict[str, list[AttributeValue]]]:
        """The top-``top_k`` attribute words per class and attribute, best first.

        Args:
            class_names: the classes (their names fill ``{name}``; ``_`` reads as a space).
            attributes: which attributes (keys of the templates).
            top_k: words kept per attribute.
            candidates: how many of the model's best tokens are examined before filtering.
            batch_size: templates per forward pass.
            progress: show a progress bar.

        Returns:
            ``{class: {attribute: [AttributeValue, ...]}}`` (fewer than ``top_k`` values when the filter leaves
            fewer among the candidates).

        Raises:
            ValueError: an unknown attribute or a template without exactly one mask.
        """
        from tqdm.auto import tqdm  # disable=None: no bar when stderr is not a terminal (logs)

        attributes = [look_up_option(a, tuple(self.templates)) for a in attributes]
        jobs = [(c, a) for c in class_names for a in attributes]
        texts = [self.templates[a].format(name=c.replace("_", " "), mask=self.tokenizer.mask_token) for c, a in jobs]
        device = next(self.model.parameters()).device
        out: dict[str, dict[str, list[AttributeValue]]] = {c: {} for c in class_names}
        bar = tqdm(total=len(jobs), desc="fill-mask", unit="template", disable=None if progress else True)
        for start in range(0, len(jobs), batch_size):
            batch = self.tokenizer(texts[start : start + batch_size], padding=True, return_tensors="pt").to(device)
            is_mask = batch["input_ids"] == self.tokenizer.mask_token_id
            if not bool((is_mask.sum(1) == 1).all()):
                raise ValueError("Every fill-mask template must contain exactly one {mask}.")
            logits = self.model(**batch).logits[is_mask].float()
            probs, ids = logits.softmax(-1).topk(min(candidates, logits.shape[-1]), dim=-1)
            for row, (c, a) in enumerate(jobs[start : start + batch_size]):
                exclude = frozenset(re.findall(r"[a-z]+", (self.templates[a] + " " + c).lower()))
                values: list[AttributeValue] = []
                for p, i in zip(probs[row].tolist(), ids[row].tolist()):
                    word = self.whole_word(i, exclude)
                    if word and word not in {v.value for v in values}:
                        values.append(AttributeValue(word, "mlm", round(p, 6)))
                        if len(values) == top_k:
                            break
                out[c][a] = values
            bar.update(len(jobs[start : start + batch_size]))
        bar.close()
        return out


def _rank_answers(values: Sequence[AttributeValue], top_k: int) -> list[AttributeValue]:
    """Class-level VQA values: answers ranked by how many images gave them, then by mean score."""
    counts = Counter(v.value for v in values)
    scores: dict[str, list[float]] = {}
    for v in values:
        if v.score is not None:
            scores.setdefault(v.value, []).append(v.score)
    mean = {k: sum(s) / len(s) for k, s in scores.items()}
    ranked = sorted(counts, key=lambda k: (-counts[k], -mean.get(k, 0.0), k))
    return [AttributeValue(k, "vqa", round(mean[k], 6) if k in mean else None, counts[k]) for k in ranked[:top_k]]


def _pick(values: Sequence[AttributeValue], k: int) -> AttributeValue | None:
    return values[min(k, len(values) - 1)] if values else None


def attribute_prompts(
    class_names: Sequence[str],
    mlm: MaskedLMAttributes | None = None,
    vqa: ImageAttributeSource | None = None,
    images: Mapping[str, Sequence[str | os.PathLike]] | None = None,
    *,
    top_k: int = 3,
    nouns: Mapping[str, str] | None = None,
    attributes: Sequence[str] = ATTRIBUTES,
    sources: Mapping[str, str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Attribute prompts per class (and per image when a VQA model and images are given).

    Args:
        class_names: the classes.
        mlm: the masked-LM generator.
        vqa: the VQA generator.
        images: class -> image files, for VQA.
        top_k: number of prompts per class; the k-th prompt uses the k-th value of every attribute (the last one
            when an attribute has fewer).
        nouns: class -> the word used in the prompt text (e.g. a synonym); default the class name.
        attributes: which attributes to describe.
        sources: attribute -> ``"mlm"`` or ``"vqa"``; default :data:`HYBRID_SOURCES` with a VQA model, else all
            ``"mlm"``.
        progress: show progress bars.

    Returns:
        a JSON-ready dict: ``format``, ``top_k``, ``sources``, the models' provenance, and ``classes`` mapping each
        class to ``noun``, ``attributes`` (ranked values per attribute), ``prompts``, ``description`` (the first
        prompt) and, with VQA, ``images`` (per image: path, SHA-256, values, prompt).

    Raises:
        ValueError: an attribute whose source has no generator (or no images), or an unknown attribute or source.
    """
    attributes = [look_up_option(a, Attribute).value for a in attributes]
    if sources is None:
        sources = {a: HYBRID_SOURCES[a] if vqa is not None else "mlm" for a in attributes}
    sources = {a: look_up_option(sources.get(a, "mlm"), ("mlm", "vqa")) for a in attributes}
    mlm_attributes = [a for a in attributes if sources[a] == "mlm"]
    vqa_attributes = [a for a in attributes if sources[a] == "vqa"]
    if mlm_attributes and mlm is None:
        raise ValueError(f"The attributes {mlm_attributes} come from a masked LM: give one (--mlm).")
    if vqa_attributes and (vqa is None or not images):
        raise ValueError(
            f"The attributes {vqa_attributes} come from a VQA model: give one and images (--vqa, --images)."
        )
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}.")
    nouns = dict(nouns or {})
    filled = mlm.fill(class_names, mlm_attributes, top_k, progress=progress) if mlm_attributes else {}
    result: dict[str, Any] = {
        "format": ATTRIBUTE_PROMPTS_FORMAT,
        "version": 1,
        "top_k": top_k,
        "sources": sources,
        "mlm": {**mlm.provenance, "templates": {a: mlm.templates[a] for a in mlm_attributes}}
        if mlm_attributes
        else None,
        "vqa": vqa.describe(vqa_attributes) if vqa_attributes else None,
        "classes": {},
    }
    for name in class_names:
        noun = nouns.get(name, name.replace("_", " "))
        ranked: dict[str, list[AttributeValue]] = {a: list(filled.get(name, {}).get(a, [])) for a in mlm_attributes}
        entry: dict[str, Any] = {"noun": noun}
        if vqa_attributes:
            per_image = []
            answers: dict[str, list[AttributeValue]] = {a: [] for a in vqa_attributes}
            paths = list((images or {}).get(name, ()))
            for path, found in zip(paths, vqa.image_attributes(paths, name, vqa_attributes, progress=progress)):
                values = {a: found.get(a) for a in vqa_attributes}
                values.update({a: _pick(ranked[a], 0) for a in mlm_attributes})
                for a in vqa_attributes:
                    if values[a] is not None:
                        answers[a].append(values[a])
                per_image.append(
                    {
                        "path": str(path),
                        "sha256": vqa.image_hash(path),
                        "attributes": {a: v.to_dict() if v else None for a, v in values.items()},
                        "prompt": compose_prompt(noun, values),
                    }
                )
            ranked.update({a: _rank_answers(answers[a], top_k) for a in vqa_attributes})
            entry["images"] = per_image
        prompts = [compose_prompt(noun, {a: _pick(ranked[a], k) for a in attributes}) for k in range(top_k)]
        entry.update(
            attributes={a: [v.to_dict() for v in ranked[a]] for a in attributes},
            prompts=prompts,
            description=prompts[0],
        )
        result["classes"][name] = entry
    return result


def save_attribute_prompts(result: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write :func:`attribute_prompts`' result as JSON (atomically) and return the path."""
    return write_json(path, result)


def load_attribute_prompts(path: str | os.PathLike) -> dict[str, Any]:
    """Read a file written by :func:`save_attribute_prompts`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an attribute prompts file.
    """
    path = Path(path)
    data = read_json(path, "Attribute prompts file")
    if not isinstance(data, dict) or data.get("format") != ATTRIBUTE_PROMPTS_FORMAT:
        raise ValueError(f"'{path}' is not an attribute prompts file (written by `monai-cilmp knowledge attributes`).")
    return data


def zero_shot_prompts(result: Mapping[str, Any] | str | os.PathLike) -> dict[str, list[str]]:
    """All prompts per class (to ensemble their text embeddings), from a result or a saved file."""
    data = result if isinstance(result, Mapping) else load_attribute_prompts(result)
    return {name: list(entry["prompts"]) for name, entry in data["classes"].items()}
