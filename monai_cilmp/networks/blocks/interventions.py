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
            rotated = h @ self.rotation  # (..., r)
            if self.condition is None:
                source = self.source(h).unsqueeze(0)
            else:
                if z is None:
                    raise ValueError("ConditionalLoReFT built with cond_dim needs the image embedding z.")
                w_plain, w_cond = self.source.weight.split(self.embed_dim, dim=1)  # W = [W_h | W_ah]
                a = self.condition(z.float())  # (B, D)
                # W_ah (a(z) * h) without materialising the (B, ..., D) product: fold a(z) into W_ah first.
                cond_weight = a.unsqueeze(1) * w_cond.unsqueeze(0)  # (B, r, D)
                flat = h.reshape(-1, self.embed_dim)  # (N, D)
                cond_term = torch.einsum("nd,brd->bnr", flat, cond_weight).reshape(a.shape[0], *h.shape[:-1], -1)
                source = (h @ w_plain.T + self.source.bias).unsqueeze(0) + cond_term
            edited = h + (source - rotated) @ self.rotation.T
            return self.dropout(edited)


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
