"""``prepare`` functions turning the public downloads of the paper's datasets into MONAI datalists.

Each ``prepare_<dataset>(raw_dir, out, *, seed, val_fraction, test_fraction, check)`` finds its files anywhere up
to a few folders below ``raw_dir`` (archives unpack with or without a top folder), maps the dataset's own labels
to the registry's class order, keeps the official split where the dataset has one (carving a missing validation
split out of the official training split) and otherwise makes a stratified seeded split, then writes the datalist
atomically. The expected layout of each download is in its function's docstring. The functions are attached to
the registry (``get_dataset("kvasir").prepare``) when :mod:`monai_cilmp.data` is imported.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
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
from .registry import DATASETS, get_dataset

__all__ = [
    "PREPARE_FUNCTIONS",
    "prepare_adam",
    "prepare_aptos2019",
    "prepare_bloodmnist",
    "prepare_busi",
    "prepare_chaoyang",
    "prepare_cpn_x_ray",
    "prepare_dataset",
    "prepare_derm7pt",
    "prepare_dermamnist",
    "prepare_fetal_us",
    "prepare_isic",
    "prepare_kvasir",
    "prepare_odir",
    "prepare_odir2",
    "prepare_pneumonia2",
    "prepare_pneumonia3",
]

Splits = dict[str, list[tuple[str, int]]]
_MAX_DEPTH = 4


# ---------------------------------------------------------------------------------------------------------------
# finding files in an unpacked download
# ---------------------------------------------------------------------------------------------------------------
def _raw(raw_dir: str | os.PathLike) -> Path:
    raw = Path(raw_dir)
    if not raw.is_dir():
        raise FileNotFoundError(f"Download folder '{raw}' does not exist.")
    return raw


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


def _find_file(raw: Path, name: str, title: str, layout: str) -> Path:
    for folder in _folders(raw):
        match = _children(folder).get(name.lower())
        if match is not None and match.is_file():
            return match
    raise FileNotFoundError(f"'{raw}' does not look like the {title} download: no '{name}' found (expected {layout}).")


def _find_folder_with(raw: Path, names: Iterable[str], title: str, layout: str) -> Path:
    """The first folder holding sub-folders with all of ``names`` (case-insensitive)."""
    wanted = [n.lower() for n in names]
    for folder in _folders(raw):
        children = _children(folder)
        if all(n in children and children[n].is_dir() for n in wanted):
            return folder
    raise FileNotFoundError(
        f"'{raw}' does not look like the {title} download: no folder with {', '.join(names)} sub-folders "
        f"(expected {layout})."
    )


def _subfolder(folder: Path, name: str, layout: str) -> Path:
    """The sub-folder ``name`` of ``folder`` (case-insensitive).

    Raises:
        FileNotFoundError: ``folder`` has no such sub-folder; the message gives the expected layout.
    """
    match = _children(folder).get(name.lower())
    if match is None or not match.is_dir():
        raise FileNotFoundError(f"'{folder}' has no '{name}' folder (expected {layout}).")
    return match


def _check_exist(paths: Iterable[str], source: str) -> None:
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise missing_images_error(missing, source)


# ---------------------------------------------------------------------------------------------------------------
# the shared ending: datalist, optional check, atomic write
# ---------------------------------------------------------------------------------------------------------------
def _build(
    name: str,
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
    spec = get_dataset(name)
    if not official:
        if groups is None:
            splits = stratified_split(splits["training"], val_fraction, test_fraction, seed)
        else:
            splits = grouped_stratified_split(splits["training"], groups, val_fraction, test_fraction, seed)
    else:
        splits = _fill_splits(splits, val_fraction, test_fraction, seed, groups)
    datalist = make_datalist(
        splits, spec.class_names, name=spec.name, preset=spec.preset, source=source, modality=spec.modality
    )
    if check:
        raise_for_unreadable(datalist, source)
    return datalist


def _finish(name: str, splits: Splits, out: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """:func:`_build` the datalist, then write it atomically."""
    datalist = _build(name, splits, **kwargs)
    write_datalist(datalist, out)
    return datalist


def _by_folder(root: Path, folders: dict[str, int], extensions: tuple[str, ...] = (".png", ".jpg", ".jpeg")) -> Splits:
    """All images of the given class folders of ``root`` (folder name, case-insensitive, -> label)."""
    items = []
    children = _children(root)
    for folder, label in folders.items():
        items += [(path, label) for path in list_images(children[folder.lower()], extensions)]
    return {"training": items, "validation": [], "test": []}


# ---------------------------------------------------------------------------------------------------------------
# the datasets
# ---------------------------------------------------------------------------------------------------------------
def prepare_adam(
    raw_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    check: bool = False,
) -> dict[str, Any]:
    """ADAM (iChallenge-AMD, Baidu Research Open Access Dataset): AMD versus non-AMD fundus photographs.

    Expected layout (the labelled training release; the validation and test labels are spreadsheets that are not
    read)::

        Training400/AMD/A0001.jpg ...        (label 1, "fundus with age-related macular degeneration")
        Training400/Non-AMD/N0001.jpg ...    (label 0, "normal fundus")

    No official split of the labelled images: stratified seeded split.

    Args:
        raw_dir: the unpacked download.
        out: the datalist JSON to write.
        seed: seed of the split.
        val_fraction: fraction of each class for validation.
        test_fraction: fraction of each class for test.
        check: open every image first and fail, listing all unreadable ones, before writing.

    Returns:
        the datalist written.
    """
    raw = _raw(raw_dir)
    root = _find_folder_with(raw, ("AMD", "Non-AMD"), "ADAM", "Training400/AMD/*.jpg and Training400/Non-AMD/*.jpg")
    splits = _by_folder(root, {"AMD": 1, "Non-AMD": 0})
    return _finish(
        "adam",
        splits,
        out,
        official=False,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        check=check,
        source=f"'{root}'",
    )


def prepare_aptos2019(
    raw_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    check: bool = False,
) -> dict[str, Any]:
    """APTOS 2019 Blindness Detection (Kaggle): diabetic retinopathy grades 0-4.

    Expected layout (Kaggle's competition download)::

        train.csv                 id_code,diagnosis    (diagnosis 0-4 is the label)
        train_images/<id_code>.png
        test.csv, test_images/    (unlabelled, ignored)

    Only the training images are labelled: stratified seeded split of them. Arguments as :func:`prepare_adam`.
    """
    raw = _raw(raw_dir)
    csv_file = _find_file(raw, "train.csv", "APTOS 2019", "train.csv and train_images/<id_code>.png")
    images = _subfolder(csv_file.parent, "train_images", "train.csv and train_images/<id_code>.png")
    _, rows = read_csv_rows(csv_file, ("id_code", "diagnosis"))
    items = [(str(images / f"{row['id_code']}.png"), int(row["diagnosis"])) for row in rows]
    _check_exist((p for p, _ in items), f"'{csv_file}'")
    return _finish(
        "aptos2019",
        {"training": items},
        out,
        official=False,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        check=check,
        source=f"'{csv_file}'",
    )


def _medmnist(
    name: str,
    raw_dir: str | os.PathLike,
    out: str | os.PathLike,
    image_dir: str | os.PathLike | None,
    **kwargs: Any,
) -> dict[str, Any]:
    raw = _raw(raw_dir)
    candidates = [p for folder in _folders(raw) for p in sorted(folder.glob(f"{name}*.npz"))]
    candidates = [p for p in candidates if p.stem == name or p.stem.removeprefix(f"{name}_").isdigit()]
    if not candidates:
        raise FileNotFoundError(
            f"'{raw}' does not look like the MedMNIST download: no '{name}.npz' or '{name}_<size>.npz' found."
        )
    # MedMNIST+ ships 64, 128 and 224 pixel versions next to the 28 pixel one: use the largest for CLIP
    npz = max(candidates, key=lambda p: int(p.stem.removeprefix(f"{name}_")) if p.stem != name else 28)
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
            for split, key in (("training", "train"), ("validation", "val"), ("test", "test")):
                images, labels = data[f"{key}_images"], data[f"{key}_labels"].reshape(-1)
                (tmp / key).mkdir()
                for i, (image, label) in enumerate(zip(images, labels)):
                    Image.fromarray(image).save(tmp / key / f"{i:06d}.png")
                    splits[split].append((str(tmp / key / f"{i:06d}.png"), int(label)))
        (tmp / marker).write_text(f"images of {npz.name}\n")
        datalist = _build(name, splits, official=True, source=f"'{npz}'", **kwargs)
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


def prepare_bloodmnist(
    raw_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    check: bool = False,
    image_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """BloodMNIST (MedMNIST v2): 8 blood cell types in peripheral blood smears.

    Expected layout (the MedMNIST download; with MedMNIST+ sizes the largest is used)::

        bloodmnist.npz  or  bloodmnist_64.npz / bloodmnist_128.npz / bloodmnist_224.npz
            train_images (N, H, W, 3) uint8, train_labels (N, 1); val_*; test_*

    The images are written as PNG files to ``image_dir`` (default: ``<out without .json>_images`` next to the
    datalist, replaced on a re-run). Official train/val/test split. Other arguments as :func:`prepare_adam`.
    """
    return _medmnist(
        "bloodmnist",
        raw_dir,
        out,
        image_dir,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        check=check,
    )


def prepare_dermamnist(
    raw_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    check: bool = False,
    image_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """DermaMNIST (MedMNIST v2, from HAM10000): 7 skin lesion classes.

    Expected layout: ``dermamnist.npz`` or ``dermamnist_<size>.npz`` as for :func:`prepare_bloodmnist`, whose
    label order (0 actinic keratoses ... 6 vascular lesions) is the registry's. Official train/val/test split.
    """
    return _medmnist(
        "dermamnist",
        raw_dir,
        out,
        image_dir,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        check=check,
    )


def prepare_busi(
    raw_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    check: bool = False,
) -> dict[str, Any]:
    """BUSI, Breast Ultrasound Images (Al-Dhabyani et al. 2020): normal, malignant, benign.

    Expected layout (the Kaggle/Cairo University download)::

        Dataset_BUSI_with_GT/benign/benign (1).png, benign (1)_mask.png, benign (4)_mask_1.png ...
        Dataset_BUSI_with_GT/malignant/...
        Dataset_BUSI_with_GT/normal/...

    Segmentation masks (``*_mask*.png``) are skipped. No official split: stratified seeded split. Arguments as
    :func:`prepare_adam`.
    """
    raw = _raw(raw_dir)
    root = _find_folder_with(
        raw, ("benign", "malignant", "normal"), "BUSI", "Dataset_BUSI_with_GT/{benign,malignant,normal}/*.png"
    )
    splits = _by_folder(root, {"normal": 0, "malignant": 1, "benign": 2})
    splits["training"] = [(p, label) for p, label in splits["training"] if "_mask" not in Path(p).name]
    return _finish(
        "busi",
        splits,
        out,
        official=False,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        check=check,
        source=f"'{root}'",
    )


def prepare_chaoyang(
    raw_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    check: bool = False,
) -> dict[str, Any]:
    """Chaoyang (Zhu et al. 2021): colon histopathology, normal, serrated, adenocarcinoma, adenoma.

    Expected layout (the authors' download)::

        chaoyang-data/train.json   [{"name": "train/539562-IMG005x014.JPG", "label": 0}, ...]
        chaoyang-data/test.json
        chaoyang-data/train/*.JPG, chaoyang-data/test/*.JPG

    The JSON labels (0 normal, 1 serrated, 2 adenocarcinoma, 3 adenoma) are the registry's order. Official
    train/test split; validation is carved out of the training split. Arguments as :func:`prepare_adam`.
    """
    raw = _raw(raw_dir)
    train_json = _find_file(raw, "train.json", "Chaoyang", "train.json, test.json, train/ and test/")
    splits: Splits = {split: [] for split in SPLITS}
    for split, file_name in (("training", "train.json"), ("test", "test.json")):
        json_file = train_json.parent / file_name
        if not json_file.is_file():
            raise FileNotFoundError(f"The Chaoyang download in '{train_json.parent}' has no '{file_name}'.")
        entries = json.loads(json_file.read_text(encoding="utf-8"))
        splits[split] = [(str(json_file.parent / e["name"]), int(e["label"])) for e in entries]
        _check_exist((p for p, _ in splits[split]), f"'{json_file}'")
    return _finish(
        "chaoyang",
        splits,
        out,
        official=True,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        check=check,
        source=f"'{train_json.parent}'",
    )


def prepare_cpn_x_ray(
    raw_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    check: bool = False,
) -> dict[str, Any]:
    """CPN-X-ray, the COVID-19, Pneumonia and Normal chest X-ray PA dataset (Mendeley Data).

    Expected layout::

        covid/*.jpg|png    normal/*.jpg|png    pneumonia/*.jpg|png    (folder names in any case)

    No official split: stratified seeded split. Arguments as :func:`prepare_adam`.
    """
    raw = _raw(raw_dir)
    root = _find_folder_with(raw, ("covid", "normal", "pneumonia"), "CPN-X-ray", "covid/, normal/ and pneumonia/")
    splits = _by_folder(root, {"normal": 0, "covid": 1, "pneumonia": 2})
    return _finish(
        "cpn-x-ray",
        splits,
        out,
        official=False,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        check=check,
        source=f"'{root}'",
    )


def _derm7pt_class(diagnosis: str) -> int:
    """Derm7pt's 20 diagnoses grouped into the five classes of its authors' ``DIAG`` task (registry order)."""
    d = diagnosis.strip().lower()
    if d == "basal cell carcinoma":
        return 0  # carcinoma
    if d == "seborrheic keratosis":
        return 1  # keratosis
    if d.startswith("melanoma"):  # in situ, by thickness, metastasis (not "melanosis")
        return 2
    if "nevus" in d:  # blue, clark, combined, congenital, dermal, recurrent, reed or spitz
        return 4
    return 3  # miscellaneous: dermatofibroma, lentigo, melanosis, miscellaneous, vascular lesion


def prepare_derm7pt(
    raw_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    check: bool = False,
) -> dict[str, Any]:
    """Derm7pt, the seven-point checklist dermatology dataset (Kawahara et al. 2019), dermoscopic images.

    Expected layout (``release_v0`` from derm.cs.sfu.ca)::

        release_v0/meta/meta.csv                 case_num,diagnosis,...,clinic,derm,...
        release_v0/meta/train_indexes.csv        indexes (0-based rows of meta.csv), also valid_ and test_
        release_v0/images/<derm>                 e.g. images/NEL/NEL025.JPG

    The 20 diagnoses are grouped as in the authors' five-class task: basal cell carcinoma -> carcinoma,
    seborrheic keratosis -> keratosis, melanoma (all kinds) -> melanoma, nevi (all kinds) -> nevus, the rest ->
    miscellaneous. The dermoscopic image (``derm``) of each case is used. Official train/valid/test split.
    Arguments as :func:`prepare_adam`.
    """
    raw = _raw(raw_dir)
    meta_csv = _find_file(raw, "meta.csv", "Derm7pt", "release_v0/meta/meta.csv and release_v0/images/")
    release = meta_csv.parent.parent
    images = _subfolder(release, "images", "release_v0/meta/meta.csv and release_v0/images/")
    _, rows = read_csv_rows(meta_csv, ("diagnosis", "derm"))
    splits: Splits = {split: [] for split in SPLITS}
    for split, file_name in (
        ("training", "train_indexes.csv"),
        ("validation", "valid_indexes.csv"),
        ("test", "test_indexes.csv"),
    ):
        index_file = meta_csv.parent / file_name
        if not index_file.is_file():
            raise FileNotFoundError(f"The Derm7pt download in '{release}' has no 'meta/{file_name}'.")
        _, indexes = read_csv_rows(index_file, ("indexes",))
        for entry in indexes:
            row = rows[int(entry["indexes"])]
            splits[split].append((str(images / row["derm"]), _derm7pt_class(row["diagnosis"])))
    _check_exist((p for items in splits.values() for p, _ in items), f"'{meta_csv}'")
    return _finish(
        "derm7pt",
        splits,
        out,
        official=True,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        check=check,
        source=f"'{meta_csv}'",
    )


def prepare_fetal_us(
    raw_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    check: bool = False,
) -> dict[str, Any]:
    """FETAL_PLANES_DB (Burgos-Artizzu et al. 2020, Zenodo 3904280): maternal-fetal ultrasound planes.

    Expected layout (``FETAL_PLANES_ZENODO``)::

        FETAL_PLANES_DB_data.csv   Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine;Train
        Images/<Image_name>.png

    ``Plane`` is the label ("Other" is the registry's "Other planes"); ``Train`` (1/0) is the official
    train/test split of the paper; validation is carved out of the training split, stratified by class with each
    patient (``Patient_num``) in one split. Arguments as :func:`prepare_adam`.
    """
    raw = _raw(raw_dir)
    csv_file = _find_file(
        raw, "FETAL_PLANES_DB_data.csv", "FETAL_PLANES_DB", "FETAL_PLANES_DB_data.csv and Images/<Image_name>.png"
    )
    images = _subfolder(csv_file.parent, "Images", "FETAL_PLANES_DB_data.csv and Images/<Image_name>.png")
    names = {n.lower(): i for i, n in enumerate(get_dataset("fetal-us").class_names)}
    names["other"] = names["other planes"]
    _, rows = read_csv_rows(csv_file, ("Image_name", "Patient_num", "Plane", "Train"))
    splits: Splits = {split: [] for split in SPLITS}
    groups: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        plane = row["Plane"].strip().lower()
        if plane not in names:
            raise ValueError(f"Unknown plane '{row['Plane']}' on line {line} of '{csv_file}'.")
        split = "training" if row["Train"].strip() == "1" else "test"
        path = str(images / f"{row['Image_name']}.png")
        splits[split].append((path, names[plane]))
        if row["Patient_num"]:
            groups[path] = f"patient {row['Patient_num']}"
    _check_exist((p for items in splits.values() for p, _ in items), f"'{csv_file}'")
    return _finish(
        "fetal-us",
        splits,
        out,
        official=True,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        check=check,
        source=f"'{csv_file}'",
        groups=groups,
    )


_ISIC2018_COLUMNS = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")  # the registry's class order
_ISIC2019_COLUMNS = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC")


def _isic_items(csv_file: Path, images: Path, columns: tuple[str, ...]) -> list[tuple[str, int]]:
    _, rows = read_csv_rows(csv_file, ("image", *columns))
    items = []
    for row in rows:
        scores = [float(row.get(c) or 0) for c in columns]
        if max(scores) > 0:  # ISIC 2019's SCC and UNK rows have none of the seven classes
            items.append((str(images / f"{row['image']}.jpg"), int(np.argmax(scores))))
    _check_exist((p for p, _ in items), f"'{csv_file}'")
    return items


_ISIC_LESION_FILES = (  # file name, image column, lesion column
    ("ISIC2018_Task3_Training_LesionGroupings.csv", "image", "lesion_id"),
    ("HAM10000_metadata.csv", "image_id", "lesion_id"),
    ("HAM10000_metadata", "image_id", "lesion_id"),
    ("ISIC_2019_Training_Metadata.csv", "image", "lesion_id"),
)


def _isic_groups(raw: Path, items: Iterable[tuple[str, int]]) -> dict[str, str] | None:
    """Image path -> lesion id from the lesion groupings or metadata CSV when the download has one, else None."""
    lesions: dict[str, str] = {}
    found = False
    for file_name, image_column, lesion_column in _ISIC_LESION_FILES:
        try:
            csv_file = _find_file(raw, file_name, "ISIC", "")
        except FileNotFoundError:
            continue
        found = True
        _, rows = read_csv_rows(csv_file, (image_column, lesion_column))
        for row in rows:
            if row[lesion_column]:
                lesions.setdefault(row[image_column], row[lesion_column])
    if not found:
        return None
    return {path: f"lesion {lesions[Path(path).stem]}" for path, _ in items if Path(path).stem in lesions}


def prepare_isic(
    raw_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    check: bool = False,
) -> dict[str, Any]:
    """ISIC 2018 Task 3 (HAM10000), or ISIC 2019 restricted to the same seven classes.

    Expected layout (ISIC challenge downloads, each zip unpacked in place)::

        ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv
            image,MEL,NV,BCC,AKIEC,BKL,DF,VASC   (one-hot)
        ISIC2018_Task3_Training_Input/ISIC_0024306.jpg ...
        ISIC2018_Task3_Validation_GroundTruth/..., ISIC2018_Task3_Validation_Input/    (optional)
        ISIC2018_Task3_Test_GroundTruth/..., ISIC2018_Task3_Test_Input/                (optional)

    or ``ISIC_2019_Training_GroundTruth.csv`` (``image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK``) with
    ``ISIC_2019_Training_Input/``, whose SCC and UNK images are left out. The official 2018 validation and test
    splits are used when their ground truth is present; missing splits are carved out of the training images,
    keeping all images of one lesion in one split when a lesion table is present
    (``ISIC2018_Task3_Training_LesionGroupings.csv`` ``image,lesion_id``, ``HAM10000_metadata.csv``
    ``lesion_id,image_id`` or ``ISIC_2019_Training_Metadata.csv`` ``image,...,lesion_id``).
    Arguments as :func:`prepare_adam`.
    """
    raw = _raw(raw_dir)
    try:
        train_csv = _find_file(raw, "ISIC2018_Task3_Training_GroundTruth.csv", "ISIC", "")
    except FileNotFoundError:
        train_csv = None
    splits: Splits = {split: [] for split in SPLITS}
    if train_csv is not None:
        for split, part in (("training", "Training"), ("validation", "Validation"), ("test", "Test")):
            try:
                csv_file = _find_file(raw, f"ISIC2018_Task3_{part}_GroundTruth.csv", "ISIC", "")
            except FileNotFoundError:
                continue  # the validation and test ground truths are separate downloads
            images = next((f for f in _folders(raw) if f.name.lower() == f"isic2018_task3_{part.lower()}_input"), None)
            if images is None:
                raise FileNotFoundError(f"'{raw}' has '{csv_file.name}' but no 'ISIC2018_Task3_{part}_Input' folder.")
            splits[split] = _isic_items(csv_file, images, _ISIC2018_COLUMNS)
        source = f"'{train_csv}'"
    else:
        csv_file = _find_file(
            raw,
            "ISIC_2019_Training_GroundTruth.csv",
            "ISIC 2018 Task 3 or ISIC 2019",
            "ISIC2018_Task3_Training_GroundTruth.csv or ISIC_2019_Training_GroundTruth.csv "
            "with its _Input image folder",
        )
        images = next((f for f in _folders(raw) if f.name.lower() == "isic_2019_training_input"), None)
        if images is None:
            raise FileNotFoundError(f"'{raw}' has '{csv_file.name}' but no 'ISIC_2019_Training_Input' folder.")
        splits["training"] = _isic_items(csv_file, images, _ISIC2019_COLUMNS)
        source = f"'{csv_file}'"
    return _finish(
        "isic",
        splits,
        out,
        official=True,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        check=check,
        source=source,
        groups=_isic_groups(raw, splits["training"]),
    )


_KVASIR_FOLDERS = (
    "dyed-lifted-polyps",
    "dyed-resection-margins",
    "esophagitis",
    "normal-cecum",
    "normal-pylorus",
    "normal-z-line",
    "polyps",
    "ulcerative-colitis",
)


def prepare_kvasir(
    raw_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    check: bool = False,
) -> dict[str, Any]:
    """Kvasir v2 (Pogorelov et al. 2017): 8 classes of gastrointestinal endoscopy, 1000 images each.

    Expected layout (``kvasir-dataset-v2.zip``)::

        kvasir-dataset-v2/dyed-lifted-polyps/*.jpg, dyed-resection-margins/, esophagitis/, normal-cecum/,
                          normal-pylorus/, normal-z-line/, polyps/, ulcerative-colitis/

    No official split: stratified seeded split. Arguments as :func:`prepare_adam`.
    """
    raw = _raw(raw_dir)
    root = _find_folder_with(raw, _KVASIR_FOLDERS, "Kvasir v2", "kvasir-dataset-v2/<class folder>/*.jpg")
    splits = _by_folder(root, {folder: i for i, folder in enumerate(_KVASIR_FOLDERS)})
    return _finish(
        "kvasir",
        splits,
        out,
        official=False,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        check=check,
        source=f"'{root}'",
    )


def _odir_table(raw: Path, required: tuple[str, ...]) -> tuple[Path, Path, list[dict[str, str]]]:
    layout = "full_df.csv and preprocessed_images/ (Kaggle's ocular-disease-recognition-odir5k)"
    csv_file = _find_file(raw, "full_df.csv", "ODIR-5K", layout)
    images = next(
        (f for f in _folders(raw) if f.name.lower() in ("preprocessed_images", "training images")),
        None,
    )
    if images is None:
        raise FileNotFoundError(f"'{raw}' has '{csv_file.name}' but no 'preprocessed_images' folder.")
    _, rows = read_csv_rows(csv_file, ("ID", "filename", *required))
    return csv_file, images, rows


def _odir_groups(rows: Iterable[dict[str, str]], images: Path) -> dict[str, str]:
    """Image path -> patient (the ``ID`` column: both eyes of a patient share it)."""
    return {str(images / row["filename"]): f"patient {row['ID']}" for row in rows if row["ID"]}


def prepare_odir(
    raw_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    check: bool = False,
) -> dict[str, Any]:
    """ODIR-5K (Peking University ocular disease recognition), 8 classes, one label per fundus image.

    Expected layout (Kaggle's ``andrewmvd/ocular-disease-recognition-odir5k``)::

        full_df.csv            ID,...,Left-Diagnostic Keywords,Right-Diagnostic Keywords,N,D,G,C,A,H,M,O,
                               filepath,labels,target,filename      (labels: "['N']", one letter per image)
        preprocessed_images/<filename>   e.g. 0_right.jpg

    The letters N, D, G, C, A, H, M, O are the registry's class order. No official labelled test split:
    stratified seeded split that keeps both eyes of a patient (``ID``) in one split. Arguments as
    :func:`prepare_adam`.
    """
    raw = _raw(raw_dir)
    csv_file, images, rows = _odir_table(raw, ("labels",))
    letters = "NDGCAHMO"
    items = []
    for line, row in enumerate(rows, start=2):
        try:
            letter = ast.literal_eval(row["labels"])[0]
        except (ValueError, SyntaxError, IndexError, KeyError) as e:
            raise ValueError(f"Line {line} of '{csv_file}' has no readable 'labels' value.") from e
        if letter not in letters:
            raise ValueError(f"Unknown ODIR label '{letter}' on line {line} of '{csv_file}'.")
        items.append((str(images / row["filename"]), letters.index(letter)))
    items = sorted(set(items))
    _check_exist((p for p, _ in items), f"'{csv_file}'")
    return _finish(
        "odir",
        {"training": items},
        out,
        official=False,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        check=check,
        source=f"'{csv_file}'",
        groups=_odir_groups(rows, images),
    )


def prepare_odir2(
    raw_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    check: bool = False,
) -> dict[str, Any]:
    """ODIR-5K normal versus cataract, labelled per eye from the diagnostic keywords.

    Expected layout: as :func:`prepare_odir`. An image is "normal" when its eye's keywords
    (``Left-Diagnostic Keywords`` for ``*_left.jpg``) are exactly "normal fundus", "cataract" when they mention
    cataract; other images are left out. Stratified seeded split keeping both eyes of a patient (``ID``) in one
    split. Arguments as :func:`prepare_adam`.
    """
    raw = _raw(raw_dir)
    csv_file, images, rows = _odir_table(raw, ("Left-Diagnostic Keywords", "Right-Diagnostic Keywords"))
    items = set()
    for row in rows:
        file_name = row["filename"]
        side = "Left" if "left" in file_name.lower() else "Right"
        keywords = row[f"{side}-Diagnostic Keywords"].strip().lower()
        if keywords == "normal fundus":
            items.add((str(images / file_name), 0))
        elif "cataract" in keywords:
            items.add((str(images / file_name), 1))
    _check_exist((p for p, _ in items), f"'{csv_file}'")
    return _finish(
        "odir2",
        {"training": sorted(items)},
        out,
        official=False,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        check=check,
        source=f"'{csv_file}'",
        groups=_odir_groups(rows, images),
    )


def _chest_xray(raw: Path, label_of: Callable[[str, Path], int]) -> tuple[Path, Splits]:
    root = _find_folder_with(
        raw, ("train", "test"), "chest X-ray pneumonia", "chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg"
    )
    splits: Splits = {split: [] for split in SPLITS}
    for split, folder in (("training", "train"), ("validation", "val"), ("test", "test")):
        children = _children(root)
        if folder not in children:
            continue
        classes = _children(children[folder])
        for class_folder in ("normal", "pneumonia"):
            if class_folder not in classes:
                raise FileNotFoundError(f"'{children[folder]}' has no '{class_folder.upper()}' folder.")
            for path in list_images(classes[class_folder], (".jpeg", ".jpg", ".png")):
                splits[split].append((path, label_of(class_folder, Path(path))))
    return root, splits


def prepare_pneumonia2(
    raw_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    check: bool = False,
) -> dict[str, Any]:
    """Paediatric chest X-ray pneumonia (Kermany et al. 2018), normal versus pneumonia.

    Expected layout (Kaggle's ``chest-xray-pneumonia``; its nested duplicate and ``__MACOSX`` are ignored)::

        chest_xray/train/NORMAL/*.jpeg, chest_xray/train/PNEUMONIA/*.jpeg
        chest_xray/val/...  chest_xray/test/...

    Official train/val/test split (the official validation split is small: 16 images). Arguments as
    :func:`prepare_adam`.
    """
    raw = _raw(raw_dir)
    root, splits = _chest_xray(raw, lambda folder, _: 0 if folder == "normal" else 1)
    return _finish(
        "pneumonia2",
        splits,
        out,
        official=True,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        check=check,
        source=f"'{root}'",
    )


def _pneumonia_kind(folder: str, path: Path) -> int:
    if folder == "normal":
        return 0
    name = path.name.lower()
    if "bacteria" in name:
        return 1
    if "virus" in name:
        return 2
    raise ValueError(f"Cannot tell bacterial from viral pneumonia for '{path}': its name has neither.")


def prepare_pneumonia3(
    raw_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    check: bool = False,
) -> dict[str, Any]:
    """Paediatric chest X-ray pneumonia, 3 classes: normal, bacterial and viral pneumonia.

    Expected layout: as :func:`prepare_pneumonia2`; the kind of pneumonia is in the file name
    (``person1_bacteria_1.jpeg``, ``person1_virus_6.jpeg``). Official train/val/test split. Arguments as
    :func:`prepare_adam`.
    """
    raw = _raw(raw_dir)
    root, splits = _chest_xray(raw, _pneumonia_kind)
    return _finish(
        "pneumonia3",
        splits,
        out,
        official=True,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        check=check,
        source=f"'{root}'",
    )


PREPARE_FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "adam": prepare_adam,
    "aptos2019": prepare_aptos2019,
    "bloodmnist": prepare_bloodmnist,
    "busi": prepare_busi,
    "chaoyang": prepare_chaoyang,
    "cpn-x-ray": prepare_cpn_x_ray,
    "derm7pt": prepare_derm7pt,
    "dermamnist": prepare_dermamnist,
    "fetal-us": prepare_fetal_us,
    "isic": prepare_isic,
    "kvasir": prepare_kvasir,
    "odir": prepare_odir,
    "odir2": prepare_odir2,
    "pneumonia2": prepare_pneumonia2,
    "pneumonia3": prepare_pneumonia3,
}
for _name, _function in PREPARE_FUNCTIONS.items():
    DATASETS[_name].prepare = _function


def prepare_dataset(
    name: str,
    raw_dir: str | os.PathLike,
    out: str | os.PathLike,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run the ``prepare`` function of the registered dataset ``name`` (or alias); see the ``prepare_*`` functions.

    Raises:
        ValueError: unknown dataset (listing the valid names), or a dataset without a prepare function.
    """
    spec = get_dataset(name)
    if spec.prepare is None:
        raise ValueError(f"Dataset '{spec.name}' has no prepare function; build its datalist from a folder or CSV.")
    return spec.prepare(raw_dir, out, **kwargs)
