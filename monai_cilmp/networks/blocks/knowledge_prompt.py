"""Knowledge tokens: LLM knowledge edited by (image-conditioned) interventions and projected into CLIP text space."""

from __future__ import annotations

import torch
from torch import nn

from .interventions import ConditionalLoReFT, LowRankProjection

__all__ = ["KnowledgePrompt", "KnowledgePromptLayer"]


class KnowledgePromptLayer(nn.Module):
    """One text layer's prefix intervention, suffix intervention and projection."""

    def __init__(self, embed_dim: int, rank: int, out_dim: int, cond_dim: int | None, dropout: float) -> None:
        super().__init__()
        self.prefix = ConditionalLoReFT(embed_dim, rank, cond_dim, dropout)
        self.suffix = ConditionalLoReFT(embed_dim, rank, cond_dim, dropout)
        self.projection = LowRankProjection(embed_dim, rank, out_dim)


class KnowledgePrompt(nn.Module):
    """Turns a padded knowledge bank into per-layer knowledge tokens, for all images and classes at once.

    For class ``c`` with ``L_c`` knowledge vectors, the first ``prefix_length`` positions go through the layer's
    prefix intervention, the last ``suffix_length`` of *its own* positions through the suffix intervention, the
    rest pass unchanged; then every position is projected to the text width. When ``L_c`` is shorter than
    ``prefix_length + suffix_length`` the prefix keeps its positions and the suffix takes the remaining ones.
    Padding is zeros and never reaches a valid token.

    Args:
        bank: ``(C, L_max, D)`` zero-padded knowledge.
        lengths: ``(C,)`` valid lengths ``L_c``.
        out_dim: text width the tokens are projected to.
        num_layers: number of text layers that receive knowledge tokens (the text prompt depth).
        prefix_length: ``p``.
        suffix_length: ``s``.
        rank: rank of the interventions and the projection.
        cond_dim: image-embedding size for conditional interventions, ``None`` for unconditional ones.
        dropout: dropout of the interventions.
    """

    def __init__(
        self,
        bank: torch.Tensor,
        lengths: torch.Tensor,
        out_dim: int,
        num_layers: int,
        prefix_length: int = 4,
        suffix_length: int = 4,
        rank: int = 8,
        cond_dim: int | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if prefix_length < 0 or suffix_length < 0:
            raise ValueError(f"prefix_length and suffix_length must be >= 0, got {prefix_length}, {suffix_length}.")
        n_cls, max_len, dim = bank.shape
        lengths = lengths.long()
        self.prefix_length, self.suffix_length, self.conditional = prefix_length, suffix_length, cond_dim is not None
        positions = torch.arange(max_len).expand(n_cls, -1)
        length = lengths[:, None]
        is_prefix = positions < torch.minimum(length, torch.tensor(prefix_length))
        is_suffix = (positions >= length - suffix_length) & (positions < length) & ~is_prefix
        suffix_slot = positions - (length - suffix_length)
        # one gather picks, per position, from [unchanged (L_max) | prefix (p) | suffix (s)] candidates
        index = torch.where(is_prefix, max_len + positions, positions)
        index = torch.where(is_suffix, max_len + prefix_length + suffix_slot, index)
        prefix_pos = torch.arange(prefix_length).expand(n_cls, -1).clamp(max=max_len - 1)
        suffix_pos = (length - suffix_length + torch.arange(suffix_length)).clamp(min=0)
        take = torch.arange(n_cls)[:, None]
        self.register_buffer("bank", bank.float(), persistent=False)
        self.register_buffer("prefix_inputs", bank[take, prefix_pos].float(), persistent=False)
        self.register_buffer("suffix_inputs", bank[take, suffix_pos].float(), persistent=False)
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("valid", positions < length, persistent=False)
        self.layers = nn.ModuleList(
            KnowledgePromptLayer(dim, rank, out_dim, cond_dim, dropout) for _ in range(num_layers)
        )

    def forward(self, layer: int, z: torch.Tensor | None = None) -> torch.Tensor:
        """Knowledge tokens of text layer ``layer``.

        Args:
            layer: index of the text layer (``0`` is the input).
            z: ``(B, cond_dim)`` normalised image embeddings (conditional) or ``None``.

        Returns:
            ``(B, C, L_max, out_dim)`` tokens (``B = 1`` when unconditional); use :attr:`valid` to mask padding.
        """
        block = self.layers[layer]
        unchanged = block.projection(self.bank)
        prefix = block.projection(block.prefix(self.prefix_inputs, z))
        suffix = block.projection(block.suffix(self.suffix_inputs, z))
        n_img = prefix.shape[0]
        candidates = torch.cat([unchanged.expand(n_img, -1, -1, -1), prefix, suffix], dim=2)
        index = self.index[None, :, :, None].expand(n_img, -1, -1, candidates.shape[-1])
        return candidates.gather(2, index)
