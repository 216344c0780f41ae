"""Datasets: the registry of the papers' datasets and their download layouts, datalists (from downloads, folders, CSV
files, MONAI datalists, published split files), image checks and few-shot splits. Importing this package attaches
each dataset's ``prepare`` function."""

from __future__ import annotations

from .check import check_images, raise_for_unreadable
from .custom import datalist_from_csv, datalist_from_datalist, datalist_from_folder, list_images
from .datalist import (
    IMAGE_EXTENSIONS,
    SPLITS,
    grouped_stratified_split,
    load_datalist,
    make_datalist,
    normalise_class_name,
    stratified_split,
    summarize_datalist,
    validate_datalist,
    write_datalist,
)
from .fewshot import COMMON_SHOTS, ClassSubset, FewShotSampler, base_novel_split, few_shot_datalist, subsample_classes
from .layout import DatasetLayout, LabelRule, LayoutKind
from .prepare import PREPARE_FUNCTIONS, describe_layouts, prepare_dataset
from .registry import DATASETS, DatasetSpec, get_dataset, list_datasets, register_dataset
from .splits import dassl_few_shot, datalist_from_split_file, read_split_file, safe_join

__all__ = [
    "COMMON_SHOTS",
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "PREPARE_FUNCTIONS",
    "SPLITS",
    "ClassSubset",
    "DatasetLayout",
    "DatasetSpec",
    "FewShotSampler",
    "LabelRule",
    "LayoutKind",
    "base_novel_split",
    "check_images",
    "dassl_few_shot",
    "datalist_from_csv",
    "datalist_from_datalist",
    "datalist_from_folder",
    "datalist_from_split_file",
    "describe_layouts",
    "few_shot_datalist",
    "get_dataset",
    "grouped_stratified_split",
    "list_datasets",
    "list_images",
    "load_datalist",
    "make_datalist",
    "normalise_class_name",
    "prepare_dataset",
    "raise_for_unreadable",
    "read_split_file",
    "register_dataset",
    "safe_join",
    "stratified_split",
    "subsample_classes",
    "summarize_datalist",
    "validate_datalist",
    "write_datalist",
]
