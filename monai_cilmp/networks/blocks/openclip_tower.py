"""open_clip's own encoders (the causal text transformer and the ViT) with prompt injection, one tower each."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .fused_block import is_standard_block, run_block, run_block_shared_prefix
from .prompt_layout import PromptLayout, layout_prompts
from .tower_base import LayerHook, PrefixHook, TextTower, frozen

__all__ = ["OpenCLIPTextTower", "OpenCLIPVisionTower"]


class OpenCLIPTextTower(TextTower):
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
        mask = getattr(model, "attn_mask", None)
        causal = mask is not None and torch.equal(mask, torch.full_like(mask, float("-inf")).triu(1))
        if pool not in ("argmax", "eos") or not causal:
            raise ValueError(
                f"The text tower of this backbone pools with '{pool}' or is not causal; prompt injection supports "
                "CLIP-style causal text encoders pooled at the end-of-text token."
            )
        # The token table (a quarter of the text tower) is only needed while prompts are built: it is kept as a
        # plain attribute, so it is not registered, moved or saved with the tower, and the caller can drop it.
        self.__dict__["token_embedding"] = frozen(model.token_embedding)
        self.transformer = frozen(model.transformer)
        self.ln_final = frozen(model.ln_final)
        self.positional_embedding = model.positional_embedding
        self.text_projection = model.text_projection
        for p in (self.positional_embedding, self.text_projection):
            if isinstance(p, nn.Parameter):
                p.requires_grad_(False)
        if isinstance(self.text_projection, nn.Module):
            frozen(self.text_projection)
        self.tokenizer = tokenizer
        self.width = int(self.transformer.width)
        self.num_layers = len(self.transformer.resblocks)
        self.context_length = int(self.positional_embedding.shape[0])
        self.batch_first = getattr(self.transformer, "batch_first", True)
        self.grad_checkpointing = False

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without start/end tokens."""
        return list(self.tokenizer.encode(text))

    def layout(
        self, texts: Sequence[str], n_slots: Sequence[int], truncate: bool = True, fit: bool = False
    ) -> PromptLayout:
        """Lay out ``[SOT] <n_slots[c] slots> <texts[c]> [EOT]`` per class.

        Args:
            texts: text after the slots, per class (e.g. ``"melanoma."``).
            n_slots: number of learned/injected positions per class.
            truncate: cut every prompt after the longest EOT (exact for this causal encoder).
            fit: cut a text that is too long for the context (keeping its start and the EOT, as open_clip's
                tokenizer does) instead of raising.

        Raises:
            ValueError: a prompt does not fit the context (and ``fit`` is off); the message names the class text
                and the sizes.
        """
        tokenizer = self.tokenizer
        return layout_prompts(
            self, texts, n_slots, [tokenizer.sot_token_id], [tokenizer.eot_token_id], 0, truncate=truncate, fit=fit
        )

    @property
    def supports_shared_prefix(self) -> bool:
        """Whether :meth:`forward` can take a ``prefix`` (every block is open_clip's standard causal block)."""
        return all(is_standard_block(block) for block in self.transformer.resblocks)

    def forward(
        self,
        x: torch.Tensor,
        pool_index: torch.Tensor,
        hook: LayerHook | None = None,
        prefix: torch.Tensor | None = None,
        prefix_hook: PrefixHook | None = None,
    ) -> torch.Tensor:
        """Encode input embeddings.

        Args:
            x: ``(N, T, width)`` token embeddings of the prompts (positions are added here).
            pool_index: ``(N,)`` position of each sequence's feature (counted within ``x``).
            hook: called as ``x = hook(j, x)`` before every block ``j >= 1`` (deep prompts).
            prefix: ``(1, P, width)`` token embeddings of a start shared by every sequence; ``x`` then holds the
                positions after it. The prefix runs once instead of ``N`` times (exact: attention is causal). Needs
                :attr:`supports_shared_prefix`.
            prefix_hook: called as ``prefix = prefix_hook(j, prefix)`` before every block ``j >= 1``.

        Returns:
            ``(N, embed_dim)`` projected text features (not normalised).
        """
        shared = 0 if prefix is None else prefix.shape[1]
        length = x.shape[1]
        x = x + self.positional_embedding[shared : shared + length].to(x.dtype)
        if prefix is not None:
            prefix = prefix + self.positional_embedding[:shared].to(prefix.dtype)
        for j, block in enumerate(self.transformer.resblocks):
            if hook is not None and j > 0:
                x = hook(j, x)
            if prefix is None:
                x = self._run_block(block, x)
                continue
            if prefix_hook is not None and j > 0:
                prefix = prefix_hook(j, prefix)
            if self.grad_checkpointing and torch.is_grad_enabled():
                prefix, x = checkpoint(run_block_shared_prefix, block, prefix, x, use_reentrant=False)
            else:
                prefix, x = run_block_shared_prefix(block, prefix, x)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), pool_index]
        if isinstance(self.text_projection, nn.Module):
            return self.text_projection(x)
        return x @ self.text_projection.to(x.dtype)

    def _run_block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(run_block, block, x, True, self.batch_first, use_reentrant=False)
        return run_block(block, x, True, self.batch_first)


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
        self.visual = frozen(visual)
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
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(run_block, block, x, False, self.batch_first, use_reentrant=False)
        return run_block(block, x, False, self.batch_first)
