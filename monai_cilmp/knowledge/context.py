"""The CLIP context budget of a CILMP prompt: how many knowledge tokens a class can have.

CILMP writes the prompt of class ``c`` as ``[SOT] ctx_1..ctx_n k_1..k_L <class name> . [EOT]`` in CLIP's
77-token context (see :class:`~monai_cilmp.networks.nets.CILMP`), so the knowledge length ``L`` of a class is
bounded by what its name leaves free. The class name is counted with CLIP's own tokenizer (open_clip's
``SimpleTokenizer`` of ViT-B/16, the paper's backbone; it ships with open_clip, nothing is downloaded).
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = [
    "CLIP_CONTEXT_LENGTH",
    "DEFAULT_N_CTX",
    "clip_token_count",
    "clip_tokenizer",
    "class_prompt_text",
    "knowledge_length_cap",
]

CLIP_CONTEXT_LENGTH = 77
"""Context length of CLIP's text encoder (all OpenAI and most open_clip models)."""

DEFAULT_N_CTX = 4
"""CILMP's default number of learnable context tokens (initialised from "a photo of a")."""


@functools.lru_cache(maxsize=1)
def clip_tokenizer() -> Any:
    """open_clip's CLIP BPE tokenizer (``SimpleTokenizer`` of ViT-B-16), loaded once."""
    import open_clip

    return open_clip.get_tokenizer("ViT-B-16")


def class_prompt_text(class_name: str) -> str:
    """The text CILMP puts after the knowledge tokens of a class: its name with ``_`` read as a space, then ``.``."""
    return f"{class_name.replace('_', ' ')}."


def clip_token_count(text: str, tokenizer: Any | None = None) -> int:
    """Number of CLIP tokens of ``text``, without the start and end tokens.

    Args:
        text: any text.
        tokenizer: an object with ``encode(text) -> list[int]``; default :func:`clip_tokenizer`.
    """
    return len((tokenizer or clip_tokenizer()).encode(text))


def knowledge_length_cap(
    class_name: str,
    n_ctx: int = DEFAULT_N_CTX,
    context_length: int = CLIP_CONTEXT_LENGTH,
    tokenizer: Any | None = None,
) -> int:
    """The largest knowledge length ``L_c`` for which the CILMP prompt of ``class_name`` fits the context.

    ``1 (SOT) + n_ctx + L_c + tokens("<class name>.") + 1 (EOT) <= context_length``.

    Args:
        class_name: the class name as given to CILMP.
        n_ctx: number of learnable context tokens of the network.
        context_length: the text encoder's context length.
        tokenizer: CLIP tokenizer with ``encode``; default :func:`clip_tokenizer`.

    Returns:
        the cap, at least 1.

    Raises:
        ValueError: the class name alone leaves no room for knowledge.
    """
    used = 2 + int(n_ctx) + clip_token_count(class_prompt_text(class_name), tokenizer)
    cap = int(context_length) - used
    if cap < 1:
        raise ValueError(
            f"The class name '{class_name}' leaves no room for knowledge tokens: its prompt already needs {used} of "
            f"the {context_length} context tokens with n_ctx={n_ctx}; use a shorter class name or fewer context tokens."
        )
    return cap
