"""Medical knowledge for prompts: the knowledge bank consumed by CILMP."""

from __future__ import annotations

from .bank import KnowledgeBank, KnowledgeClassMismatchError

__all__ = ["KnowledgeBank", "KnowledgeClassMismatchError"]
