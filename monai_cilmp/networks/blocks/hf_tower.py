"""open_clip's Hugging Face text encoder (BERT-style, e.g. BiomedCLIP's PubMedBERT) with prompt injection."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .prompt_layout import PromptLayout, layout_prompts
from .tower_base import LayerHook, TextTower, frozen

__all__ = ["HFTextTower"]

# open_clip's pooler classes -> their hf_pooler_type names (the ones prompt injection supports)
_HF_POOLERS = {
    "ClsPooler": "cls_pooler",
    "ClsLastHiddenStatePooler": "cls_last_hidden_state_pooler",
    "MeanPooler": "mean_pooler",
}


class HFTextTower(TextTower):
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
        self.__dict__["token_embedding"] = frozen(embeddings.word_embeddings)
        self.position_embeddings = frozen(embeddings.position_embeddings)
        self.token_type_embeddings = frozen(embeddings.token_type_embeddings)
        self.embedding_norm = frozen(embeddings.LayerNorm)
        self.embedding_dropout = frozen(embeddings.dropout)
        self.layers = frozen(encoder.layer)
        # the BERT pooler only exists when open_clip asked for it (cls_pooler)
        self.pooler = frozen(hf.pooler) if pooler == "cls_pooler" and getattr(hf, "pooler", None) else None
        self.pool_mean = pooler == "mean_pooler"
        self.proj = frozen(text.proj)
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
        return layout_prompts(
            self, texts, n_slots, self.start_ids, self.end_ids, self.pad_id, truncate=truncate, fit=fit
        )

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
