"""Declarative descriptions of where a dataset's images, labels, splits and patients are in its public download.

A :class:`DatasetLayout` is data: the kind of download (class folders, split folders, a table, per-split JSON
lists, a table with per-split index files, one-hot ground-truth tables, a MedMNIST ``.npz``, or a published
``split_<name>.json`` file of CoOp / BiomedCoOp), the names that locate it, and how a folder name, a table cell or a
file name becomes a label. Each dataset of the registry lists its layouts (tried in order);
:func:`monai_cilmp.data.prepare_dataset` reads any of them with one routine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from monai_cilmp.utils.enums import StrEnum

__all__ = ["DatasetLayout", "LabelRule", "LayoutKind", "RuleMatch"]


class LayoutKind(StrEnum):
    """The kinds of download :func:`~monai_cilmp.data.prepare_dataset` reads.

    - ``class-folders``: ``<root>/<class folder>/**/<image>``; the root is the folder holding all ``classes``.
    - ``split-folders``: ``<root>/<train|val|test>/<class folder>/**/<image>``.
    - ``table``: a CSV (``anchor``) with an image column (``image`` template), a label column, and optional split
      and group (patient) columns; images under ``images`` next to the CSV.
    - ``json-lists``: one JSON list per split (``split_files``) of ``{image_key: path, label_key: index}``.
    - ``indexed-table``: a CSV of every image (``anchor``) and per split a CSV of its row indexes (``split_files``).
    - ``one-hot``: per split a ground-truth CSV of one-hot class columns (``split_files``) and an image folder
      (``split_images``); lesion / patient tables in ``group_files``.
    - ``npz``: a MedMNIST ``<anchor>.npz`` or ``<anchor>_<size>.npz`` (images are written out as PNG files).
    - ``split-file``: a published ``split_<name>.json`` (CoOp, BiomedCoOp) next to its image folder ``images``.
    """

    CLASS_FOLDERS = "class-folders"
    SPLIT_FOLDERS = "split-folders"
    TABLE = "table"
    JSON_LISTS = "json-lists"
    INDEXED_TABLE = "indexed-table"
    ONE_HOT = "one-hot"
    NPZ = "npz"
    SPLIT_FILE = "split-file"


class RuleMatch(StrEnum):
    """How a :class:`LabelRule` compares its text with a value (both case-folded and stripped)."""

    EQUALS = "equals"
    STARTSWITH = "startswith"
    CONTAINS = "contains"


@dataclass(frozen=True)
class LabelRule:
    """``value -> label`` when the value (case-folded) equals, starts with or contains ``text``.

    Attributes:
        match: :class:`RuleMatch`.
        text: the text compared (lower case).
        label: the label index; ``None`` leaves the image out.
    """

    match: str
    text: str
    label: int | None

    def matches(self, value: str) -> bool:
        value = str(value).strip().casefold()
        if self.match == RuleMatch.EQUALS:
            return value == self.text
        if self.match == RuleMatch.STARTSWITH:
            return value.startswith(self.text)
        return self.text in value


@dataclass(frozen=True)
class DatasetLayout:
    """Where one download keeps its images, labels, splits and groups.

    Attributes:
        kind: :class:`LayoutKind`.
        expected: the layout in words, for errors, ``--help`` and the docs.
        anchor: what locates the download below the folder given: the class or split folder names it must hold
            (folder kinds) or the name of its file (other kinds; for ``npz`` the MedMNIST name).
        classes: folder name or label cell value (case-insensitive) -> label index; ``None`` as a value sends the
            item to ``rules``. Empty for tables whose label cells are label indices already.
        rules: ordered :class:`LabelRule` list applied to ``rule_source`` when ``classes`` does not settle the label.
        rule_source: what the rules read: ``"value"`` (the label cell) or ``"file"`` (the image's file name).
        unmatched: what happens to a value no rule matches: ``"error"``, ``"skip"``, or a label index.
        image: image path template from a table row, e.g. ``"{id_code}.png"`` (``json-lists``: the image key).
        images: image folder(s), relative to the anchor file's folder (``..`` allowed); the first that exists.
        images_anywhere: look for an ``images`` folder anywhere in the download (not only next to the anchor).
        label_column: the label column (``{eye}`` is replaced by ``Left`` / ``Right`` from the image name) or key.
        split_column: the column giving the official split, with ``split_values`` (cell -> split).
        group_column: the column of the patient / lesion an image belongs to (kept in one split).
        group_files: tables ``(file name, image column, group column)`` of groups, matched on the image's stem.
        split_files: split -> file (``json-lists``, ``indexed-table``, ``one-hot``).
        optional_splits: splits whose file may be absent (then carved out of the training split).
        index_column: the column of row indexes in the ``indexed-table`` split files.
        split_images: split -> image folder name (``one-hot``).
        exclude: substrings of file names to leave out (segmentation masks).
        extensions: image file extensions of the folder kinds.
        official: the download defines the split (else: a stratified, seeded split of everything).
        deduplicate: drop repeated ``(image, label)`` rows of a table.
        checked: what this layout was checked against (a real download, a published split file's paths); ``""``:
            written from the dataset's documentation and not checked against the real download.
    """

    kind: str
    expected: str
    anchor: tuple[str, ...] = ()
    classes: Mapping[str, int | None] = field(default_factory=dict)
    rules: tuple[LabelRule, ...] = ()
    rule_source: str = "value"
    unmatched: str | int = "error"
    image: str = ""
    images: tuple[str, ...] = ()
    images_anywhere: bool = False
    label_column: str = ""
    split_column: str = ""
    split_values: Mapping[str, str] = field(default_factory=dict)
    group_column: str = ""
    group_files: tuple[tuple[str, str, str], ...] = ()
    split_files: Mapping[str, str] = field(default_factory=dict)
    optional_splits: tuple[str, ...] = ()
    index_column: str = "indexes"
    split_images: Mapping[str, str] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    extensions: tuple[str, ...] = (".png", ".jpg", ".jpeg")
    official: bool = False
    deduplicate: bool = False
    checked: str = ""

    def label_of(self, value: str, where: str, file_name: str | None = None) -> int | None:
        """The label of a folder name or cell ``value`` (``None``: leave the item out).

        Args:
            value: the folder name or label cell.
            where: where it was found, for the message.
            file_name: the image's file name (what the rules read when ``rule_source`` is ``"file"``).

        Raises:
            ValueError: neither ``classes`` nor a rule gives a label and ``unmatched`` is ``"error"``.
        """
        classes = {str(k).casefold(): v for k, v in self.classes.items()}
        key = str(value).strip().casefold()
        if classes.get(key) is not None:
            return classes[key]
        if key not in classes and not self.rules:
            raise ValueError(f"Unknown label '{value}' in {where}; expected one of: {', '.join(self.classes)}.")
        read = file_name if self.rule_source == "file" and file_name is not None else value
        for rule in self.rules:
            if rule.matches(read):
                return rule.label
        if self.unmatched == "skip":
            return None
        if isinstance(self.unmatched, int):
            return self.unmatched
        texts = ", ".join(f"'{r.text}'" for r in self.rules)
        raise ValueError(f"Cannot label '{read}' in {where}: it matches none of {texts}.")
