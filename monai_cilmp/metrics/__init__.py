"""Classification metrics, their files (JSON, confusion matrix CSV/PNG) and summaries over seeds."""

from __future__ import annotations

from .classification import classification_metrics, save_confusion_matrix, save_metrics, summarise_seeds

__all__ = ["classification_metrics", "save_confusion_matrix", "save_metrics", "summarise_seeds"]
