"""The registry of the medical datasets of CILMP (IEEE TMI 2025) and BiomedCoOp (CVPR 2025): one entry each.

An entry holds the class names in label order, the modality and its preprocessing preset, and the layouts of its
public downloads (:class:`~monai_cilmp.data.layout.DatasetLayout`, tried in order by
:func:`~monai_cilmp.data.prepare_dataset`). Class names and their order follow the reference CILMP code for CILMP's
datasets and BiomedCoOp's split files for the others, so that label ``i`` means the same thing here and in the
papers' splits; ``class_synonyms`` maps the other paper's names of a shared dataset's classes to ours.
"""

from __future__ import annotations

import difflib
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field

from .layout import DatasetLayout, LabelRule, LayoutKind

__all__ = ["DATASETS", "DatasetSpec", "describe_layouts", "get_dataset", "list_datasets", "register_dataset"]


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
        layouts: the layouts of its downloads, tried in order (a published split file first, where there is one).
        class_synonyms: other names of its classes (e.g. in the other paper's split files) -> our class name.
        papers: the papers that evaluate it (``"cilmp"``, ``"biomedcoop"``).
        curated_descriptions: :mod:`monai_cilmp.knowledge` has curated descriptions of its classes.
        notes: anything a user should know (e.g. why a preset was chosen).
    """

    name: str
    title: str
    class_names: tuple[str, ...]
    modality: str
    preset: str
    ordinal: bool = False
    aliases: tuple[str, ...] = ()
    layouts: tuple[DatasetLayout, ...] = ()
    class_synonyms: Mapping[str, str] = field(default_factory=dict)
    papers: tuple[str, ...] = ("cilmp",)
    curated_descriptions: bool = True
    notes: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def layouts_checked(self) -> bool:
        """Every layout was checked (:attr:`DatasetLayout.checked`) rather than written from documentation."""
        return all(layout.checked for layout in self.layouts)


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


# ---------------------------------------------------------------------------------------------------------------
# layouts shared by several entries
# ---------------------------------------------------------------------------------------------------------------
def _folders(expected: str, folders: Mapping[str, int], **kwargs) -> DatasetLayout:
    """A folder per class, no official split."""
    return DatasetLayout(LayoutKind.CLASS_FOLDERS, expected, tuple(folders), dict(folders), **kwargs)


def _biomedcoop(
    folder: str, class_folders: tuple[str, ...], extensions=(".png", ".jpg", ".jpeg"), checked: bool = True
) -> tuple:
    """BiomedCoOp's archive ``<folder>/<folder>/<class folder>/*`` with its ``split_<folder>.json``; without the
    split file, its class folders (label = position in ``class_folders``) with a stratified split. ``checked``: the
    folder and class names were read from every image path of the published split file."""
    against = f"every image path of BiomedCoOp's split_{folder}.json" if checked else ""
    split = DatasetLayout(
        LayoutKind.SPLIT_FILE,
        f"{folder}/split_{folder}.json and {folder}/{folder}/<class folder>/* (BiomedCoOp's archive and split file)",
        (f"split_{folder}.json",),
        images=(folder,),
        official=True,
        checked=against,
    )
    classes = DatasetLayout(
        LayoutKind.CLASS_FOLDERS,
        f"{folder}/{folder}/{{{','.join(class_folders)}}}/* (BiomedCoOp's archive without its split file)",
        class_folders,
        {name: i for i, name in enumerate(class_folders)},
        extensions=extensions,
        checked=against,
    )
    return split, classes


def _medmnist(name: str) -> DatasetLayout:
    return DatasetLayout(
        LayoutKind.NPZ,
        f"{name}.npz or {name}_<size>.npz (MedMNIST; the largest size is used): train/val/test images and labels",
        (name,),
        official=True,
    )


_CHEST_XRAY = "chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg"
_ODIR = "full_df.csv and preprocessed_images/ (Kaggle's ocular-disease-recognition-odir5k)"
_ODIR_TABLE = dict(
    anchor=("full_df.csv",),
    image="{filename}",
    images=("preprocessed_images", "training images"),
    images_anywhere=True,
    group_column="ID",
    deduplicate=True,
)
_ISIC_GROUPS = (  # file name, image column, lesion column
    ("ISIC2018_Task3_Training_LesionGroupings.csv", "image", "lesion_id"),
    ("HAM10000_metadata.csv", "image_id", "lesion_id"),
    ("HAM10000_metadata", "image_id", "lesion_id"),
    ("ISIC_2019_Training_Metadata.csv", "image", "lesion_id"),
)
_ISIC2018 = {part: f"ISIC2018_Task3_{part.title()}" for part in ("training", "validation", "test")}
_KVASIR = (
    "dyed-lifted-polyps",
    "dyed-resection-margins",
    "esophagitis",
    "normal-cecum",
    "normal-pylorus",
    "normal-z-line",
    "polyps",
    "ulcerative-colitis",
)
_FETAL_PLANES = ("Fetal brain", "Fetal femur", "Fetal abdomen", "Fetal thorax", "Maternal cervix", "Other planes")
_BIOMEDCOOP, _BOTH = ("biomedcoop",), ("cilmp", "biomedcoop")
_EQ, _STARTS, _HAS = "equals", "startswith", "contains"


for _spec in (
    DatasetSpec(
        "adam",
        "ADAM",
        ("normal fundus", "fundus with age-related macular degeneration"),
        "colour fundus photograph",
        "fundus",
        layouts=(_folders("Training400/AMD/*.jpg and Training400/Non-AMD/*.jpg", {"AMD": 1, "Non-AMD": 0}),),
        notes="The labelled training release (Training400); the validation and test labels are not read.",
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
        layouts=(
            DatasetLayout(
                LayoutKind.TABLE,
                "train.csv and train_images/<id_code>.png",
                ("train.csv",),
                image="{id_code}.png",
                images=("train_images",),
                label_column="diagnosis",
            ),
        ),
        notes="Only Kaggle's training images are labelled (diagnosis 0-4): stratified split of them.",
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
        layouts=(_medmnist("bloodmnist"),),
    ),
    DatasetSpec(
        "btmri",
        "Brain Tumor MRI (BTMRI)",
        ("glioma tumor", "meningioma tumor", "pituitary tumor", "normal brain"),
        "brain MRI slice",
        "mri",
        layouts=_biomedcoop("BTMRI", ("glioma_tumor", "meningioma_tumor", "pituitary_tumor", "normal_brain")),
        papers=_BIOMEDCOOP,
        curated_descriptions=False,
    ),
    DatasetSpec(
        "busi",
        "Breast Ultrasound Images (BUSI)",
        ("normal", "malignant", "benign"),
        "breast ultrasound image",
        "ultrasound",
        layouts=(
            _biomedcoop("BUSI", ("benign_tumor", "malignant_tumor", "normal_scan"))[0],
            _folders(
                "Dataset_BUSI_with_GT/{benign,malignant,normal}/*.png (masks skipped)",
                {"normal": 0, "malignant": 1, "benign": 2},
                exclude=("_mask",),
            ),
        ),
        class_synonyms={"benign tumor": "benign", "malignant tumor": "malignant", "normal scan": "normal"},
        papers=_BOTH,
    ),
    DatasetSpec(
        "chaoyang",
        "Chaoyang",
        ("normal", "serrated", "adenocarcinoma", "adenoma"),
        "colon histopathology image",
        "histopathology",
        layouts=(
            DatasetLayout(
                LayoutKind.JSON_LISTS,
                "train.json, test.json ([{name, label}]), train/ and test/",
                ("train.json",),
                image="name",
                label_column="label",
                split_files={"training": "train.json", "test": "test.json"},
                official=True,
            ),
        ),
    ),
    DatasetSpec(
        "chmnist",
        "Colorectal histology (CHMNIST, Kather et al. 2016)",
        (
            "adipose tissue",
            "complex stroma",
            "debris",
            "empty background",
            "immune cells",
            "normal mucosal glands",
            "simple stroma",
            "tumour epithelium",
        ),
        "colorectal histopathology image",
        "histopathology",
        layouts=_biomedcoop(
            "CHMNIST",
            (
                "adipose_tissue",
                "complex_stroma",
                "debris",
                "empty_background",
                "immune_cells",
                "normal_mucosal_glands",
                "simple_stroma",
                "tumour_epithelium",
            ),
            (".tif", ".tiff", ".png", ".jpg"),
        ),
        papers=_BIOMEDCOOP,
        curated_descriptions=False,
    ),
    DatasetSpec(
        "covid-qu-ex",
        "COVID-19 Radiography Database (COVID-QU-Ex; BiomedCoOp's COVID_19)",
        ("covid lungs", "lung opacity lungs", "viral pneumonia lungs", "normal lungs"),
        "chest X-ray",
        "radiography",
        aliases=("covid-19", "covid19", "covid-19-radiography"),
        layouts=_biomedcoop("COVID_19", ("covid_lungs", "lung_opacity_lungs", "viral_pneumonia_lungs", "normal_lungs")),
        papers=_BIOMEDCOOP,
        curated_descriptions=False,
    ),
    DatasetSpec(
        "cpn-x-ray",
        "COVID-19, Pneumonia and Normal chest X-ray (CPN-X-ray)",
        ("normal", "covid", "pneumonia"),
        "chest X-ray",
        "radiography",
        aliases=("cpn_x_ray", "cpn"),
        layouts=(_folders("covid/, normal/ and pneumonia/", {"normal": 0, "covid": 1, "pneumonia": 2}),),
    ),
    DatasetSpec(
        "ctkidney",
        "CT Kidney: normal, cyst, tumor and stone (CTKidney)",
        ("cyst kidney", "kidney stone", "kidney tumor", "normal kidney"),
        "kidney CT slice",
        "radiography",
        aliases=("ct-kidney",),
        layouts=_biomedcoop("CTKidney", ("cyst_kidney", "kidney_stone", "kidney_tumor", "normal_kidney")),
        papers=_BIOMEDCOOP,
        curated_descriptions=False,
        notes="The images are 8-bit JPEG exports of windowed CT slices (no Hounsfield units): the radiography "
        "preset's percentile normalisation fits them, the ct preset's HU windows do not.",
    ),
    DatasetSpec(
        "derm7pt",
        "Derm7pt",
        ("carcinoma", "keratosis", "melanoma", "miscellaneous", "nevus"),
        "dermoscopy image",
        "dermoscopy",
        layouts=(
            DatasetLayout(
                LayoutKind.INDEXED_TABLE,
                "release_v0/meta/{meta,train_indexes,valid_indexes,test_indexes}.csv and release_v0/images/",
                ("meta.csv",),
                # the authors' five-class DIAG task: their 20 diagnoses grouped; the rest is "miscellaneous"
                rules=(
                    LabelRule(_EQ, "basal cell carcinoma", 0),
                    LabelRule(_EQ, "seborrheic keratosis", 1),
                    LabelRule(_STARTS, "melanoma", 2),  # in situ, by thickness, metastasis (not "melanosis")
                    LabelRule(_HAS, "nevus", 4),  # blue, clark, combined, congenital, dermal, recurrent, reed, spitz
                ),
                unmatched=3,
                image="{derm}",
                images=("../images",),
                label_column="diagnosis",
                split_files={
                    "training": "train_indexes.csv",
                    "validation": "valid_indexes.csv",
                    "test": "test_indexes.csv",
                },
                official=True,
            ),
        ),
        notes="The dermoscopic image (derm column) of each case is used, not the clinical one.",
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
        layouts=(
            _biomedcoop(
                "DermaMNIST",
                (
                    "actinic_keratosis",
                    "basal_cell_carcinoma",
                    "benign_keratosis",
                    "dermatofibroma",
                    "melanoma",
                    "melanocytic_nevus",
                    "vascular_lesion",
                ),
            )[0],
            _medmnist("dermamnist"),
        ),
        class_synonyms={
            "actinic keratosis": "actinic keratoses and intraepithelial carcinoma",
            "benign keratosis": "benign keratosis-like lesions",
            "melanocytic nevus": "melanocytic nevi",
            "vascular lesion": "vascular lesions",
        },
        papers=_BOTH,
    ),
    DatasetSpec(
        "fetal-us",
        "Fetal Planes (FETAL_PLANES_DB)",
        _FETAL_PLANES,
        "fetal ultrasound image",
        "ultrasound",
        aliases=("fetal_us", "fetal-planes", "fetal"),
        layouts=(
            DatasetLayout(
                LayoutKind.TABLE,
                "FETAL_PLANES_DB_data.csv and Images/<Image_name>.png",
                ("FETAL_PLANES_DB_data.csv",),
                {**{name.lower(): i for i, name in enumerate(_FETAL_PLANES)}, "other": 5},
                image="{Image_name}.png",
                images=("Images",),
                label_column="Plane",
                split_column="Train",
                split_values={"1": "training", "0": "test"},
                group_column="Patient_num",
                official=True,
            ),
        ),
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
        layouts=(
            DatasetLayout(
                LayoutKind.ONE_HOT,
                "ISIC2018_Task3_{Training,Validation,Test}_GroundTruth.csv (image,MEL,NV,BCC,AKIEC,BKL,DF,VASC) with "
                "their ISIC2018_Task3_*_Input/ folders (validation and test optional)",
                ("ISIC2018_Task3_Training_GroundTruth.csv",),
                {"MEL": 0, "NV": 1, "BCC": 2, "AKIEC": 3, "BKL": 4, "DF": 5, "VASC": 6},
                image="{image}.jpg",
                group_files=_ISIC_GROUPS,
                split_files={split: f"{part}_GroundTruth.csv" for split, part in _ISIC2018.items()},
                split_images={split: f"{part}_Input" for split, part in _ISIC2018.items()},
                optional_splits=("validation", "test"),
                official=True,
            ),
            DatasetLayout(
                LayoutKind.ONE_HOT,
                "ISIC_2019_Training_GroundTruth.csv (image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK) with "
                "ISIC_2019_Training_Input/ (SCC and UNK images left out)",
                ("ISIC_2019_Training_GroundTruth.csv",),
                {"MEL": 0, "NV": 1, "BCC": 2, "AK": 3, "BKL": 4, "DF": 5, "VASC": 6},
                image="{image}.jpg",
                group_files=_ISIC_GROUPS,
                split_files={"training": "ISIC_2019_Training_GroundTruth.csv"},
                split_images={"training": "ISIC_2019_Training_Input"},
                official=True,
            ),
        ),
        notes="Missing splits are carved out of the training images keeping each lesion in one split when a "
        "lesion table (ISIC2018_Task3_Training_LesionGroupings.csv, HAM10000_metadata.csv or "
        "ISIC_2019_Training_Metadata.csv) is present.",
    ),
    DatasetSpec(
        "kneexray",
        "Knee osteoarthritis severity (KneeXray, Kellgren-Lawrence grades)",
        (
            "healthy knee",
            "doubtful osteoarthritis",
            "minimal osteoarthritis",
            "moderate osteoarthritis",
            "severe osteoarthritis",
        ),
        "knee X-ray",
        "radiography",
        ordinal=True,
        aliases=("knee-xray", "knee"),
        layouts=_biomedcoop(
            "KneeXray",
            (
                "healthy_knee",
                "doubtful_osteoarthritis",
                "minimal_osteoarthritis",
                "moderate_osteoarthritis",
                "severe_osteoarthritis",
            ),
        ),
        papers=_BIOMEDCOOP,
        curated_descriptions=False,
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
        layouts=(
            _biomedcoop("Kvasir", tuple(f.replace("-", "_") for f in _KVASIR))[0],
            _folders("kvasir-dataset-v2/<8 class folders>/*.jpg", {f: i for i, f in enumerate(_KVASIR)}),
        ),
        papers=_BOTH,
        notes="BiomedCoOp's Kvasir (2,000/800/1,200 images) has the same eight classes.",
    ),
    DatasetSpec(
        "lc25000",
        "LC25000 lung and colon histopathology (BiomedCoOp's LungColon)",
        (
            "colon adenocarcinoma",
            "colon benign tissue",
            "lung adenocarcinoma",
            "lung benign tissue",
            "lung squamous cell carcinoma",
        ),
        "lung and colon histopathology image",
        "histopathology",
        aliases=("lungcolon", "lung-colon"),
        layouts=_biomedcoop(
            "LungColon",
            (
                "colon_adenocarcinoma",
                "colon_benign_tissue",
                "lung_adenocarcinoma",
                "lung_benign_tissue",
                "lung_squamous_cell_carcinoma",
            ),
        ),
        papers=_BIOMEDCOOP,
        curated_descriptions=False,
    ),
    DatasetSpec(
        "octmnist",
        "OCTMNIST (MedMNIST v2, retinal OCT)",
        ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
        "retinal optical coherence tomography B-scan",
        "ultrasound",
        layouts=(
            _biomedcoop(
                "OCTMNIST",
                ("choroidal_neovascularization", "diabetic_macular_edema", "drusen", "normal"),
                checked=False,
            )[0],
            _medmnist("octmnist"),
        ),
        class_synonyms={
            "cnv": "choroidal neovascularization",
            "dme": "diabetic macular edema",
            "normal retina": "normal",
        },
        papers=_BIOMEDCOOP,
        curated_descriptions=False,
        notes="BiomedCoOp's split_OCTMNIST.json could not be read here; its prompt file (trainers/prompt_templates.py) "
        "names the classes as ours but 'normal OCT scan' (compare --benchmark biomedcoop renames it); the class "
        "order is MedMNIST's. No OCT preset: the ultrasound preset's speckle-robust grey normalisation is the "
        "closest.",
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
        layouts=(
            DatasetLayout(
                LayoutKind.TABLE,
                _ODIR + "; labels column: ['N'] ... ['O']",
                classes={f"['{letter}']": i for i, letter in enumerate("NDGCAHMO")},
                label_column="labels",
                **_ODIR_TABLE,
            ),
        ),
        notes="One label per fundus image; both eyes of a patient (ID) stay in one split.",
    ),
    DatasetSpec(
        "odir2",
        "ODIR-5K normal vs cataract",
        ("normal", "cataract"),
        "colour fundus photograph",
        "fundus",
        aliases=("odir-2",),
        layouts=(
            DatasetLayout(
                LayoutKind.TABLE,
                _ODIR + "; per-eye Left-/Right-Diagnostic Keywords",
                rules=(LabelRule(_EQ, "normal fundus", 0), LabelRule(_HAS, "cataract", 1)),
                unmatched="skip",
                label_column="{eye}-Diagnostic Keywords",
                **_ODIR_TABLE,
            ),
        ),
        notes="An eye is normal when its keywords are exactly 'normal fundus', cataract when they mention "
        "cataract; other eyes are left out. Both eyes of a patient (ID) stay in one split.",
    ),
    DatasetSpec(
        "pneumonia2",
        "Pediatric chest X-ray pneumonia (2 classes)",
        ("normal", "pneumonia"),
        "chest X-ray",
        "radiography",
        aliases=("pneumonia",),
        layouts=(
            DatasetLayout(
                LayoutKind.SPLIT_FOLDERS,
                _CHEST_XRAY,
                ("train", "test"),
                {"normal": 0, "pneumonia": 1},
                extensions=(".jpeg", ".jpg", ".png"),
                official=True,
            ),
        ),
        notes="The official validation split is small (16 images).",
    ),
    DatasetSpec(
        "pneumonia3",
        "Pediatric chest X-ray pneumonia (3 classes)",
        ("normal", "bacteria pneumonia", "virus pneumonia"),
        "chest X-ray",
        "radiography",
        layouts=(
            DatasetLayout(
                LayoutKind.SPLIT_FOLDERS,
                _CHEST_XRAY + " (bacteria / virus in the file name)",
                ("train", "test"),
                {"normal": 0, "pneumonia": None},
                rules=(LabelRule(_HAS, "bacteria", 1), LabelRule(_HAS, "virus", 2)),
                rule_source="file",
                extensions=(".jpeg", ".jpg", ".png"),
                official=True,
            ),
        ),
    ),
    DatasetSpec(
        "retina",
        "Eye diseases classification (RETINA)",
        ("diabetic retinopathy", "glaucoma", "cataract", "normal retina"),
        "colour fundus photograph",
        "fundus",
        layouts=_biomedcoop("RETINA", ("diabetic_retinopathy", "glaucoma", "cataract", "normal_retina")),
        papers=_BIOMEDCOOP,
        curated_descriptions=False,
    ),
):
    register_dataset(_spec)


def describe_layouts(name: str) -> str:
    """The expected download layouts of a dataset, in words (its ``prepare`` docstring and ``--help``)."""
    spec = get_dataset(name)
    lines = [f"{spec.title}: {spec.num_classes} classes ({', '.join(spec.class_names)}).", ""]
    lines.append("Expected layout of the unpacked download (the first found is used):")
    for layout in spec.layouts:
        split = "official split" if layout.official else "stratified seeded split"
        checked = f"checked against {layout.checked}" if layout.checked else "UNCHECKED: written from its documentation"
        text = f"{layout.expected}; {split}; {checked}."
        lines += textwrap.wrap(text, 110, initial_indent="  - ", subsequent_indent="    ")
    if spec.notes:
        lines += ["", *textwrap.wrap(spec.notes, 110)]
    return "\n".join(lines)
