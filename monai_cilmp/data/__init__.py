"""Datasets: the registry of the paper's datasets, datalists (from downloads, folders, CSV files, MONAI datalists),
image checks and few-shot splits. Importing this package attaches each dataset's ``prepare`` function."""

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
from .fewshot import COMMON_SHOTS, ClassSubset, base_novel_split, few_shot_datalist, subsample_classes
from .prepare import PREPARE_FUNCTIONS, prepare_dataset
from .registry import DATASETS, DatasetSpec, get_dataset, list_datasets, register_dataset

__all__ = [
    "COMMON_SHOTS",
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "PREPARE_FUNCTIONS",
    "SPLITS",
    "ClassSubset",
    "DatasetSpec",
    "base_novel_split",
    "check_images",
    "datalist_from_csv",
    "datalist_from_datalist",
    "datalist_from_folder",
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
    "register_dataset",
    "stratified_split",
    "subsample_classes",
    "summarize_datalist",
    "validate_datalist",
    "write_datalist",
]
