"""Datasets: the registry of the papers' datasets and their download layouts, datalists (from downloads, folders, CSV
files, MONAI datalists, published split files), image checks and few-shot splits.

Names are imported from their modules on first use, so that the registry (``get_dataset``, ``list_datasets``) is
available without loading MONAI and torch (the command line's ``--help`` lists the datasets). Each dataset's
``prepare`` function is attached to its registry entry when :mod:`monai_cilmp.data.prepare` is imported, which
``prepare_dataset`` and ``PREPARE_FUNCTIONS`` do.
"""

from __future__ import annotations

import importlib

#: public name -> the module of this package that defines it
_EXPORTS = {
    "base_novel_split": "fewshot",
    "check_images": "check",
    "ClassSubset": "fewshot",
    "COMMON_SHOTS": "fewshot",
    "dassl_few_shot": "splits",
    "datalist_from_csv": "custom",
    "datalist_from_datalist": "custom",
    "datalist_from_folder": "custom",
    "datalist_from_split_file": "splits",
    "DatasetLayout": "layout",
    "DATASETS": "registry",
    "DatasetSpec": "registry",
    "describe_layouts": "registry",
    "few_shot_datalist": "fewshot",
    "FewShotSampler": "fewshot",
    "get_dataset": "registry",
    "grouped_stratified_split": "datalist",
    "IMAGE_EXTENSIONS": "datalist",
    "LabelRule": "layout",
    "LayoutKind": "layout",
    "list_datasets": "registry",
    "list_images": "custom",
    "load_datalist": "datalist",
    "make_datalist": "datalist",
    "normalise_class_name": "datalist",
    "prepare_dataset": "prepare",
    "PREPARE_FUNCTIONS": "prepare",
    "raise_for_unreadable": "check",
    "read_split_file": "splits",
    "register_dataset": "registry",
    "safe_join": "splits",
    "SPLITS": "datalist",
    "stratified_split": "datalist",
    "subsample_classes": "fewshot",
    "summarize_datalist": "datalist",
    "validate_datalist": "datalist",
    "write_datalist": "datalist",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


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
