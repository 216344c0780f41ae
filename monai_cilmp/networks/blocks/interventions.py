"""Low-rank representation interventions (LoReFT, optionally image-conditioned) and the low-rank projection.

These act on LLM hidden states ``h`` of size ``D`` (any size). They run in float32 whatever the surrounding
autocast says: they are tiny, and the rotation's orthogonality is what makes the edit well-posed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ConditionalLoReFT", "LowRankProjection"]


class ConditionalLoReFT(nn.Module):
    """LoReFT intervention whose edit can depend on an image embedding.

    ``phi(h; z) = h + (W [h ; a(z) * h] + b - h R) R^T`` followed by dropout, where ``R`` (``D x r``) is
    orthogonally initialised (and not constrained afterwards), ``a(z) = A2(A1 z)`` maps the image embedding
    (size ``cond_dim``) through rank ``r`` to size ``D``, and ``W`` maps ``2D -> r``. With ``cond_dim=None`` it is
    plain LoReFT, ``phi(h) = h + (W h + b - h R) R^T``.

    Args:
        embed_dim: ``D``, the size of the edited representations.
        rank: ``r``, the rank of the edit.
        cond_dim: size of the conditioning embedding ``z``, or ``None`` for the unconditional intervention.
        dropout: dropout probability applied to the edited representation in training.
    """

    def __init__(self, embed_dim: int, rank: int, cond_dim: int | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        self.embed_dim, self.rank, self.cond_dim = embed_dim, rank, cond_dim
        self.rotation = nn.Parameter(nn.init.orthogonal_(torch.empty(embed_dim, rank)))
        self.source = nn.Linear(embed_dim * (2 if cond_dim else 1), rank)
        self.condition = nn.Sequential(nn.Linear(cond_dim, rank), nn.Linear(rank, embed_dim)) if cond_dim else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Edit every row of ``h`` for every image.

        Args:
            h: representations, shape ``(..., D)`` (e.g. ``(C, P, D)``: classes x positions).
            z: image embeddings ``(B, cond_dim)``; required when conditional, ignored otherwise.

        Returns:
            ``(B, *h.shape)`` when conditional, ``(1, *h.shape)`` otherwise.
        """
        with torch.autocast(device_type=h.device.type, enabled=False):
            h = h.float()
            return self.dropout(h + self.edit_coordinates(h, z) @ self.rotation.T)

    def edit_coordinates(self, h: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """The edit in the rotation's basis, ``W [h ; a(z) * h] + b - h R``, so that ``phi = h + coords R^T``.

        Everything that does not depend on the image is computed once for all images: with
        ``a(z) = A2 u + c`` and ``u = A1 z + e``, the conditional term ``W_ah (a(z) * h)`` is ``M_h u + m_h`` where
        ``M_h = W_ah diag(h) A2`` (``r x r``) and ``m_h = W_ah (c * h)`` depend on ``h`` only; per image only an
        ``r x r`` product is left (instead of a product over ``D``).

        Args:
            h: representations ``(..., D)``.
            z: image embeddings ``(B, cond_dim)`` when conditional.

        Returns:
            ``(B, ..., r)`` (``B = 1`` when unconditional), float32.
        """
        with torch.autocast(device_type=h.device.type, enabled=False):
            h = h.float()
            lead = h.shape[:-1]
            flat = h.reshape(-1, self.embed_dim)  # (N, D)
            if self.condition is None:
                return (self.source(flat) - flat @ self.rotation).view(1, *lead, self.rank)
            if z is None:
                raise ValueError("ConditionalLoReFT built with cond_dim needs the image embedding z.")
            w_plain, w_cond = self.source.weight.split(self.embed_dim, dim=1)  # W = [W_h | W_ah]
            down, up = self.condition
            # image-independent: everything W_h h + b - h R, and the two factors of the conditional term
            fixed = torch.addmm(self.source.bias, flat, w_plain.T) - flat @ self.rotation  # (N, r)
            cond_h = flat.unsqueeze(1) * w_cond.unsqueeze(0)  # (N, r, D): W_ah diag(h)
            fixed = fixed + cond_h @ up.bias  # m_h
            mixing = cond_h @ up.weight  # (N, r, r): M_h
            u = down(z.float())  # (B, r)
            coords = fixed + torch.einsum("nrk,bk->bnr", mixing, u)  # (B, N, r)
            return coords.view(u.shape[0], *lead, self.rank)


class LowRankProjection(nn.Module):
    """Bias-free rank-``r`` map ``D -> r -> out_dim`` (a LoRA-style pair of matrices), run in float32.

    Args:
        in_dim: input size ``D``.
        rank: ``r``.
        out_dim: output size (the CLIP text width).
    """

    def __init__(self, in_dim: int, rank: int, out_dim: int) -> None:
        super().__init__()
        self.down = nn.Parameter(torch.empty(rank, in_dim))
        self.up = nn.Parameter(torch.empty(out_dim, rank))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.up, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return (x.float() @ self.down.T) @ self.up.T
