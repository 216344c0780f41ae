"""Prompt injection into frozen open_clip towers.

A *tower* wraps the frozen modules of one encoder of an open_clip model (no copies) and runs them layer by layer
so that a method can put learned tokens into the sequence before any block. The towers know the encoder
family's conventions (special tokens, pooling, causal masks); the methods (CILMP, ...) know what to inject. A
new text-tower family (e.g. the Hugging Face BERT tower of BiomedCLIP) is one more class here plus one line in
:func:`build_text_tower`; the methods do not change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "OpenCLIPTextTower",
    "OpenCLIPVisionTower",
    "PromptLayout",
    "build_text_tower",
    "build_vision_tower",
]

LayerHook = Callable[[int, torch.Tensor], torch.Tensor]


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


def _frozen(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class OpenCLIPTextTower(nn.Module):
    """open_clip's own causal text transformer (OpenAI CLIP, LAION CLIP and alike) with per-layer injection.

    Its attention is causal and its feature is pooled at the end-of-text token, so a prompt can be cut right after
    its EOT without changing the feature: :meth:`layout` does that when ``truncate=True``.

    Args:
        model: an open_clip ``CLIP`` model; its text modules are shared (not copied) and frozen.
        tokenizer: the model's open_clip tokenizer (``SimpleTokenizer``).
    """

    def __init__(self, model: nn.Module, tokenizer) -> None:
        super().__init__()
        pool = getattr(model, "text_pool_type", "argmax")
        if pool not in ("argmax", "eos") or getattr(model, "attn_mask", None) is None:
            raise ValueError(
                f"The text tower of this backbone pools with '{pool}' or is not causal; prompt injection supports "
                "CLIP-style causal text encoders pooled at the end-of-text token."
            )
        self.token_embedding = _frozen(model.token_embedding)
        self.transformer = _frozen(model.transformer)
        self.ln_final = _frozen(model.ln_final)
        self.positional_embedding = model.positional_embedding
        self.text_projection = model.text_projection
        for p in (self.positional_embedding, self.text_projection):
            if isinstance(p, nn.Parameter):
                p.requires_grad_(False)
        if isinstance(self.text_projection, nn.Module):
            _frozen(self.text_projection)
        self.register_buffer("attn_mask", model.attn_mask.clone(), persistent=False)
        self.tokenizer = tokenizer
        self.width = int(self.transformer.width)
        self.num_layers = len(self.transformer.resblocks)
        self.context_length = int(self.positional_embedding.shape[0])
        self.batch_first = getattr(self.transformer, "batch_first", True)
        self.grad_checkpointing = False

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without start/end tokens."""
        return list(self.tokenizer.encode(text))

    def layout(self, texts: Sequence[str], n_slots: Sequence[int], truncate: bool = True) -> PromptLayout:
        """Lay out ``[SOT] <n_slots[c] slots> <texts[c]> [EOT]`` per class.

        Args:
            texts: text after the slots, per class (e.g. ``"melanoma."``).
            n_slots: number of learned/injected positions per class.
            truncate: cut every prompt after the longest EOT (exact for this causal encoder).

        Raises:
            ValueError: a prompt does not fit the context; the message names the class text and the sizes.
        """
        sot, eot = self.tokenizer.sot_token_id, self.tokenizer.eot_token_id
        placeholder = self.encode("x")[0]
        rows, pools = [], []
        for text, n in zip(texts, n_slots):
            ids = [sot] + [placeholder] * int(n) + self.encode(text) + [eot]
            if len(ids) > self.context_length:
                raise ValueError(
                    f"The prompt for '{text}' needs {len(ids)} tokens ({n} of them prompt/knowledge slots) but the "
                    f"text encoder's context is {self.context_length}: use shorter knowledge (a lower length cap "
                    "when extracting), fewer context tokens (n_ctx) or a shorter class name."
                )
            rows.append(ids)
            pools.append(len(ids) - 1)
        length = max(pools) + 1 if truncate else self.context_length
        token_ids = torch.zeros(len(rows), length, dtype=torch.long)
        for i, ids in enumerate(rows):
            token_ids[i, : len(ids)] = torch.tensor(ids)
        return PromptLayout(token_ids, torch.tensor(pools), 1, self.context_length)

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (no position), ``(..., T, width)``."""
        return self.token_embedding(token_ids)

    def forward(self, x: torch.Tensor, pool_index: torch.Tensor, hook: LayerHook | None = None) -> torch.Tensor:
        """Encode input embeddings.

        Args:
            x: ``(N, T, width)`` token embeddings of the prompts (positions are added here).
            pool_index: ``(N,)`` position of each sequence's feature.
            hook: called as ``x = hook(j, x)`` before every block ``j >= 1`` (deep prompts).

        Returns:
            ``(N, embed_dim)`` projected text features (not normalised).
        """
        length = x.shape[1]
        x = x + self.positional_embedding[:length].to(x.dtype)
        mask = self.attn_mask[:length, :length]
        for j, block in enumerate(self.transformer.resblocks):
            if hook is not None and j > 0:
                x = hook(j, x)
            x = self._run_block(block, x, mask)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), pool_index]
        if isinstance(self.text_projection, nn.Module):
            return self.text_projection(x)
        return x @ self.text_projection.to(x.dtype)

    def _run_block(self, block: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not self.batch_first:
            x = x.transpose(0, 1)
        if self.grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint(block, x, None, None, mask, use_reentrant=False)
        else:
            x = block(x, attn_mask=mask)
        return x if self.batch_first else x.transpose(0, 1)


class OpenCLIPVisionTower(nn.Module):
    """open_clip's ``VisionTransformer`` with deep visual prompts (VPT-deep).

    ``prompts[0]`` is appended after the patch tokens at the input (before ``ln_pre``); every later layer
    ``j < len(prompts)`` replaces those tokens with ``prompts[j]``; they are dropped before pooling.

    Args:
        visual: the ``model.visual`` of an open_clip model; shared (not copied) and frozen.
    """

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        if not hasattr(visual, "conv1") or getattr(visual, "attn_pool", None) is not None:
            raise ValueError(
                "Visual prompts need an open_clip VisionTransformer with token or average pooling; this backbone's "
                f"image tower is {type(visual).__name__}."
            )
        self.visual = _frozen(visual)
        self.width = int(visual.transformer.width)
        self.num_layers = len(visual.transformer.resblocks)
        size = visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.batch_first = getattr(visual.transformer, "batch_first", True)
        self.grad_checkpointing = False

    def forward(self, images: torch.Tensor, prompts: torch.Tensor | None = None) -> torch.Tensor:
        """Encode normalised images ``(B, 3, H, W)`` with optional prompts ``(depth, n, width)``; ``(B, embed_dim)``."""
        v = self.visual
        x = v.conv1(images.to(v.conv1.weight.dtype))
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        x = v.patch_dropout(x)
        n = 0 if prompts is None else prompts.shape[1]
        if n:
            x = torch.cat([x, prompts[0].to(x.dtype).expand(x.shape[0], -1, -1)], dim=1)
        x = v.ln_pre(x)
        for j, block in enumerate(v.transformer.resblocks):
            if n and 0 < j < prompts.shape[0]:
                x = torch.cat([x[:, :-n], prompts[j].to(x.dtype).expand(x.shape[0], -1, -1)], dim=1)
            x = self._run_block(block, x)
        if n:
            x = x[:, :-n]
        pooled, _ = v._pool(x)
        return pooled @ v.proj if v.proj is not None else pooled

    def _run_block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if not self.batch_first:
            x = x.transpose(0, 1)
        if self.grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint(block, x, use_reentrant=False)
        else:
            x = block(x)
        return x if self.batch_first else x.transpose(0, 1)


def build_text_tower(model: nn.Module, tokenizer) -> nn.Module:
    """The prompt-injection tower for ``model``'s text encoder.

    Raises:
        NotImplementedError: the text encoder family has no tower yet (e.g. Hugging Face text towers).
    """
    if hasattr(model, "transformer") and hasattr(model, "token_embedding"):
        return OpenCLIPTextTower(model, tokenizer)
    kind = type(getattr(model, "text", model)).__name__
    raise NotImplementedError(
        f"Prompt injection into a {kind} text encoder is not available yet; use a backbone with open_clip's own "
        "text transformer (e.g. ViT-B-16 with the 'openai' weights)."
    )


def build_vision_tower(model: nn.Module) -> nn.Module:
    """The prompt-injection tower for ``model``'s image encoder."""
    return OpenCLIPVisionTower(model.visual)
