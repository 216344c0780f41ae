"""The token layout of prompts: ``[start] slots... text-tokens... [end]`` per class, shared by every text tower."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["PromptLayout", "layout_prompts"]


@dataclass
class PromptLayout:
    """Token layout of one prompt per class: ``[start] slots... text-tokens... [end]``.

    Attributes:
        token_ids: ``(C, T)`` token ids; slot positions hold a placeholder that is always overwritten.
        pool_index: ``(C,)`` position whose final state is the text feature (EOT for CLIP).
        slot_start: position of the first slot (slots are contiguous, the same start for every class).
        context_length: the encoder's full context; ``T`` is smaller when the layout was truncated.
    """

    token_ids: torch.Tensor
    pool_index: torch.Tensor
    slot_start: int
    context_length: int


def layout_prompts(
    tower: nn.Module,
    texts: Sequence[str],
    n_slots: Sequence[int],
    start: list[int],
    end: list[int],
    pad: int,
    truncate: bool,
    fit: bool,
) -> PromptLayout:
    """``start <slots> <text> end`` per class, padded with ``pad``; the pool index is each prompt's last token.

    ``tower`` gives ``encode`` (text ids without special tokens) and ``context_length``.
    """
    context = int(tower.context_length)
    placeholder = tower.encode("x")[0]
    rows, pools = [], []
    for text, n in zip(texts, n_slots):
        text_ids = tower.encode(text)
        if fit:
            text_ids = text_ids[: max(0, context - len(start) - len(end) - int(n))]
        ids = start + [placeholder] * int(n) + text_ids + end
        if len(ids) > context:
            raise ValueError(
                f"The prompt for '{text}' needs {len(ids)} tokens ({n} of them prompt/knowledge slots) but the "
                f"text encoder's context is {context}: use shorter knowledge (a lower length cap "
                "when extracting), fewer context tokens (n_ctx) or a shorter class name."
            )
        rows.append(ids)
        pools.append(len(ids) - 1)
    length = max(pools) + 1 if truncate else context
    token_ids = torch.full((len(rows), length), int(pad), dtype=torch.long)
    for i, ids in enumerate(rows):
        token_ids[i, : len(ids)] = torch.tensor(ids)
    return PromptLayout(token_ids, torch.tensor(pools), len(start), context)
