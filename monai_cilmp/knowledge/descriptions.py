"""Curated descriptions of every class of the registered datasets, and the texts a knowledge bank is made from.

The curated texts live in ``descriptions/<dataset>.json`` (package data), one entry per class of
:mod:`monai_cilmp.data.registry`, keyed by the registry's exact class names::

    {"dataset": "kvasir",
     "classes": {"polyps": {"description": "A polyp in an endoscopy image: a pink-red, round ...",
                            "synonyms": ["bump", "growth", "colon polyp"],
                            "attributes": {"colour": "pink-red", "shape": "round", "texture": "smooth",
                                           "location": "on the colon wall"}}}}

Each description names the modality and the visual attributes that set the class apart from the other classes of
its dataset (colour, shape, texture, location, size, typical appearance; Qin et al., ICLR 2023), in at most 40 CLIP
tokens so that CILMP's prompt fits CLIP's context. ``synonyms`` are plain words for the class, ``attributes`` the
hand-written attribute phrases (composable with :func:`~monai_cilmp.knowledge.attributes.compose_prompt`).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from monai_cilmp.data.datalist import normalise_class_name
from monai_cilmp.data.registry import get_dataset, list_datasets
from monai_cilmp.utils.files import read_json

from .attributes import compose_prompt

__all__ = [
    "ClassDescription",
    "curated_datasets",
    "describe",
    "generic_description",
    "load_description_file",
    "load_descriptions",
]

GENERIC_MODALITY = "medical image"


@dataclass(frozen=True)
class ClassDescription:
    """The text of one class and where it came from.

    Attributes:
        name: the class name (the knowledge bank's key).
        text: the description fed to the language model.
        synonyms: plain words for the class.
        attributes: hand-written attribute phrases (``colour``, ``shape``, ``texture``, ``location``).
        source: ``curated:<dataset>``, ``generic``, ``file:<name>`` or ``generated:<model>``.
        note: why a generic description was used, if it was.
    """

    name: str
    text: str
    synonyms: tuple[str, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)
    source: str = "curated"
    note: str | None = None

    def attribute_prompt(self, noun: str | None = None) -> str:
        """The hand-written attribute prompt, e.g. ``"pink-red, round polyps with smooth texture on the colon wall"``.

        Args:
            noun: the word for the object (e.g. a synonym such as ``"bump"``); default the class name.

        Raises:
            ValueError: the description has no attributes.
        """
        if not self.attributes:
            raise ValueError(f"The description of '{self.name}' ({self.source}) has no attributes to compose.")
        return compose_prompt(noun or self.name, self.attributes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the format :func:`load_description_file` reads)."""
        out: dict[str, Any] = {"description": self.text, "synonyms": list(self.synonyms), "source": self.source}
        if self.attributes:
            out["attributes"] = dict(self.attributes)
        if self.note:
            out["note"] = self.note
        return out


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def curated_datasets() -> list[str]:
    """Registry names of the datasets that have curated descriptions."""
    folder = importlib.resources.files(__package__) / "descriptions"
    names = {Path(str(p)).stem for p in folder.iterdir() if str(p).endswith(".json")}
    return sorted(n for n in names if n in set(list_datasets()))


@functools.cache
def _read_curated(dataset: str) -> dict[str, Any]:
    resource = importlib.resources.files(__package__) / "descriptions" / f"{dataset}.json"
    return json.loads(resource.read_text(encoding="utf-8"))


def load_descriptions(dataset: str) -> dict[str, ClassDescription]:
    """The curated descriptions of a registered dataset, in its label order.

    Args:
        dataset: a registry name or alias (``"kvasir"``, ``"isic2019"``, ...).

    Raises:
        ValueError: unknown dataset (the message lists the valid names), or a dataset without curated descriptions.
    """
    spec = get_dataset(dataset)
    if spec.name not in curated_datasets():
        raise ValueError(
            f"No curated descriptions for dataset '{spec.name}'; curated: {', '.join(curated_datasets())}. "
            "Give descriptions with --descriptions FILE.json instead."
        )
    entries = _read_curated(spec.name)["classes"]
    missing = [n for n in spec.class_names if n not in entries]
    if missing:
        raise ValueError(
            f"The curated descriptions of '{spec.name}' lack the classes {missing}: the package data is out of date "
            "with the dataset registry."
        )
    return {
        name: ClassDescription(
            name=name,
            text=entries[name]["description"],
            synonyms=tuple(entries[name].get("synonyms", ())),
            attributes=dict(entries[name].get("attributes", {})),
            source=f"curated:{spec.name}",
        )
        for name in spec.class_names
    }


def generic_description(class_name: str, modality: str | None = None, note: str | None = None) -> ClassDescription:
    """A description built from the class name alone: ``"A <modality> showing <class name>."``.

    Args:
        class_name: the class name.
        modality: the modality in words (e.g. ``"chest X-ray"``); default ``"medical image"``.
        note: why the generic text is used (reported to the user).
    """
    modality = modality or GENERIC_MODALITY
    words = str(class_name).replace("_", " ").strip()
    return ClassDescription(
        name=class_name,
        text=f"{_article(modality).capitalize()} {modality} showing {words}.",
        source="generic",
        note=note,
    )


@functools.lru_cache(maxsize=1)
def _curated_index() -> tuple[dict[str, list[ClassDescription]], dict[str, list[ClassDescription]]]:
    """Curated descriptions by normalised class name, and by normalised synonym."""
    by_name: dict[str, list[ClassDescription]] = {}
    by_synonym: dict[str, list[ClassDescription]] = {}
    for dataset in curated_datasets():
        for description in load_descriptions(dataset).values():
            by_name.setdefault(normalise_class_name(description.name), []).append(description)
            for synonym in description.synonyms:
                by_synonym.setdefault(normalise_class_name(synonym), []).append(description)
    return by_name, by_synonym


def _check_names(class_names: Iterable[str]) -> list[str]:
    names = [str(n) for n in class_names]
    if not names:
        raise ValueError("Give at least one class name.")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"Class names must be distinct; repeated: {duplicated}.")
    return names


def describe(
    class_names: Sequence[str] | None = None, dataset: str | None = None, modality: str | None = None
) -> dict[str, ClassDescription]:
    """Descriptions for ``class_names``, keyed by the names as given.

    With ``dataset``, every class must be one of the dataset's (matched ignoring case, ``_``, ``-`` and extra spaces:
    :func:`~monai_cilmp.data.datalist.normalise_class_name`) and gets its curated description;
    ``class_names=None`` means all of the dataset's classes in label order.

    Without ``dataset``, a class gets a curated description when the curated classes of that name (or, when there
    are none, those having it as a synonym: "bacterial pneumonia" finds "bacteria pneumonia") all share one text.
    Otherwise it gets a :func:`generic_description` whose ``note`` says why (no match, or several different ones,
    which ``dataset`` would settle).

    Args:
        class_names: the class names (the bank's keys).
        dataset: registry name or alias of the dataset the classes belong to.
        modality: modality words for generic descriptions (default ``"medical image"``).

    Raises:
        ValueError: unknown dataset or class (the message lists the valid names), no or repeated class names.
    """
    if dataset is not None:
        curated = load_descriptions(dataset)
        if class_names is None:
            return curated
        spec = get_dataset(dataset)
        lookup = {normalise_class_name(n): d for n, d in curated.items()}
        names = _check_names(class_names)
        unknown = [n for n in names if normalise_class_name(n) not in lookup]
        if unknown:
            raise ValueError(
                f"Unknown class {', '.join(repr(n) for n in unknown)} for dataset '{spec.name}'; valid classes: "
                f"{', '.join(repr(n) for n in spec.class_names)}."
            )
        return {n: replace(lookup[normalise_class_name(n)], name=n) for n in names}
    if class_names is None:
        raise ValueError("Give class names or a dataset to describe.")
    by_name, by_synonym = _curated_index()
    out = {}
    for name in _check_names(class_names):
        found = by_name.get(normalise_class_name(name)) or by_synonym.get(normalise_class_name(name), [])
        if len({d.text for d in found}) == 1:
            out[name] = replace(found[0], name=name)
            if normalise_class_name(found[0].name) != normalise_class_name(name):
                out[name] = replace(out[name], note=f"'{name}' is a synonym of '{found[0].name}'")
            continue
        if found:
            where = ", ".join(f"'{d.name}' ({d.source})" for d in found)
            note = f"several curated classes match '{name}': {where}; give the dataset to use one"
        else:
            note = f"no curated description of '{name}'"
        out[name] = generic_description(name, modality, note)
    return out


def load_description_file(path: str | os.PathLike) -> dict[str, ClassDescription]:
    """Descriptions from a JSON file, keyed by class name, in file order.

    Accepted layouts: ``{"class": "description", ...}``, ``{"class": {"description": "...", "synonyms": [...]}}``, and
    either of them under a ``"classes"`` key (the curated files and the output of ``monai-cilmp knowledge
    attributes``, whose ``description`` is the first attribute prompt).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, no classes, or a class without a non-empty description string.
    """
    path = Path(path)
    data = read_json(path, "Descriptions file")
    if isinstance(data, dict) and isinstance(data.get("classes"), dict):
        data = data["classes"]
    if not isinstance(data, dict) or not data:
        raise ValueError(f"Descriptions file '{path}' must map class names to descriptions; found no classes.")
    out = {}
    for name, value in data.items():
        entry = {"description": value} if isinstance(value, str) else value
        text = entry.get("description") if isinstance(entry, Mapping) else None
        if not isinstance(text, str) or not text.strip():
            raise ValueError(
                f"Class '{name}' in '{path}' has no description: give a string or an object with a "
                '"description" string.'
            )
        attributes = entry.get("attributes", {})
        simple = isinstance(attributes, Mapping) and all(isinstance(v, str) for v in attributes.values())
        out[str(name)] = ClassDescription(
            name=str(name),
            text=text.strip(),
            synonyms=tuple(str(s) for s in entry.get("synonyms", ()) if isinstance(s, str)),
            attributes=dict(attributes) if simple else {},
            source=f"file:{path.name}",
        )
    return out
