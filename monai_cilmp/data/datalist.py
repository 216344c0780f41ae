"""MONAI classification datalists: building, validating, splitting, summarising, reading and writing them.

A datalist is MONAI's decathlon-style JSON (readable with ``monai.data.load_decathlon_datalist``)::

    {"name": "kvasir", "class_names": ["dyed lifted polyps", ...], "preset": "endoscopy",
     "training": [{"image": "/data/kvasir/polyps/0001.jpg", "label": 6}, ...],
     "validation": [...], "test": [...]}

``label`` is the index into ``class_names``. Paths are written absolute; relative paths in a datalist read with
:func:`load_datalist` are taken relative to the datalist's folder, as MONAI does.
"""

from __future__ import annotations

import difflib
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_cilmp.utils.files import read_json, write_json

__all__ = [
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "grouped_stratified_split",
    "load_datalist",
    "make_datalist",
    "match_label",
    "missing_images_error",
    "normalise_class_name",
    "stratified_split",
    "summarize_datalist",
    "validate_datalist",
    "write_datalist",
]

SPLITS = ("training", "validation", "test")
#: file types that are images (a folder's other files are not): what :class:`~monai_cilmp.transforms.LoadMedicalImage`
#: reads, NumPy arrays included (so that a pickled ``.npy`` is refused by name, not silently left out)
IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".bmp",
    ".dcm",
    ".dicom",
    ".dic",
    ".ima",
    ".nii",
    ".nii.gz",
    ".npy",
    ".npz",
)

Item = tuple[str, int]


def normalise_class_name(name: str) -> str:
    """The form class names are compared in everywhere: case-folded, ``_`` and ``-`` as spaces, single spaces.

    ``"Normal_Z-line "`` and ``"normal z line"`` both give ``"normal z line"``.
    """
    return " ".join(str(name).replace("_", " ").replace("-", " ").casefold().split())


def match_label(label: Any, class_names: Sequence[str], where: str) -> int:
    """The index of ``label`` in ``class_names``, compared without case, ``_``/``-`` versus spaces.

    Args:
        label: a class name (or a label index already, for integer labels).
        class_names: the valid class names, in label order.
        where: where the label was found, for the message (``"line 3 of labels.csv"``).

    Raises:
        ValueError: the label is not one of the classes; the message lists the valid ones.
    """
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        if 0 <= int(label) < len(class_names):
            return int(label)
        raise ValueError(f"Label {label} in {where} is out of range for {len(class_names)} classes.")
    wanted = normalise_class_name(label)
    for index, name in enumerate(class_names):
        if normalise_class_name(name) == wanted:
            return index
    close = difflib.get_close_matches(str(label), list(class_names), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ValueError(f"Unknown label '{label}' in {where}{hint}; valid labels: {', '.join(class_names)}.")


def missing_images_error(missing: Sequence[str], source: str) -> FileNotFoundError:
    """One-sentence error listing (the first few of) the image files ``source`` refers to that do not exist."""
    shown = ", ".join(f"'{m}'" for m in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    noun = "image file listed" if len(missing) == 1 else "image files listed"
    verb = "does" if len(missing) == 1 else "do"
    return FileNotFoundError(f"{len(missing)} {noun} in {source} {verb} not exist: {shown}{more}.")


def make_datalist(
    splits: Mapping[str, Iterable[Item]],
    class_names: Sequence[str],
    *,
    name: str | None = None,
    preset: str | None = None,
    source: str = "the data",
    **metadata: Any,
) -> dict[str, Any]:
    """A validated datalist from ``(image path, label index)`` pairs per split.

    Args:
        splits: ``{"training": [...], "validation": [...], "test": [...]}`` (missing splits are empty).
        class_names: class names in label order.
        name: dataset name stored in the datalist.
        preset: modality preset stored in the datalist (a name or alias of :func:`monai_cilmp.transforms.get_preset`).
        source: what the data came from, for error messages.
        metadata: more top-level keys (e.g. ``few_shot``).

    Raises:
        ValueError: an unknown split or preset, a label out of range, or a class without training images.
    """
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"Unknown split(s) {sorted(unknown)}; a datalist has {', '.join(SPLITS)}.")
    datalist: dict[str, Any] = {}
    if name:
        datalist["name"] = name
    datalist["class_names"] = [str(c) for c in class_names]
    if preset:
        # lazy: monai_cilmp.data stays free of torch/MONAI for `monai-cilmp prepare --help` (it lists the datasets)
        from monai_cilmp.transforms.presets import get_preset

        datalist["preset"] = str(get_preset(preset).name)  # validates it and stores the name, not an alias
    datalist.update(metadata)
    for split in SPLITS:
        datalist[split] = [{"image": str(path), "label": int(label)} for path, label in splits.get(split, ())]
    return validate_datalist(datalist, source=source)


def validate_datalist(datalist: Mapping[str, Any], *, source: str = "the datalist") -> dict[str, Any]:
    """Check a datalist: ``class_names``, items with an ``image`` and an in-range integer ``label``, no empty class.

    Returns:
        the datalist (as a ``dict``) with every split present.

    Raises:
        ValueError: a missing or duplicated class name, a malformed item, a label out of range, an image in two
            splits (leakage), or a class with no training image (an empty class cannot be learnt).
    """
    class_names = datalist.get("class_names")
    if not class_names:
        raise ValueError(f"{source} has no 'class_names'.")
    if not isinstance(class_names, (list, tuple)) or not all(isinstance(n, str) and n.strip() for n in class_names):
        raise ValueError(f"'class_names' of {source} must be a list of non-empty strings.")
    if len(class_names) < 2:
        raise ValueError(
            f"{source} has a single class ({class_names[0]!r}): a classifier needs at least two classes; add the "
            "images of the other classes."
        )
    duplicates = sorted(n for n, c in Counter(class_names).items() if c > 1)
    if duplicates:
        raise ValueError(f"{source} repeats class name(s) {', '.join(duplicates)}.")
    out = dict(datalist)
    for split in SPLITS:
        items = out.setdefault(split, [])
        for i, item in enumerate(items):
            if not isinstance(item, Mapping) or "image" not in item or "label" not in item:
                raise ValueError(f"Item {i} of the {split} split of {source} needs an 'image' and a 'label'.")
            label = item["label"]
            if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
                raise ValueError(f"Item {i} of the {split} split of {source} has a non-integer label {label!r}.")
            if not 0 <= int(label) < len(class_names):
                raise ValueError(
                    f"Item {i} of the {split} split of {source} has label {label}, out of range for "
                    f"{len(class_names)} classes."
                )
    seen: dict[str, tuple[str, str]] = {}
    for split in SPLITS:
        for item in out[split]:
            # the file itself, not its spelling: symbolic links and 'a/../a/x.png' name the same image
            other, spelling = seen.setdefault(os.path.realpath(str(item["image"])), (split, str(item["image"])))
            if other != split:
                same = "" if spelling == str(item["image"]) else f" (as '{spelling}')"
                raise ValueError(
                    f"Image '{item['image']}' is in both the {other}{same} and the {split} split of {source}; an "
                    "image must be in one split only."
                )
    counts = Counter(int(item["label"]) for item in out["training"])
    for index, name in enumerate(class_names):
        if not counts[index]:
            raise ValueError(f"Class '{name}' has no images in the training split of {source}.")
    return out


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction and test_fraction must be in [0, 1) and sum to less than 1, got {val_fraction} and "
            f"{test_fraction}."
        )


def _class_targets(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """``(n_val, n_test)`` of a class of ``n`` items: rounded fractions, keeping one training item."""
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    while n_val + n_test >= n and (n_val or n_test):  # keep one training image per class
        if n_test >= n_val:
            n_test -= 1
        else:
            n_val -= 1
    return n_val, n_test


def stratified_split(
    items: Sequence[Item], val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0
) -> dict[str, list[Item]]:
    """Split ``(path, label)`` pairs into training, validation and test, class by class, reproducibly.

    Each class is shuffled with a generator seeded by ``(seed, label)`` after sorting by path, so the result does
    not depend on file-system order and adding a class does not change the others' splits; each class gets
    ``round(n * fraction)`` validation and test items, keeping at least one training item.

    Raises:
        ValueError: fractions outside ``[0, 1)`` or summing to 1 or more.
    """
    _check_fractions(val_fraction, test_fraction)
    by_class: dict[int, list[Item]] = {}
    for path, label in items:
        by_class.setdefault(int(label), []).append((str(path), int(label)))
    splits: dict[str, list[Item]] = {split: [] for split in SPLITS}
    for label in sorted(by_class):
        group = sorted(by_class[label])
        order = np.random.default_rng([seed, label]).permutation(len(group))
        n_val, n_test = _class_targets(len(group), val_fraction, test_fraction)
        shuffled = [group[i] for i in order]
        splits["test"] += shuffled[:n_test]
        splits["validation"] += shuffled[n_test : n_test + n_val]
        splits["training"] += shuffled[n_test + n_val :]
    return {split: sorted(v, key=lambda item: (item[1], item[0])) for split, v in splits.items()}


def grouped_stratified_split(
    items: Sequence[Item],
    groups: Mapping[str, str],
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, list[Item]]:
    """A stratified split like :func:`stratified_split` that keeps each group (patient, lesion) in one split.

    Each class gets the validation and test counts :func:`stratified_split` would give it as targets. Groups are
    visited in a seeded order (after sorting by group id, so file-system order does not matter) and a group goes to
    the test or validation split where it fits (none of its classes would pass its target) and is needed most,
    otherwise to training. Targets are never exceeded, so every class keeps its training images; with large groups
    the held-out splits can come out smaller than the targets.

    Args:
        items: ``(path, label)`` pairs.
        groups: path -> group id; a path not in it is a group of its own.
        val_fraction: fraction of each class for validation.
        test_fraction: fraction of each class for test.
        seed: seed of the group order.

    Raises:
        ValueError: fractions outside ``[0, 1)`` or summing to 1 or more.
    """
    _check_fractions(val_fraction, test_fraction)
    members: dict[str, list[Item]] = {}
    for path, label in items:
        members.setdefault(str(groups.get(str(path), f"\0{path}")), []).append((str(path), int(label)))
    totals = Counter(int(label) for _, label in items)
    targets = {"validation": Counter(), "test": Counter()}
    for label, n in totals.items():
        targets["validation"][label], targets["test"][label] = _class_targets(n, val_fraction, test_fraction)
    taken = {"validation": Counter(), "test": Counter()}
    ids = sorted(members)
    splits: dict[str, list[Item]] = {split: [] for split in SPLITS}
    for index in np.random.default_rng(seed).permutation(len(ids)):
        group = members[ids[index]]
        need = Counter(label for _, label in group)
        best, best_need = "training", 0
        for split in ("test", "validation"):
            room = {label: targets[split][label] - taken[split][label] for label in need}
            if all(room[label] >= n for label, n in need.items()):
                wanted = sum(room.values())
                if wanted > best_need:
                    best, best_need = split, wanted
        if best != "training":
            taken[best].update(need)
        splits[best] += group
    return {split: sorted(v, key=lambda item: (item[1], item[0])) for split, v in splits.items()}


def summarize_datalist(datalist: Mapping[str, Any]) -> str:
    """Counts per split and class, one line per split, e.g. ``training: 700 images (normal 350, pneumonia 350)``."""
    names = datalist["class_names"]
    lines = []
    for split in SPLITS:
        items = datalist.get(split, [])
        counts = Counter(int(item["label"]) for item in items)
        per_class = ", ".join(f"{names[i]} {counts[i]}" for i in range(len(names)))
        lines.append(f"{split}: {len(items)} image{'' if len(items) == 1 else 's'} ({per_class})")
    return "\n".join(lines)


def write_datalist(datalist: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a validated datalist as JSON atomically: a temporary file in the same folder, then ``os.replace``.

    Either the whole file is written or, on any error, nothing (an existing file is left as it was). Image paths are
    written absolute: a relative path held in memory is relative to the current directory, while :func:`load_datalist`
    reads a relative path in a file against the file's folder, so every writer (a split file, a folder, a CSV, a
    download given by relative paths, with ``--out`` anywhere) writes a datalist that reads back the same from any
    directory.

    Returns:
        the path written.
    """
    checked = validate_datalist(datalist, source=str(path))
    for split in SPLITS:
        checked[split] = [_absolute_image(item) for item in checked[split]]
    return write_json(path, checked, indent=1)


def _absolute_image(item: Mapping[str, Any]) -> dict[str, Any]:
    """``item`` with its image path made absolute against the current directory (not resolved: links are kept)."""
    image = str(item["image"])
    return {**item, "image": image if os.path.isabs(image) else os.path.join(os.getcwd(), image)}


def load_datalist(
    path: str | os.PathLike, class_names: Sequence[str] | None = None, check_files: bool = True
) -> dict[str, Any]:
    """Read and validate a datalist, making relative image paths absolute (relative to the file's folder).

    Args:
        path: the JSON file.
        class_names: class names to use when the file has none (a plain MONAI datalist); when the file has some,
            they must be the same names in the same order (its labels index it).
        check_files: check that every image file exists (before any work starts, not mid-epoch).

    Raises:
        FileNotFoundError: the file or image files it lists do not exist.
        ValueError: the file is not JSON or not a valid datalist.
    """
    path = Path(path)
    data = read_json(path, "Datalist")
    if not isinstance(data, dict):
        raise ValueError(f"Datalist '{path}' must hold a JSON object with 'training', 'validation' and 'test' lists.")
    if class_names is not None and not data.get("class_names"):
        data["class_names"] = list(class_names)
    elif class_names is not None and sorted(normalise_class_name(str(n)) for n in class_names) != sorted(
        normalise_class_name(str(n)) for n in data["class_names"]
    ):
        raise ValueError(
            f"The class names given ({', '.join(map(str, class_names))}) differ from those of datalist '{path}' "
            f"({', '.join(map(str, data['class_names']))}): drop --classes/--dataset, or give the datalist's names."
        )
    elif class_names is not None and [normalise_class_name(str(n)) for n in class_names] != [
        normalise_class_name(str(n)) for n in data["class_names"]
    ]:
        raise ValueError(
            f"The class names given ({', '.join(map(str, class_names))}) are those of datalist '{path}' in another "
            f"order ({', '.join(map(str, data['class_names']))}), whose labels index its own order: give them in that "
            "order, drop --classes/--dataset, or write the datalist in the order you want (monai-cilmp prepare ... "
            "--classes)."
        )
    base = path.resolve().parent
    for split in SPLITS:
        for item in data.get(split, []):
            if isinstance(item, dict) and isinstance(item.get("image"), str):
                item["image"] = str(base / item["image"])  # an absolute path stays as it is
    data = validate_datalist(data, source=f"datalist '{path}'")
    if check_files:
        missing = [str(item["image"]) for split in SPLITS for item in data[split] if not os.path.exists(item["image"])]
        if missing:
            raise missing_images_error(missing, f"datalist '{path}'")
    return data
