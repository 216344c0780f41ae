"""One routine turning the public download of any registered dataset into a MONAI datalist.

:func:`prepare_dataset` reads the dataset's :class:`~monai_cilmp.data.layout.DatasetLayout` entries from the
registry (tried in order: the first whose anchor file or folders are found anywhere up to a few folders below the
download wins, so archives unpack with or without a top folder), reads the images and labels with the reader of
that layout's kind, keeps the official split where the layout has one (carving a missing validation or test split
out of the official training split, keeping each patient or lesion in one split where the layout names them) and
otherwise makes a stratified seeded split, then writes the datalist atomically. ``prepare_function(name)`` is the
same routine bound to one dataset, documented with its layouts.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from string import Formatter
from typing import Any

import numpy as np

from .check import raise_for_unreadable
from .custom import _fill_splits, list_images, read_csv_rows
from .datalist import (
    SPLITS,
    grouped_stratified_split,
    make_datalist,
    missing_images_error,
    stratified_split,
    write_datalist,
)
from .layout import DatasetLayout, LayoutKind
from .registry import DATASETS, DatasetSpec, describe_layouts, get_dataset
from .splits import datalist_from_split_file, safe_join

__all__ = ["PREPARE_FUNCTIONS", "prepare_dataset", "prepare_function"]

Splits = dict[str, list[tuple[str, int]]]
Groups = dict[str, str] | None
_MAX_DEPTH = 4
_SPLIT_FOLDERS = (("training", "train"), ("validation", "val"), ("test", "test"))


# ---------------------------------------------------------------------------------------------------------------
# finding files in an unpacked download
# ---------------------------------------------------------------------------------------------------------------
def _folders(raw: Path) -> Iterable[Path]:
    """``raw`` and the folders below it, breadth first, to ``_MAX_DEPTH`` levels, skipping macOS and hidden ones."""
    queue = deque([(raw, 0)])
    while queue:
        folder, depth = queue.popleft()
        yield folder
        if depth < _MAX_DEPTH:
            try:
                children = sorted(p for p in folder.iterdir() if p.is_dir())
            except OSError:
                continue
            queue.extend((c, depth + 1) for c in children if not c.name.startswith(".") and c.name != "__MACOSX")


def _children(folder: Path) -> dict[str, Path]:
    return {p.name.lower(): p for p in folder.iterdir()}


def _file_anywhere(raw: Path, name: str) -> Path | None:
    for folder in _folders(raw):
        match = _children(folder).get(name.lower())
        if match is not None and match.is_file():
            return match
    return None


def _folder_anywhere(raw: Path, names: Iterable[str]) -> Path | None:
    wanted = {n.lower() for n in names}
    return next((f for f in _folders(raw) if f.name.lower() in wanted), None)


def _folder_with(raw: Path, names: Iterable[str]) -> Path | None:
    """The first folder holding sub-folders with all of ``names`` (case-insensitive)."""
    wanted = [n.lower() for n in names]
    for folder in _folders(raw):
        children = _children(folder)
        if all(n in children and children[n].is_dir() for n in wanted):
            return folder
    return None


def _subfolder(folder: Path, relative: str, layout: str) -> Path:
    """The folder ``relative`` to ``folder`` (``..`` allowed, names case-insensitive).

    Raises:
        FileNotFoundError: no such folder; the message gives the expected layout.
    """
    current = folder
    for part in Path(relative).parts:
        if part == "..":
            current = current.parent
            continue
        match = _children(current).get(part.lower())
        if match is None or not match.is_dir():
            raise FileNotFoundError(f"'{current}' has no '{part}' folder (expected {layout}).")
        current = match
    return current


def _check_exist(paths: Iterable[str], source: str) -> None:
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise missing_images_error(missing, source)


def _locate(layout: DatasetLayout, raw: Path) -> Path | None:
    """The folder (folder kinds) or file that anchors ``layout`` in the download, or ``None``."""
    if layout.kind in (LayoutKind.CLASS_FOLDERS, LayoutKind.SPLIT_FOLDERS):
        return _folder_with(raw, layout.anchor)
    if layout.kind == LayoutKind.NPZ:
        name = layout.anchor[0]
        found = [p for folder in _folders(raw) for p in sorted(folder.glob(f"{name}*.npz"))]
        found = [p for p in found if p.stem == name or p.stem.removeprefix(f"{name}_").isdigit()]
        # MedMNIST+ ships 64, 128 and 224 pixel versions next to the 28 pixel one: use the largest for CLIP
        return max(found, key=lambda p: int(p.stem.removeprefix(f"{name}_")) if p.stem != name else 28, default=None)
    return _file_anywhere(raw, layout.anchor[0])


def _not_found(spec: DatasetSpec, layout: DatasetLayout, raw: Path) -> str:
    if layout.kind in (LayoutKind.CLASS_FOLDERS, LayoutKind.SPLIT_FOLDERS):
        what = f"no folder with {', '.join(layout.anchor)} sub-folders"
    elif layout.kind == LayoutKind.NPZ:
        what = f"no '{layout.anchor[0]}.npz' or '{layout.anchor[0]}_<size>.npz'"
    else:
        what = f"no '{layout.anchor[0]}'"
    return f"'{raw}' does not look like the {spec.title} download: {what} found (expected {layout.expected})"


# ---------------------------------------------------------------------------------------------------------------
# one reader per kind of layout: (layout, anchor, download, spec) -> (splits, groups, source)
# ---------------------------------------------------------------------------------------------------------------
def _read_class_folders(layout: DatasetLayout, root: Path, raw: Path, spec: DatasetSpec) -> tuple[Splits, Groups, str]:
    children = _children(root)
    items = []
    for folder in layout.classes:
        for path in list_images(children[folder.lower()], layout.extensions):
            name = Path(path).name
            if any(text in name for text in layout.exclude):
                continue
            label = layout.label_of(folder, f"'{root}'", name)
            if label is not None:
                items.append((path, label))
    return {"training": items}, None, f"'{root}'"


def _read_split_folders(layout: DatasetLayout, root: Path, raw: Path, spec: DatasetSpec) -> tuple[Splits, Groups, str]:
    splits: Splits = {split: [] for split in SPLITS}
    children = _children(root)
    for split, folder in _SPLIT_FOLDERS:
        if folder not in children:
            continue
        classes = _children(children[folder])
        for class_folder in layout.classes:
            if class_folder.lower() not in classes:
                raise FileNotFoundError(f"'{children[folder]}' has no '{class_folder.upper()}' folder.")
            for path in list_images(classes[class_folder.lower()], layout.extensions):
                label = layout.label_of(class_folder, f"'{classes[class_folder.lower()]}'", Path(path).name)
                if label is not None:
                    splits[split].append((path, label))
    return splits, None, f"'{root}'"


def _fields(template: str) -> list[str]:
    return [name for _, name, _, _ in Formatter().parse(template) if name]


def _label_columns(layout: DatasetLayout) -> list[str]:
    column = layout.label_column
    return [column.format(eye=eye) for eye in ("Left", "Right")] if "{eye}" in column else [column]


def _row_label(layout: DatasetLayout, row: Mapping[str, str], image: str, where: str) -> int | None:
    column = layout.label_column
    if "{eye}" in column:
        column = column.format(eye="Left" if "left" in Path(image).name.lower() else "Right")
    value = row[column]
    if layout.classes or layout.rules:
        return layout.label_of(value, where)
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"The '{column}' of {where} is '{value}', not a class index.") from None


def _image_folder(layout: DatasetLayout, anchor: Path, raw: Path) -> Path:
    if layout.images_anywhere:
        found = _folder_anywhere(raw, layout.images)
        if found is None:
            raise FileNotFoundError(f"'{raw}' has '{anchor.name}' but no '{layout.images[0]}' folder.")
        return found
    if not layout.images:
        return anchor.parent
    return _subfolder(anchor.parent, layout.images[0], layout.expected)


def _read_table(layout: DatasetLayout, csv_file: Path, raw: Path, spec: DatasetSpec) -> tuple[Splits, Groups, str]:
    images = _image_folder(layout, csv_file, raw)
    optional = [c for c in (layout.split_column, layout.group_column) if c]
    _, rows = read_csv_rows(csv_file, [*_fields(layout.image), *_label_columns(layout), *optional])
    splits: Splits = {split: [] for split in SPLITS}
    groups: dict[str, str] = {}
    source = f"'{csv_file}'"
    for line, row in enumerate(rows, start=2):
        where = f"line {line} of {source}"
        path = str(safe_join(images, layout.image.format(**row), where))
        if layout.group_column and row[layout.group_column]:
            groups[path] = f"{layout.group_column} {row[layout.group_column]}"
        label = _row_label(layout, row, path, where)
        if label is None:
            continue
        split = "training"
        if layout.split_column:
            value = row[layout.split_column].strip()
            if value not in layout.split_values:
                raise ValueError(
                    f"The '{layout.split_column}' of {where} is '{value}'; expected one of: "
                    f"{', '.join(layout.split_values)}."
                )
            split = layout.split_values[value]
        splits[split].append((path, label))
    if layout.deduplicate:
        splits = {split: sorted(set(items)) for split, items in splits.items()}
    _check_exist((p for items in splits.values() for p, _ in items), source)
    return splits, (groups if layout.group_column else None), source


def _read_json_lists(layout: DatasetLayout, anchor: Path, raw: Path, spec: DatasetSpec) -> tuple[Splits, Groups, str]:
    splits: Splits = {split: [] for split in SPLITS}
    for split, file_name in layout.split_files.items():
        json_file = anchor.parent / file_name
        if not json_file.is_file():
            if split in layout.optional_splits:
                continue
            raise FileNotFoundError(f"The {spec.title} download in '{anchor.parent}' has no '{file_name}'.")
        entries = json.loads(json_file.read_text(encoding="utf-8"))
        for i, entry in enumerate(entries):
            where = f"entry {i} of '{json_file}'"
            if not isinstance(entry, dict) or layout.image not in entry or layout.label_column not in entry:
                raise ValueError(f"The {where} needs '{layout.image}' and '{layout.label_column}'.")
            label = _row_label(layout, {k: str(v) for k, v in entry.items()}, "", where)
            splits[split].append((str(safe_join(json_file.parent, entry[layout.image], where)), label))
        _check_exist((p for p, _ in splits[split]), f"'{json_file}'")
    return splits, None, f"'{anchor.parent}'"


def _read_indexed_table(layout: DatasetLayout, table: Path, raw: Path, spec: DatasetSpec) -> tuple[Splits, Groups, str]:
    images = _image_folder(layout, table, raw)
    _, rows = read_csv_rows(table, [*_fields(layout.image), *_label_columns(layout)])
    splits: Splits = {split: [] for split in SPLITS}
    for split, file_name in layout.split_files.items():
        index_file = table.parent / file_name
        if not index_file.is_file():
            if split in layout.optional_splits:
                continue
            raise FileNotFoundError(f"The {spec.title} download in '{table.parent}' has no '{file_name}'.")
        _, indexes = read_csv_rows(index_file, (layout.index_column,))
        for line, entry in enumerate(indexes, start=2):
            where = f"line {line} of '{index_file}'"
            try:
                row = rows[int(entry[layout.index_column])]
            except (ValueError, IndexError):
                raise ValueError(f"The {where} is not a row of '{table}'.") from None
            label = _row_label(layout, row, "", where)
            if label is not None:
                splits[split].append((str(safe_join(images, layout.image.format(**row), where)), label))
    _check_exist((p for items in splits.values() for p, _ in items), f"'{table}'")
    return splits, None, f"'{table}'"


def _groups_from_files(layout: DatasetLayout, raw: Path, items: Iterable[tuple[str, int]]) -> Groups:
    """Image path -> group from the layout's group tables present in the download (matched on the image stem)."""
    groups: dict[str, str] = {}
    found = False
    for file_name, image_column, group_column in layout.group_files:
        table = _file_anywhere(raw, file_name)
        if table is None:
            continue
        found = True
        _, rows = read_csv_rows(table, (image_column, group_column))
        for row in rows:
            if row[group_column]:
                groups.setdefault(row[image_column], row[group_column])
    if not found:
        return None
    return {path: f"group {groups[Path(path).stem]}" for path, _ in items if Path(path).stem in groups}


def _read_one_hot(layout: DatasetLayout, anchor: Path, raw: Path, spec: DatasetSpec) -> tuple[Splits, Groups, str]:
    splits: Splits = {split: [] for split in SPLITS}
    columns = list(layout.classes)
    for split, file_name in layout.split_files.items():
        csv_file = anchor if split == "training" else _file_anywhere(raw, file_name)
        if csv_file is None:
            if split in layout.optional_splits:
                continue  # e.g. the ISIC validation and test ground truths are separate downloads
            raise FileNotFoundError(f"'{raw}' has no '{file_name}' (expected {layout.expected}).")
        images = _folder_anywhere(raw, (layout.split_images[split],))
        if images is None:
            raise FileNotFoundError(f"'{raw}' has '{csv_file.name}' but no '{layout.split_images[split]}' folder.")
        _, rows = read_csv_rows(csv_file, [*_fields(layout.image), *columns])
        for line, row in enumerate(rows, start=2):
            scores = [float(row.get(c) or 0) for c in columns]
            if max(scores) > 0:  # rows of classes outside ours (ISIC 2019's SCC, UNK) have none of the columns
                path = safe_join(images, layout.image.format(**row), f"line {line} of '{csv_file}'")
                splits[split].append((str(path), layout.classes[columns[int(np.argmax(scores))]]))
        _check_exist((p for p, _ in splits[split]), f"'{csv_file}'")
    return splits, _groups_from_files(layout, raw, splits["training"]), f"'{anchor}'"


_READERS: dict[str, Callable[..., tuple[Splits, Groups, str]]] = {
    LayoutKind.CLASS_FOLDERS: _read_class_folders,
    LayoutKind.SPLIT_FOLDERS: _read_split_folders,
    LayoutKind.TABLE: _read_table,
    LayoutKind.JSON_LISTS: _read_json_lists,
    LayoutKind.INDEXED_TABLE: _read_indexed_table,
    LayoutKind.ONE_HOT: _read_one_hot,
}


# ---------------------------------------------------------------------------------------------------------------
# the shared ending: split, datalist, optional check, atomic write
# ---------------------------------------------------------------------------------------------------------------
def _build(
    spec: DatasetSpec,
    splits: Splits,
    *,
    official: bool,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    check: bool,
    source: str,
    groups: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The validated (and, with ``check``, opened) datalist; ``groups`` (path -> patient/lesion) keep together."""
    if not official:
        training = [item for items in splits.values() for item in items]
        if groups is None:
            splits = stratified_split(training, val_fraction, test_fraction, seed)
        else:
            splits = grouped_stratified_split(training, groups, val_fraction, test_fraction, seed)
    else:
        splits = _fill_splits(splits, val_fraction, test_fraction, seed, groups)
    datalist = make_datalist(
        splits, spec.class_names, name=spec.name, preset=spec.preset, source=source, modality=spec.modality
    )
    if check:
        raise_for_unreadable(datalist, source)
    return datalist


def _prepare_npz(
    spec: DatasetSpec, npz: Path, out: str | os.PathLike, image_dir: str | os.PathLike | None, **kwargs: Any
) -> dict[str, Any]:
    """A MedMNIST ``.npz``: its images are written as PNG files to ``image_dir``, then the datalist."""
    target = Path(image_dir) if image_dir is not None else Path(out).with_name(f"{Path(out).stem}_images")
    marker = ".monai-cilmp-medmnist"
    if target.exists() and not (target / marker).exists():
        raise ValueError(f"Image folder '{target}' exists and was not written by prepare; remove it or move it.")
    target.parent.mkdir(parents=True, exist_ok=True)
    # everything happens in a temporary folder next to the target: the images are written, the datalist is
    # validated and checked there, and only then the folder is moved into place and the datalist written, so a
    # failure at any step leaves nothing new behind (and a previous run's images as they were)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    backup: Path | None = None
    moved = False
    try:
        from PIL import Image

        splits: Splits = {split: [] for split in SPLITS}
        with np.load(npz) as data:
            for split, key in _SPLIT_FOLDERS:
                images, labels = data[f"{key}_images"], data[f"{key}_labels"].reshape(-1)
                (tmp / key).mkdir()
                for i, (image, label) in enumerate(zip(images, labels)):
                    Image.fromarray(image).save(tmp / key / f"{i:06d}.png")
                    splits[split].append((str(tmp / key / f"{i:06d}.png"), int(label)))
        (tmp / marker).write_text(f"images of {npz.name}\n")
        datalist = _build(spec, splits, official=True, source=f"'{npz}'", **kwargs)
        for split in SPLITS:
            for item in datalist[split]:
                item["image"] = str(target / Path(item["image"]).relative_to(tmp))
        if target.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, backup)
        os.replace(tmp, target)
        moved = True
        write_datalist(datalist, out)
    except BaseException:
        if moved:
            shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
        if backup is not None:
            if not target.exists():
                os.replace(backup, target)
            else:
                shutil.rmtree(backup, ignore_errors=True)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    return datalist


def prepare_dataset(
    name: str,
    raw_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    check: bool = False,
    image_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Convert the unpacked public download of the registered dataset ``name`` (or alias) into a datalist.

    The dataset's layouts (:func:`describe_layouts`) are tried in order; the first found is read.

    Args:
        name: registry name or alias.
        raw_dir: the unpacked download.
        out: the datalist JSON to write (atomically: on any error nothing is written).
        seed: seed of the split (where the layout has no official split, or lacks a validation or test part).
        val_fraction: fraction of each class for validation, when it is carved.
        test_fraction: fraction of each class for test, when it is carved.
        check: open every image first and fail, listing all unreadable ones, before writing.
        image_dir: MedMNIST ``.npz`` layouts only: where the images are written as PNG files (default:
            ``<out without .json>_images`` next to the datalist, replaced on a re-run).

    Returns:
        the datalist written.

    Raises:
        ValueError: unknown dataset (listing the valid names), unknown labels, an unsafe path in a file.
        FileNotFoundError: the download matches none of the layouts, or lacks files they list.
    """
    spec = get_dataset(name)
    raw = Path(raw_dir)
    if not raw.is_dir():
        raise FileNotFoundError(f"Download folder '{raw}' does not exist.")
    if not spec.layouts:
        raise ValueError(f"Dataset '{spec.name}' has no layout; build its datalist from a folder or CSV.")
    found = next(((layout, anchor) for layout in spec.layouts if (anchor := _locate(layout, raw)) is not None), None)
    if found is None:
        message = _not_found(spec, spec.layouts[-1], raw)
        others = "; ".join(layout.expected for layout in spec.layouts[:-1])
        raise FileNotFoundError(message + (f", nor {others}." if others else "."))
    layout, anchor = found
    options = dict(seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, check=check)
    if layout.kind == LayoutKind.NPZ:
        return _prepare_npz(spec, anchor, out, image_dir, **options)
    if layout.kind == LayoutKind.SPLIT_FILE:
        images = _subfolder(anchor.parent, layout.images[0], layout.expected) if layout.images else None
        datalist = datalist_from_split_file(anchor, images, dataset=spec.name)
        if check:
            raise_for_unreadable(datalist, f"'{anchor}'")
    else:
        splits, groups, source = _READERS[layout.kind](layout, anchor, raw, spec)
        datalist = _build(spec, splits, official=layout.official, source=source, groups=groups, **options)
    write_datalist(datalist, out)
    return datalist


def prepare_function(name: str) -> Callable[..., dict[str, Any]]:
    """:func:`prepare_dataset` bound to dataset ``name`` (its docstring describes the expected download)."""
    if name in PREPARE_FUNCTIONS:
        return PREPARE_FUNCTIONS[name]

    def prepare(raw_dir: str | os.PathLike, out: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
        return prepare_dataset(name, raw_dir, out, **kwargs)

    prepare.__name__ = prepare.__qualname__ = f"prepare_{name.replace('-', '_')}"
    prepare.__doc__ = describe_layouts(name) + "\n\nArguments as :func:`prepare_dataset` (without ``name``)."
    PREPARE_FUNCTIONS[name] = prepare
    return prepare


PREPARE_FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {}
for _name in DATASETS:
    prepare_function(_name)
