"""Datasets: the registry of the paper's datasets, datalists and few-shot splits."""

from __future__ import annotations

from .registry import DATASETS, DatasetSpec, get_dataset, list_datasets, register_dataset

__all__ = ["DATASETS", "DatasetSpec", "get_dataset", "list_datasets", "register_dataset"]
