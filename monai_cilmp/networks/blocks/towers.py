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
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "OpenCLIPTextTower",
    "OpenCLIPVisionTower",
    "PromptLayout",
    "build_text_tower",
    "build_vision_tower",
    "quick_gelu",
    "run_block",
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


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's ``x * sigmoid(1.702 x)``, written as ``silu(1.702 x) / 1.702`` (SiLU's fused kernels)."""
    return F.silu(x * 1.702) / 1.702


_QUICK_GELU_SCALE = 1.702


def _mlp(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``c_proj(act(c_fc(x)))`` over all tokens as 2-D matmuls.

    For QuickGELU the two scalings of ``silu(1.702 h) / 1.702`` ride on the matmuls (``addmm``'s ``alpha`` and
    ``beta``), so the activation is one fused pass over the MLP's widest tensor, and autograd keeps one copy of it.
    """
    fc, proj = mlp.c_fc, mlp.c_proj
    flat = x.reshape(-1, x.shape[-1])
    if type(mlp.gelu).__name__ == "QuickGELU" and fc.bias is not None and proj.bias is not None:
        scale = _QUICK_GELU_SCALE
        hidden = F.silu(torch.addmm(fc.bias, flat, fc.weight.t(), beta=scale, alpha=scale))
        out = torch.addmm(proj.bias, hidden, proj.weight.t(), alpha=1.0 / scale)
    else:
        out = proj(mlp.gelu(fc(flat)))
    return out.view(*x.shape[:-1], out.shape[-1])


def _is_standard_block(block: nn.Module) -> bool:
    """open_clip's default ``ResidualAttentionBlock`` (self-attention through ``nn.MultiheadAttention``)."""
    attn = getattr(block, "attn", None)
    return (
        isinstance(attn, nn.MultiheadAttention)
        and attn._qkv_same_embed_dim
        and attn.in_proj_bias is not None
        and not attn.add_zero_attn
        and attn.bias_k is None
        and not hasattr(block, "ln_1_kv")
        and all(hasattr(block, n) for n in ("ln_1", "ls_1", "ln_2", "mlp", "ls_2"))
        and all(hasattr(block.mlp, n) for n in ("c_fc", "gelu", "c_proj"))
    )


def run_block(block: nn.Module, x: torch.Tensor, causal: bool, batch_first: bool = True) -> torch.Tensor:
    """Run one frozen transformer block on batch-first ``x`` of shape ``(N, T, width)``.

    For open_clip's standard block this computes exactly what the block computes, but with the projections as
    2-D matmuls over all ``N * T`` tokens and attention through ``scaled_dot_product_attention``. Called on a
    batch-first tensor, ``nn.MultiheadAttention`` works on a transposed view and its input projection degrades
    to ``T`` small matmuls of ``N`` rows each, which wastes most of a CPU's matmul throughput.
    """
    if not _is_standard_block(block):
        mask = None
        if causal:
            mask = torch.full((x.shape[1], x.shape[1]), float("-inf"), device=x.device, dtype=x.dtype).triu_(1)
        if not batch_first:
            return block(x.transpose(0, 1), attn_mask=mask).transpose(0, 1)
        return block(x, attn_mask=mask)
    attn = block.attn
    n, length, width = x.shape
    heads = attn.num_heads
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(n, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    out = out.transpose(1, 2).reshape(n, length, width)
    x = x + block.ls_1(attn.out_proj(out))
    return x + block.ls_2(_mlp(block.mlp, block.ln_2(x)))


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
        mask = getattr(model, "attn_mask", None)
        causal = mask is not None and torch.equal(mask, torch.full_like(mask, float("-inf")).triu(1))
        if pool not in ("argmax", "eos") or not causal:
            raise ValueError(
                f"The text tower of this backbone pools with '{pool}' or is not causal; prompt injection supports "
                "CLIP-style causal text encoders pooled at the end-of-text token."
            )
        # The token table (a quarter of the text tower) is only needed while prompts are built: it is kept as a
        # plain attribute, so it is not registered, moved or saved with the tower, and the caller can drop it.
        self.__dict__["token_embedding"] = _frozen(model.token_embedding)
        self.transformer = _frozen(model.transformer)
        self.ln_final = _frozen(model.ln_final)
        self.positional_embedding = model.positional_embedding
        self.text_projection = model.text_projection
        for p in (self.positional_embedding, self.text_projection):
            if isinstance(p, nn.Parameter):
                p.requires_grad_(False)
        if isinstance(self.text_projection, nn.Module):
            _frozen(self.text_projection)
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
        sot, eot = self.tokenizer.sot_token_id, self.tokenizer.eot_token_id
        placeholder = self.encode("x")[0]
        rows, pools = [], []
        for text, n in zip(texts, n_slots):
            text_ids = self.encode(text)
            if fit:
                text_ids = text_ids[: max(0, self.context_length - 2 - int(n))]
            ids = [sot] + [placeholder] * int(n) + text_ids + [eot]
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
        """Token embeddings (no position), ``(..., T, width)``; available until :meth:`release_embeddings`."""
        table = self.__dict__.get("token_embedding")
        if table is None:
            raise RuntimeError("The token embedding table was released; embed prompts before releasing it.")
        return table(token_ids.to(table.weight.device))

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Projected features ``(N, embed_dim)`` of plain texts (no slots, not normalised).

        Equal to open_clip's ``model.encode_text(tokenizer(texts))``, long texts cut the same way; needs the token
        table (call before :meth:`release_embeddings`). Gradients flow only if the caller enables them.

        Args:
            texts: the texts.
            batch_size: texts per pass through the encoder.
        """
        texts = list(texts)
        features = []
        for i in range(0, len(texts), batch_size):
            chunk = texts[i : i + batch_size]
            layout = self.layout(chunk, [0] * len(chunk), truncate=True, fit=True)
            x = self.embed(layout.token_ids)
            features.append(self(x, layout.pool_index.to(x.device)))
        return torch.cat(features)

    def release_embeddings(self) -> None:
        """Drop the reference to the token table (its memory is freed once the backbone model is gone too)."""
        self.__dict__.pop("token_embedding", None)

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
        for j, block in enumerate(self.transformer.resblocks):
            if hook is not None and j > 0:
                x = hook(j, x)
            x = self._run_block(block, x)
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
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(run_block, block, x, False, self.batch_first, use_reentrant=False)
        return run_block(block, x, False, self.batch_first)


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
