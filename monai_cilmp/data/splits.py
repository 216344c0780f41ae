"""Published split files (CoOp, CoCoOp, BiomedCoOp) as datalists, and the few-shot subsets their code draws.

CoOp and the methods built on its Dassl code (CoCoOp, KgCoOp, ProGrad, MaPLe, BiomedCoOp, ...) fix each dataset's
split in a JSON file, e.g. BiomedCoOp's ``data/BTMRI/split_BTMRI.json``::

    {"train": [["glioma_tumor/image03.jpg", 0, "glioma tumor"], ...], "val": [...], "test": [...]}

Each entry is ``[image path relative to the dataset's image folder, label, class name]``. Reading such a file gives
the published split exactly: the same images in each split, in the file's order, with the file's labels (so the
base / novel halves of the classes are the papers' too).

Their K-shot subsets are not published: Dassl draws them when a run starts (``random.seed(seed)``, then for each
label, in the order labels first appear in the split's ``train`` list, ``random.sample(items, K)``; then the same
for ``val`` with ``min(K, 4)`` images) and caches them as pickles of its own objects, which are not read here (a
pickle from outside can run code). :func:`dassl_few_shot` repeats that draw, so ``few_shot_datalist(...,
sampler="dassl")`` reproduces the subsets of the published seeds (1, 2, 3) from the split file alone.

Paths in a split file are data: an absolute path, a drive letter or a ``..`` component is refused, so every image
stays under the dataset's folder; nothing read here reaches MONAI's config parser.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, TypeVar

from monai_cilmp.utils.files import read_json

from .datalist import make_datalist, missing_images_error, normalise_class_name
from .registry import get_dataset

__all__ = [
    "SPLIT_FILE_KEYS",
    "datalist_from_split_file",
    "dassl_few_shot",
    "default_image_root",
    "read_split_file",
    "safe_join",
]

#: the keys of a split file and the datalist splits they become
SPLIT_FILE_KEYS = {"train": "training", "val": "validation", "test": "test"}

T = TypeVar("T")


def safe_join(root: str | os.PathLike, relative: Any, where: str) -> Path:
    """``root / relative`` for an image path read from a file, refusing paths that would leave ``root``.

    Args:
        root: the dataset's image folder.
        relative: the path as read (``/`` or ``\\`` separated).
        where: where it was read, for the message.

    Raises:
        ValueError: not a non-empty string, an absolute path, a drive letter, or a ``..`` component.
    """
    if not isinstance(relative, str) or not relative.strip() or "\x00" in relative:
        raise ValueError(f"{where} has an empty or non-text image path {str(relative)[:80]!r}.")
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or PureWindowsPath(relative).drive or ".." in pure.parts:
        raise ValueError(
            f"{where} has the image path '{relative[:200]}', which is absolute or leaves the dataset folder; image "
            "paths must be relative to it, without '..'."
        )
    return Path(root).joinpath(*pure.parts)


def read_split_file(path: str | os.PathLike) -> dict[str, list[tuple[str, int, str]]]:
    """The ``train`` / ``val`` / ``test`` lists of a split file, checked (``val`` may be missing: then empty).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, no ``train`` or ``test`` list, or an entry that is not ``[path, label, class name]``.
    """
    path = Path(path)
    data = read_json(path, "Split file")
    if not isinstance(data, dict) or not isinstance(data.get("train"), list) or not isinstance(data.get("test"), list):
        raise ValueError(
            f"Split file '{path}' needs 'train' and 'test' lists of [relative image path, label, class name] entries "
            "(CoOp / BiomedCoOp format)."
        )
    out: dict[str, list[tuple[str, int, str]]] = {}
    for key in SPLIT_FILE_KEYS:
        entries = data.get(key) or []
        if not isinstance(entries, list):
            raise ValueError(f"'{key}' of split file '{path}' must be a list.")
        rows = []
        for i, entry in enumerate(entries):
            ok = isinstance(entry, (list, tuple)) and len(entry) == 3
            ok = ok and isinstance(entry[0], str) and isinstance(entry[2], str)
            ok = ok and isinstance(entry[1], int) and not isinstance(entry[1], bool) and entry[1] >= 0
            if not ok:
                raise ValueError(
                    f"Entry {i} of '{key}' in split file '{path}' must be [relative image path, label, class name], "
                    f"got {str(entry)[:120]}."
                )
            rows.append((entry[0], int(entry[1]), entry[2]))
        out[key] = rows
    return out


def _file_class_names(split: dict[str, list[tuple[str, int, str]]], source: str) -> list[str]:
    """The class name of each label 0..C-1, one per label, as the file gives them."""
    names: dict[int, str] = {}
    for rows in split.values():
        for _, label, name in rows:
            if names.setdefault(label, name) != name:
                raise ValueError(f"Label {label} is called both '{names[label]}' and '{name}' in {source}.")
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"The labels of {source} must be 0..C-1 without gaps, got {sorted(names)}.")
    return [names[i] for i in range(len(names))]


def _registry_names(file_names: Sequence[str], dataset: str, source: str) -> list[str]:
    """The registry's spelling of each of the file's class names (file order kept)."""

    spec = get_dataset(dataset)
    ours = {normalise_class_name(n): n for n in spec.class_names}
    ours.update({normalise_class_name(k): v for k, v in spec.class_synonyms.items()})
    out = []
    for name in file_names:
        match = ours.get(normalise_class_name(name))
        if match is None:
            raise ValueError(
                f"Class '{name}' of {source} is not a class of dataset '{spec.name}' ({', '.join(spec.class_names)}): "
                "give the right dataset, or none to keep the file's class names."
            )
        if match in out:
            raise ValueError(f"Two classes of {source} are both '{match}' of dataset '{spec.name}'.")
        out.append(match)
    return out


def default_image_root(split_file: str | os.PathLike) -> Path:
    """Where a split file's paths start: BiomedCoOp keeps ``<Name>/split_<Name>.json`` next to ``<Name>/<Name>/``;
    otherwise the split file's own folder."""
    split_file = Path(split_file)
    stem = split_file.stem.removeprefix("split_")
    candidate = split_file.parent / stem
    return candidate if candidate.is_dir() else split_file.parent


def datalist_from_split_file(
    split_file: str | os.PathLike,
    images: str | os.PathLike | None = None,
    *,
    dataset: str | None = None,
) -> dict[str, Any]:
    """A datalist holding exactly the published split of a CoOp / BiomedCoOp split file.

    Args:
        split_file: the ``split_*.json`` file.
        images: the folder the file's paths are relative to (default: :func:`default_image_root`).
        dataset: registry name of the dataset: its preset and modality are recorded and the class names are
            written in the registry's spelling (matched by name or ``class_synonyms``; the file's label order is
            kept). ``None``: the file's class names.

    Returns:
        the datalist; ``training`` / ``validation`` / ``test`` are the file's ``train`` / ``val`` / ``test`` lists in
        order, with the file's labels; ``split_file`` records the file's name, SHA-256 and the image folder.

    Raises:
        FileNotFoundError: the split file, the image folder or listed images do not exist.
        ValueError: a malformed file, an unsafe path, inconsistent class names, or a class not of ``dataset``.
    """
    path = Path(split_file)
    source = f"split file '{path}'"
    split = read_split_file(path)
    class_names = _file_class_names(split, source)
    root = Path(images) if images is not None else default_image_root(path)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Image folder '{root}' of {source} does not exist; give the folder its paths are relative to."
        )
    name, preset, extra = path.stem.removeprefix("split_"), None, {}
    if dataset is not None:
        spec = get_dataset(dataset)
        class_names = _registry_names(class_names, spec.name, source)
        name, preset, extra = spec.name, spec.preset, {"modality": spec.modality}
    splits: dict[str, list[tuple[str, int]]] = {}
    missing = []
    for key, target in SPLIT_FILE_KEYS.items():
        items = []
        for i, (relative, label, _) in enumerate(split[key]):
            image = safe_join(root, relative, f"entry {i} of '{key}' in {source}")
            if not image.exists():
                missing.append(str(image))
            items.append((str(image), label))
        splits[target] = items
    if missing:
        raise missing_images_error(missing, source)
    record = {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "images": str(root.resolve())}
    return make_datalist(splits, class_names, name=name, preset=preset, source=source, split_file=record, **extra)


def dassl_few_shot(
    items: Sequence[T], shots: int, rng: random.Random, label: Callable[[T], int] = lambda item: item[1]
) -> list[T]:
    """The K-shot subset Dassl's ``generate_fewshot_dataset`` draws from ``items`` with ``rng``.

    Items are grouped by label in the order labels first appear; from each group ``rng.sample(group, shots)`` is
    drawn (a group smaller than ``shots`` is kept whole), groups in that order. With ``rng = random.Random(seed)``
    and the split file's ``train`` list, this is the subset of Dassl's run with ``--seed seed``; the ``val`` subset
    is the next draw, with ``min(shots, 4)``, from the same ``rng``.
    """
    groups: dict[int, list[T]] = {}
    for item in items:
        groups.setdefault(int(label(item)), []).append(item)
    out: list[T] = []
    for group in groups.values():
        out += rng.sample(group, shots) if len(group) >= shots else list(group)
    return out
