"""The registry of the medical datasets evaluated by CILMP: class names in label order, modality and preset.

Class names and their order follow the reference CILMP code, so that label ``i`` means the same thing here and
in the paper's splits. ``preset`` names the modality preprocessing of :mod:`monai_cilmp.transforms`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["DATASETS", "DatasetSpec", "get_dataset", "list_datasets", "register_dataset"]


@dataclass
class DatasetSpec:
    """What the toolkit knows about one dataset.

    Attributes:
        name: registry key (lower case, used on the command line: ``--dataset kvasir``).
        title: the dataset's usual name.
        class_names: class names in label order.
        modality: imaging modality in words, used in prompts ("dermoscopy image", "chest X-ray", ...).
        preset: name of the modality preset of :mod:`monai_cilmp.transforms`.
        ordinal: labels are ordered grades (use quadratic-weighted kappa), e.g. diabetic retinopathy.
        aliases: other accepted names.
        prepare: function converting the public download into a MONAI datalist (set by :mod:`monai_cilmp.data`).
    """

    name: str
    title: str
    class_names: tuple[str, ...]
    modality: str
    preset: str
    ordinal: bool = False
    aliases: tuple[str, ...] = ()
    prepare: Callable | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to the registry (replacing an entry of the same name) and return it."""
    DATASETS[spec.name] = spec
    return spec


def list_datasets() -> list[str]:
    """Registered dataset names."""
    return sorted(DATASETS)


def get_dataset(name: str) -> DatasetSpec:
    """The spec registered as ``name`` or one of its aliases (case-insensitive).

    Raises:
        ValueError: unknown name; the message lists the valid ones (and suggests the closest).
    """
    key = str(name).strip().lower().replace("_", "-")
    for spec in DATASETS.values():
        if key in (spec.name, *spec.aliases):
            return spec
    close = difflib.get_close_matches(key, [n for s in DATASETS.values() for n in (s.name, *s.aliases)], n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ValueError(f"Unknown dataset '{name}'{hint}; valid names: {', '.join(list_datasets())}.")


for _spec in (
    DatasetSpec(
        "adam",
        "ADAM",
        ("normal fundus", "fundus with age-related macular degeneration"),
        "colour fundus photograph",
        "fundus",
    ),
    DatasetSpec(
        "aptos2019",
        "APTOS 2019 Blindness Detection",
        (
            "no diabetic retinopathy",
            "mild diabetic retinopathy",
            "moderate diabetic retinopathy",
            "severe diabetic retinopathy",
            "proliferative diabetic retinopathy",
        ),
        "colour fundus photograph",
        "fundus",
        ordinal=True,
        aliases=("aptos",),
    ),
    DatasetSpec(
        "bloodmnist",
        "BloodMNIST",
        (
            "basophil",
            "eosinophil",
            "erythroblast",
            "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
            "lymphocyte",
            "monocyte",
            "neutrophil",
            "platelet",
        ),
        "stained peripheral blood smear microscopy image",
        "histopathology",
    ),
    DatasetSpec(
        "busi",
        "Breast Ultrasound Images (BUSI)",
        ("normal", "malignant", "benign"),
        "breast ultrasound image",
        "ultrasound",
    ),
    DatasetSpec(
        "chaoyang",
        "Chaoyang",
        ("normal", "serrated", "adenocarcinoma", "adenoma"),
        "colon histopathology image",
        "histopathology",
    ),
    DatasetSpec(
        "cpn-x-ray",
        "COVID-19, Pneumonia and Normal chest X-ray (CPN-X-ray)",
        ("normal", "covid", "pneumonia"),
        "chest X-ray",
        "radiography",
        aliases=("cpn_x_ray", "cpn"),
    ),
    DatasetSpec(
        "derm7pt",
        "Derm7pt",
        ("carcinoma", "keratosis", "melanoma", "miscellaneous", "nevus"),
        "dermoscopy image",
        "dermoscopy",
    ),
    DatasetSpec(
        "dermamnist",
        "DermaMNIST",
        (
            "actinic keratoses and intraepithelial carcinoma",
            "basal cell carcinoma",
            "benign keratosis-like lesions",
            "dermatofibroma",
            "melanoma",
            "melanocytic nevi",
            "vascular lesions",
        ),
        "dermoscopy image",
        "dermoscopy",
    ),
    DatasetSpec(
        "fetal-us",
        "Fetal Planes (FETAL_PLANES_DB)",
        ("Fetal brain", "Fetal femur", "Fetal abdomen", "Fetal thorax", "Maternal cervix", "Other planes"),
        "fetal ultrasound image",
        "ultrasound",
        aliases=("fetal_us", "fetal-planes", "fetal"),
    ),
    DatasetSpec(
        "isic",
        "ISIC 2018/2019 (7 classes)",
        (
            "Melanoma",
            "Melanocytic nevus",
            "Basal cell carcinoma",
            "Actinic keratosis",
            "Benign keratosis",
            "Dermatofibroma",
            "Vascular lesion",
        ),
        "dermoscopy image",
        "dermoscopy",
        aliases=("isic2018", "isic2019"),
    ),
    DatasetSpec(
        "kvasir",
        "Kvasir v2",
        (
            "dyed lifted polyps",
            "dyed resection margins",
            "esophagitis",
            "normal cecum",
            "normal pylorus",
            "normal z-line",
            "polyps",
            "ulcerative colitis",
        ),
        "gastrointestinal endoscopy image",
        "endoscopy",
        aliases=("kvasir-v2", "kvasirv2"),
    ),
    DatasetSpec(
        "odir",
        "ODIR-5K (8 classes)",
        (
            "normal",
            "diabetes",
            "glaucoma",
            "cataract",
            "age related macular degeneration",
            "hypertension",
            "pathological myopia",
            "other diseases or abnormalities",
        ),
        "colour fundus photograph",
        "fundus",
        aliases=("odir-5k", "odir8"),
    ),
    DatasetSpec(
        "odir2",
        "ODIR-5K normal vs cataract",
        ("normal", "cataract"),
        "colour fundus photograph",
        "fundus",
        aliases=("odir-2",),
    ),
    DatasetSpec(
        "pneumonia2",
        "Pediatric chest X-ray pneumonia (2 classes)",
        ("normal", "pneumonia"),
        "chest X-ray",
        "radiography",
        aliases=("pneumonia",),
    ),
    DatasetSpec(
        "pneumonia3",
        "Pediatric chest X-ray pneumonia (3 classes)",
        ("normal", "bacteria pneumonia", "virus pneumonia"),
        "chest X-ray",
        "radiography",
    ),
):
    register_dataset(_spec)
