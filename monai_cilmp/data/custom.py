"""Datalists from the user's own data: a folder per class, a CSV of paths and label names, or a MONAI datalist.

Labels are validated against the class list: an unknown label is an error that lists the valid ones, and a class
without images is an error. Nothing here opens an image (use :func:`monai_cilmp.data.check_images` for that), so
listing thousands of files takes a moment.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_cilmp.utils.files import read_json

from .datalist import (
    IMAGE_EXTENSIONS,
    SPLITS,
    grouped_stratified_split,
    make_datalist,
    match_label,
    missing_images_error,
    stratified_split,
)

__all__ = [
    "SPLIT_NAMES",
    "datalist_from_csv",
    "datalist_from_datalist",
    "datalist_from_folder",
    "list_images",
    "read_csv_rows",
    "split_name",
]

# folder names and CSV values accepted for each split
SPLIT_NAMES = {
    "train": "training",
    "training": "training",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
    "testing": "test",
}
IMAGE_COLUMNS = ("image", "path", "filename", "file", "image_path", "filepath")
LABEL_COLUMNS = ("label", "class", "class_name", "diagnosis", "target")


def _ignored(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _is_image(name: str, extensions: Sequence[str]) -> bool:
    lower = name.lower()
    return any(lower.endswith(ext) for ext in extensions)


def list_images(folder: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[str]:
    """Image files under ``folder`` (recursively, by extension, skipping hidden files), sorted, absolute."""
    found = []
    for directory, subdirs, files in os.walk(os.path.abspath(folder)):
        subdirs[:] = sorted(d for d in subdirs if not _ignored(d))
        found += [os.path.join(directory, f) for f in files if not _ignored(f) and _is_image(f, extensions)]
    return sorted(found)


def split_name(value: str, where: str) -> str:
    """The datalist split for a folder name or CSV value such as ``train``, ``val`` or ``test``.

    Raises:
        ValueError: not a split name.
    """
    key = str(value).strip().lower()
    if key not in SPLIT_NAMES:
        raise ValueError(f"Unknown split '{value}' in {where}; use one of: {', '.join(SPLIT_NAMES)}.")
    return SPLIT_NAMES[key]


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _ignored(p.name))


def _fill_splits(
    splits: dict[str, list[tuple[str, int]]],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    groups: Mapping[str, str] | None = None,
) -> dict[str, list[tuple[str, int]]]:
    """Carve the splits a source does not give (validation, test) out of its training items.

    With ``groups`` (path -> patient or lesion id) no group is split across the carved splits.
    """
    missing_val, missing_test = not splits.get("validation"), not splits.get("test")
    if not (missing_val or missing_test):
        return splits
    fractions = (val_fraction if missing_val else 0.0, test_fraction if missing_test else 0.0)
    training = splits.get("training", [])
    if groups is None:
        carved = stratified_split(training, *fractions, seed)
    else:
        carved = grouped_stratified_split(training, groups, *fractions, seed)
    return {
        "training": carved["training"],
        "validation": carved["validation"] if missing_val else splits["validation"],
        "test": carved["test"] if missing_test else splits["test"],
    }


def datalist_from_folder(
    root: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    name: str | None = None,
    preset: str | None = None,
) -> dict[str, Any]:
    """A datalist from a folder per class, ``ROOT/<class>/**/<image>``, or per split and class,
    ``ROOT/<train|val|test>/<class>/**/<image>``.

    With split folders the given splits are kept and a missing validation or test split is carved out of the
    training images (stratified, seeded); without them all three are. Images are found by extension, in nested
    folders too; nothing is opened.

    Args:
        root: the folder.
        class_names: class names in label order; folder names match them ignoring case and ``_``/``-`` versus
            spaces. ``None``: the sorted folder names.
        val_fraction: fraction of each class for validation, when it is carved.
        test_fraction: fraction of each class for test, when it is carved.
        seed: seed of the split.
        extensions: image file extensions.
        name: dataset name stored in the datalist (default: the folder's name).
        preset: modality preset stored in the datalist.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: no class folders, a folder that is not one of ``class_names``, or a class without images.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder '{root}' does not exist.")
    top = _subdirs(root)
    split_mode = bool(top) and all(p.name.lower() in SPLIT_NAMES for p in top)
    layout = {split_name(p.name, str(root)): p for p in top} if split_mode else {"training": root}
    class_dirs = {split: _subdirs(folder) for split, folder in layout.items()}
    found = sorted({p.name for dirs in class_dirs.values() for p in dirs})
    if not found:
        raise ValueError(f"'{root}' has no class folders; put the images of each class in ROOT/<class name>/.")
    names = list(class_names) if class_names is not None else found
    splits: dict[str, list[tuple[str, int]]] = {split: [] for split in SPLITS}
    counts = [0] * len(names)
    for split, dirs in class_dirs.items():
        for folder in dirs:
            label = _folder_label(folder, names, root)
            images = list_images(folder, extensions)
            counts[label] += len(images)
            splits[split] += [(path, label) for path in images]
    for index, count in enumerate(counts):
        if not count:
            raise ValueError(f"Class '{names[index]}' has no images in '{root}'.")
    splits = _fill_splits(splits, val_fraction, test_fraction, seed)
    return make_datalist(splits, names, name=name or root.resolve().name, preset=preset, source=f"'{root}'")


def _folder_label(folder: Path, names: Sequence[str], root: Path) -> int:
    try:
        return match_label(folder.name, names, f"'{root}'")
    except ValueError:
        raise ValueError(
            f"Folder '{folder.name}' in '{folder.parent}' is not one of the classes; valid classes: {', '.join(names)}."
        ) from None


def read_csv_rows(csv_file: str | os.PathLike, required: Sequence[str] = ()) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV file whose delimiter is ``,``, ``;`` or a tab (the most frequent in the header).

    Args:
        csv_file: the file.
        required: columns that must be in the header (checked up front, before any row is used).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is empty, or lacks a required column (the message names the file, the missing
            columns and the columns found).
    """
    csv_file = Path(csv_file)
    if not csv_file.is_file():
        raise FileNotFoundError(f"CSV file '{csv_file}' does not exist.")
    with open(csv_file, newline="", encoding="utf-8-sig") as f:
        header_line = f.readline()
        if not header_line.strip():
            raise ValueError(f"CSV file '{csv_file}' is empty.")
        delimiter = max(",;\t", key=header_line.count)
        f.seek(0)
        reader = csv.DictReader(f, delimiter=delimiter)
        # headers such as "Train " (FETAL_PLANES_DB) carry stray spaces
        reader.fieldnames = [str(c).strip() for c in reader.fieldnames or []]
        rows = [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    columns = list(reader.fieldnames)
    missing = [c for c in required if c not in columns]
    if missing:
        names = ", ".join(f"'{c}'" for c in missing)
        raise ValueError(
            f"CSV file '{csv_file}' has no {names} column{'s' if len(missing) > 1 else ''}; its columns are: "
            f"{', '.join(columns)}."
        )
    return columns, rows


def _column(columns: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str, source: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(f"{source} has no column '{wanted}'; its columns are: {', '.join(columns)}.")
        return wanted
    lower = {c.lower(): c for c in columns}
    for candidate in candidates:
        if candidate in lower:
            return lower[candidate]
    raise ValueError(
        f"{source} has no {what} column (one of: {', '.join(candidates)}); its columns are: {', '.join(columns)}."
    )


def datalist_from_csv(
    csv_file: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    split_column: str | None = None,
    base_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    name: str | None = None,
    preset: str | None = None,
) -> dict[str, Any]:
    """A datalist from a CSV file with a header, one row per image: its path and its label name.

    The columns are found by name (image: ``image``, ``path``, ``filename``, ...; label: ``label``, ``class``,
    ``diagnosis``, ...; an optional ``split`` column with ``train``/``val``/``test`` values) unless given. Paths are
    relative to ``base_dir`` (default: the CSV's folder) or absolute. Splits missing from the CSV are carved out of
    its training rows (stratified, seeded).

    Args:
        csv_file: the CSV file (``,``, ``;`` or tab separated).
        class_names: class names in label order; ``None``: the sorted distinct labels.
        image_column: the image path column.
        label_column: the label column.
        split_column: the split column (``None``: a ``split`` column when there is one).
        base_dir: folder relative paths start from.
        val_fraction: fraction of each class for validation, when it is carved.
        test_fraction: fraction of each class for test, when it is carved.
        seed: seed of the split.
        name: dataset name stored in the datalist (default: the CSV's name).
        preset: modality preset stored in the datalist.

    Raises:
        FileNotFoundError: the CSV, or images it lists, do not exist (all missing images are counted).
        ValueError: a missing column, an empty cell, an unknown label (listing the valid ones) or a class with no
            rows.
    """
    csv_file = Path(csv_file)
    source = f"'{csv_file}'"
    columns, rows = read_csv_rows(csv_file)
    image_col = _column(columns, image_column, IMAGE_COLUMNS, "image path", source)
    label_col = _column(columns, label_column, LABEL_COLUMNS, "label", source)
    if split_column is None:
        split_col = next((c for c in columns if c.lower() == "split"), None)
    else:
        split_col = _column(columns, split_column, (), "split", source)
    if not rows:
        raise ValueError(f"{source} has a header but no rows.")
    for line, row in enumerate(rows, start=2):
        for column in (image_col, label_col):
            if not row.get(column):
                raise ValueError(f"Line {line} of {source} has an empty '{column}'.")
    names = list(class_names) if class_names is not None else sorted({row[label_col] for row in rows})
    base = Path(base_dir) if base_dir is not None else csv_file.resolve().parent
    splits: dict[str, list[tuple[str, int]]] = {split: [] for split in SPLITS}
    missing = []
    for line, row in enumerate(rows, start=2):
        label = match_label(row[label_col], names, f"line {line} of {source}")
        split = split_name(row[split_col], f"line {line} of {source}") if split_col else "training"
        path = base / row[image_col]
        if not path.exists():
            missing.append(str(path))
        splits[split].append((str(path.resolve()), label))
    counts = {label for items in splits.values() for _, label in items}
    for index, class_name in enumerate(names):
        if index not in counts:
            raise ValueError(f"Class '{class_name}' has no images in {source}.")
    if missing:
        raise missing_images_error(missing, source)
    splits = _fill_splits(splits, val_fraction, test_fraction, seed)
    return make_datalist(splits, names, name=name or csv_file.stem, preset=preset, source=source)


def datalist_from_datalist(
    datalist: str | os.PathLike | dict[str, Any],
    class_names: Sequence[str] | None = None,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    preset: str | None = None,
) -> dict[str, Any]:
    """A validated datalist from an existing MONAI datalist (a JSON file or its dictionary).

    Its items need an ``image`` and a ``label``: a class index, or a class name. The class names come from
    ``class_names``, else the datalist's own ``class_names``, else (for name labels) the sorted distinct labels.
    Relative paths are relative to the datalist's folder. A missing validation or test split is carved out of
    the training items (stratified, seeded).

    Raises:
        FileNotFoundError: the datalist, or images it lists, do not exist.
        ValueError: not a datalist, integer labels without class names, an unknown label or an empty class.
    """
    if isinstance(datalist, dict):
        data, base, source = datalist, Path.cwd(), "the datalist"
    else:
        path = Path(datalist)
        data = read_json(path, "Datalist")
        base, source = path.resolve().parent, f"'{path}'"
    if not isinstance(data, dict) or not isinstance(data.get("training"), list):
        raise ValueError(f"{source} is not a MONAI datalist: it needs a 'training' list of {{image, label}} items.")
    items = [(split, i, item) for split in SPLITS for i, item in enumerate(data.get(split) or [])]
    for split, i, item in items:
        if not isinstance(item, dict) or "image" not in item or "label" not in item:
            raise ValueError(f"Item {i} of the {split} split of {source} needs an 'image' and a 'label'.")
    names = list(class_names or data.get("class_names") or [])
    if not names:
        if any(isinstance(item["label"], (int, float)) for _, _, item in items):
            raise ValueError(f"{source} has integer labels but no class names; give the class names in label order.")
        names = sorted({str(item["label"]) for _, _, item in items})
    splits: dict[str, list[tuple[str, int]]] = {split: [] for split in SPLITS}
    missing = []
    for split, i, item in items:
        label = match_label(item["label"], names, f"item {i} of the {split} split of {source}")
        path = base / str(item["image"])
        if not path.exists():
            missing.append(str(path))
        splits[split].append((str(path.resolve()), label))
    counts = {label for values in splits.values() for _, label in values}
    for index, class_name in enumerate(names):
        if index not in counts:
            raise ValueError(f"Class '{class_name}' has no images in {source}.")
    if missing:
        raise missing_images_error(missing, source)
    splits = _fill_splits(splits, val_fraction, test_fraction, seed)
    return make_datalist(
        splits,
        names,
        name=data.get("name"),
        preset=preset or data.get("preset"),
        source=source,
    )
