"""Prompt injection into frozen open_clip towers.

A *tower* wraps the frozen modules of one encoder of an open_clip model (no copies) and runs them layer by layer
so that a method can put learned tokens into the sequence before any block. The towers know the encoder
family's conventions (special tokens, pooling, causal or padding masks); the methods (CILMP, ...) know what to
inject. Families: open_clip's own text transformer and ViT (:class:`OpenCLIPTextTower`, :class:`OpenCLIPVisionTower`),
open_clip's Hugging Face text encoder (:class:`HFTextTower`: BERT-style, e.g. BiomedCLIP's PubMedBERT) and its timm
image trunk (:class:`TimmVisionTower`); :func:`build_text_tower` / :func:`build_vision_tower` choose. A new family
is one more class here plus one line in those functions; the methods do not change.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "HFTextTower",
    "OpenCLIPTextTower",
    "OpenCLIPVisionTower",
    "PromptLayout",
    "TimmVisionTower",
    "build_text_tower",
    "build_vision_tower",
    "quick_gelu",
    "run_block",
    "run_block_shared_prefix",
]

LayerHook = Callable[[int, torch.Tensor], torch.Tensor]
PrefixHook = Callable[[int, torch.Tensor], torch.Tensor]


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


def run_block_shared_prefix(
    block: nn.Module, prefix: torch.Tensor, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run one frozen causal standard block on sequences that all start with the same ``prefix``.

    ``prefix`` is ``(1, P, width)`` (positions ``0 .. P-1``, shared by every sequence) and ``x`` is ``(N, T, width)``
    (positions ``P .. P+T-1`` of each sequence). Attention being causal, the prefix's states never depend on what
    follows, so they are computed once; every later position attends to the shared prefix keys and values and to
    its own sequence's. The result equals :func:`run_block` on the concatenated ``(N, P+T, width)`` sequences.

    Returns:
        the new ``(prefix, x)``.
    """
    attn = block.attn
    n, length, width = x.shape
    shared = prefix.shape[1]
    heads = attn.num_heads

    def heads_first(t: torch.Tensor, rows: int, tokens: int) -> tuple[torch.Tensor, ...]:
        return t.view(rows, tokens, 3, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)

    qp, kp, vp = heads_first(F.linear(block.ln_1(prefix), attn.in_proj_weight, attn.in_proj_bias), 1, shared)
    qx, kx, vx = heads_first(F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias), n, length)
    out_p = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True)
    keys = torch.cat([kp.expand(n, -1, -1, -1), kx], dim=2)
    values = torch.cat([vp.expand(n, -1, -1, -1), vx], dim=2)
    # causal aligned to the end: query i (position P + i) sees keys 0 .. P + i
    mask = torch.ones(length, shared + length, dtype=torch.bool, device=x.device).tril_(shared)
    out_x = F.scaled_dot_product_attention(qx, keys, values, attn_mask=mask)
    outs = []
    for t, out in ((prefix, out_p), (x, out_x)):
        rows, tokens = t.shape[:2]
        t = t + block.ls_1(attn.out_proj(out.transpose(1, 2).reshape(rows, tokens, width)))
        outs.append(t + block.ls_2(_mlp(block.mlp, block.ln_2(t))))
    return outs[0], outs[1]


def _layout(
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


class _TextTower(nn.Module):
    """What every text tower shares: the token table kept outside the module, and plain-text encoding.

    Subclasses set ``self.__dict__["token_embedding"]`` and implement ``layout`` and ``forward``.
    """

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


class OpenCLIPTextTower(_TextTower):
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
        tokenizer = self.tokenizer
        return _layout(
            self, texts, n_slots, [tokenizer.sot_token_id], [tokenizer.eot_token_id], 0, truncate=truncate, fit=fit
        )

    @property
    def supports_shared_prefix(self) -> bool:
        """Whether :meth:`forward` can take a ``prefix`` (every block is open_clip's standard causal block)."""
        return all(_is_standard_block(block) for block in self.transformer.resblocks)

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


# open_clip's pooler classes -> their hf_pooler_type names (the ones prompt injection supports)
_HF_POOLERS = {
    "ClsPooler": "cls_pooler",
    "ClsLastHiddenStatePooler": "cls_last_hidden_state_pooler",
    "MeanPooler": "mean_pooler",
}


class HFTextTower(_TextTower):
    """open_clip's Hugging Face text tower (``HFTextEncoder``: BERT, PubMedBERT of BiomedCLIP, RoBERTa) with
    per-layer injection.

    The prompt is ``[CLS] <slots> <text> [SEP] [PAD]...`` and attention is bidirectional with a padding mask over
    the real tokens, as open_clip builds it (``input_ids != pad_token_id``). The feature is pooled the way the
    backbone's ``hf_pooler_type`` says: ``cls_pooler`` (the BERT pooler's ``tanh(dense([CLS]))`` when the model
    has one, else the ``[CLS]`` state), ``cls_last_hidden_state_pooler`` (the ``[CLS]`` state; BiomedCLIP) or
    ``mean_pooler`` (the mean over real tokens), then projected by the tower's ``linear``/``mlp`` projection.

    Context truncation: unlike the causal CLIP tower, every position here sees every other one, so a prompt cannot
    simply be cut after its end token. :meth:`layout` with ``truncate=True`` runs all prompts to the longest *real*
    prompt of the batch and masks the padding of the shorter ones out of attention (and out of the mean pooler);
    padded positions then cannot reach a real token, so the features equal those of the full context.

    ``pool_index`` (of :class:`PromptLayout` and :meth:`forward`) is each prompt's last real token (``[SEP]``): the
    padding mask is ``position <= pool_index``; the feature itself is pooled as described above.

    Args:
        model: an open_clip ``CustomTextCLIP`` whose ``text`` is an ``HFTextEncoder``; shared (not copied), frozen.
        tokenizer: the model's open_clip ``HFTokenizer``.

    Raises:
        ValueError: the text model is not an encoder with absolute positions (BERT/RoBERTa style), its pooler is
            not one of the three above, or the tokenizer runs a mode other than the standard one.
    """

    def __init__(self, model: nn.Module, tokenizer) -> None:
        super().__init__()
        text = model.text
        hf = text.transformer
        embeddings, encoder = getattr(hf, "embeddings", None), getattr(hf, "encoder", None)
        kind = type(text.pooler).__name__
        pooler = _HF_POOLERS.get(kind) or re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()  # open_clip's naming
        if (
            embeddings is None
            or not hasattr(embeddings, "word_embeddings")
            or not hasattr(embeddings, "position_embeddings")
            or not hasattr(encoder, "layer")
            or getattr(hf.config, "is_decoder", False)
            or getattr(hf.config, "position_embedding_type", "absolute") != "absolute"
        ):
            raise ValueError(
                f"Prompt injection into the Hugging Face text model '{type(hf).__name__}' is not supported: it needs "
                "a BERT-style encoder with absolute position embeddings (BERT, PubMedBERT, RoBERTa)."
            )
        if pooler not in _HF_POOLERS.values():
            raise ValueError(
                f"The text tower pools with '{pooler}', which prompt injection does not support: use a backbone "
                f"whose hf_pooler_type is one of {', '.join(_HF_POOLERS.values())}."
            )
        if getattr(tokenizer, "tokenizer_mode", "") or getattr(tokenizer, "strip_sep_token", False):
            raise ValueError(
                "Prompt injection needs the standard Hugging Face tokenizer mode ([CLS] text [SEP]); this backbone's "
                "tokenizer uses another one (tokenizer_mode or strip_sep_token in its config)."
            )
        self.__dict__["token_embedding"] = _frozen(embeddings.word_embeddings)
        self.position_embeddings = _frozen(embeddings.position_embeddings)
        self.token_type_embeddings = _frozen(embeddings.token_type_embeddings)
        self.embedding_norm = _frozen(embeddings.LayerNorm)
        self.embedding_dropout = _frozen(embeddings.dropout)
        self.layers = _frozen(encoder.layer)
        # the BERT pooler only exists when open_clip asked for it (cls_pooler)
        self.pooler = _frozen(hf.pooler) if pooler == "cls_pooler" and getattr(hf, "pooler", None) else None
        self.pool_mean = pooler == "mean_pooler"
        self.proj = _frozen(text.proj)
        self.config = hf.config
        # RoBERTa counts positions from its padding index + 1; BERT from 0
        self.position_offset = int(embeddings.padding_idx) + 1 if hasattr(embeddings, "padding_idx") else 0
        self.tokenizer = tokenizer
        hf_tokenizer = tokenizer.tokenizer
        self.start_ids = [int(hf_tokenizer.cls_token_id)]
        self.end_ids = [int(hf_tokenizer.sep_token_id)]
        self.pad_id = int(hf_tokenizer.pad_token_id)
        self.width = int(self.position_embeddings.embedding_dim)
        self.num_layers = len(self.layers)
        positions = int(self.position_embeddings.num_embeddings) - self.position_offset
        self.context_length = min(int(getattr(tokenizer, "context_length", None) or positions), positions)
        self.grad_checkpointing = False

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without ``[CLS]``/``[SEP]`` (cleaned as open_clip's tokenizer cleans it)."""
        clean = getattr(self.tokenizer, "clean_fn", None)
        text = clean(text) if clean is not None else text
        return list(self.tokenizer.tokenizer(text, add_special_tokens=False)["input_ids"])

    def layout(
        self, texts: Sequence[str], n_slots: Sequence[int], truncate: bool = True, fit: bool = False
    ) -> PromptLayout:
        """Lay out ``[CLS] <n_slots[c] slots> <texts[c]> [SEP]`` per class, padded with ``[PAD]``.

        Args:
            texts: text after the slots, per class.
            n_slots: number of learned/injected positions per class.
            truncate: run to the longest real prompt (exact: the padding is masked); ``False`` pads to the full
                context.
            fit: cut a text that is too long (keeping ``[CLS]`` and ``[SEP]``, as the tokenizer does) instead of
                raising.

        Raises:
            ValueError: a prompt does not fit the context (and ``fit`` is off).
        """
        return _layout(self, texts, n_slots, self.start_ids, self.end_ids, self.pad_id, truncate=truncate, fit=fit)

    def _attention_mask(self, valid: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
        """The mask the encoder layers take, built the way the Hugging Face model builds it for its attention."""
        try:
            from transformers.masking_utils import create_bidirectional_mask
        except ImportError:  # older transformers: the additive 4-D mask
            return (1.0 - valid[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        return create_bidirectional_mask(config=self.config, inputs_embeds=x, attention_mask=valid.long())

    def forward(self, x: torch.Tensor, pool_index: torch.Tensor, hook: LayerHook | None = None) -> torch.Tensor:
        """Encode input embeddings.

        Args:
            x: ``(N, T, width)`` token embeddings of the prompts (positions and token type are added here).
            pool_index: ``(N,)`` position of each sequence's last real token; later positions are padding.
            hook: called as ``x = hook(j, x)`` before every layer ``j >= 1`` (deep prompts).

        Returns:
            ``(N, embed_dim)`` projected text features (not normalised).
        """
        length = x.shape[1]
        start = self.position_offset
        x = x + self.position_embeddings.weight[start : start + length].to(x.dtype)
        x = x + self.token_type_embeddings.weight[0].to(x.dtype)
        x = self.embedding_dropout(self.embedding_norm(x))
        valid = torch.arange(length, device=x.device)[None, :] <= pool_index.to(x.device)[:, None]
        mask = self._attention_mask(valid, x)
        for j, layer in enumerate(self.layers):
            if hook is not None and j > 0:
                x = hook(j, x)
            x = self._run_layer(layer, x, mask)
        if self.pool_mean:
            weights = valid.to(x.dtype).unsqueeze(-1)
            pooled = (x * weights).sum(dim=1) / weights.sum(dim=1)
        else:
            pooled = x[:, 0]
            if self.pooler is not None:
                pooled = self.pooler.activation(self.pooler.dense(pooled))
        return self.proj(pooled)

    def _run_layer(self, layer: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            out = checkpoint(layer, x, mask, use_reentrant=False)
        else:
            out = layer(x, mask)
        return out[0] if isinstance(out, tuple) else out


class TimmVisionTower(nn.Module):
    """open_clip's timm image tower (``TimmModel``) over a timm ``VisionTransformer`` trunk, with deep visual prompts.

    ``prompts[0]`` is appended after the class (and register) and patch tokens, after the position embedding and
    before the trunk's ``norm_pre``; every later block ``j < len(prompts)`` replaces those tokens with
    ``prompts[j]``; they are dropped before the trunk's final norm. The trunk's own norm, pooling (class token,
    average, or attention pool) and head, then open_clip's projection head, give the feature, as in
    ``model.encode_image``.

    Args:
        visual: the ``model.visual`` (an open_clip ``TimmModel``); shared (not copied) and frozen.

    Raises:
        ValueError: the trunk is not a timm ``VisionTransformer``.
    """

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        trunk = getattr(visual, "trunk", None)
        if not all(hasattr(trunk, n) for n in ("patch_embed", "_pos_embed", "blocks", "norm", "forward_head")):
            raise ValueError(
                "Visual prompts on a timm image tower need a timm VisionTransformer trunk; this backbone's trunk is "
                f"{type(trunk).__name__}."
            )
        self.visual = _frozen(visual)
        self.width = int(trunk.embed_dim)
        self.num_layers = len(trunk.blocks)
        size = getattr(visual, "image_size", None) or trunk.patch_embed.img_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.grad_checkpointing = False

    def forward(self, images: torch.Tensor, prompts: torch.Tensor | None = None) -> torch.Tensor:
        """Encode normalised images ``(B, 3, H, W)`` with optional prompts ``(depth, n, width)``; ``(B, embed_dim)``."""
        trunk = self.visual.trunk
        x = trunk.patch_embed(images.to(next(trunk.patch_embed.parameters()).dtype))
        x = trunk.patch_drop(trunk._pos_embed(x))
        n = 0 if prompts is None else prompts.shape[1]
        if n:
            x = torch.cat([x, prompts[0].to(x.dtype).expand(x.shape[0], -1, -1)], dim=1)
        x = trunk.norm_pre(x)
        for j, block in enumerate(trunk.blocks):
            if n and 0 < j < prompts.shape[0]:
                x = torch.cat([x[:, :-n], prompts[j].to(x.dtype).expand(x.shape[0], -1, -1)], dim=1)
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        if n:
            x = x[:, :-n]
        x = trunk.forward_head(trunk.norm(x))
        return self.visual.head(x)


def build_text_tower(model: nn.Module, tokenizer) -> nn.Module:
    """The prompt-injection tower for ``model``'s text encoder: open_clip's own transformer or a Hugging Face one.

    Raises:
        NotImplementedError: the text encoder family has no tower.
    """
    if hasattr(model, "transformer") and hasattr(model, "token_embedding"):
        return OpenCLIPTextTower(model, tokenizer)
    text = getattr(model, "text", None)
    if text is not None and hasattr(text, "transformer") and hasattr(text, "pooler") and hasattr(text, "proj"):
        return HFTextTower(model, tokenizer)
    kind = type(text if text is not None else model).__name__
    raise NotImplementedError(
        f"Prompt injection into a {kind} text encoder is not available; use a backbone with open_clip's own text "
        "transformer (e.g. ViT-B-16 with the 'openai' weights) or a Hugging Face BERT-style one (e.g. BiomedCLIP)."
    )


def build_vision_tower(model: nn.Module) -> nn.Module:
    """The prompt-injection tower for ``model``'s image encoder: open_clip's ViT or a timm ViT trunk."""
    if hasattr(model.visual, "trunk"):
        return TimmVisionTower(model.visual)
    return OpenCLIPVisionTower(model.visual)
