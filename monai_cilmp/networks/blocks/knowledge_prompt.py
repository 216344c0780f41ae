"""Knowledge tokens: LLM knowledge edited by (image-conditioned) interventions and projected into CLIP text space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

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
    Padding is zeros and never reaches a valid token: only valid positions are computed.

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
        valid = positions < length
        is_prefix = positions < torch.minimum(length, torch.tensor(prefix_length))
        is_suffix = (positions >= length - suffix_length) & valid & ~is_prefix
        prefix_pos = torch.arange(prefix_length).expand(n_cls, -1).clamp(max=max_len - 1)
        suffix_pos = (length - suffix_length + torch.arange(suffix_length)).clamp(min=0)
        take = torch.arange(n_cls)[:, None]
        self.register_buffer("bank", bank.float(), persistent=False)
        self.register_buffer("prefix_inputs", bank[take, prefix_pos].float(), persistent=False)
        self.register_buffer("suffix_inputs", bank[take, suffix_pos].float(), persistent=False)
        self.register_buffer("valid", valid, persistent=False)
        # The valid knowledge positions as three flat groups, in the order forward() returns their tokens:
        # unchanged positions, prefix-edited ones, suffix-edited ones; (class, position) of each, and the row of the
        # group's input tensor (bank, prefix_inputs, suffix_inputs flattened over classes) it comes from.
        unchanged = valid & ~is_prefix & ~is_suffix
        groups = [unchanged.nonzero(), is_prefix.nonzero(), is_suffix.nonzero()]
        rows = [
            groups[0][:, 0] * max_len + groups[0][:, 1],
            groups[1][:, 0] * prefix_length + groups[1][:, 1],
            groups[2][:, 0] * suffix_length + groups[2][:, 1] - (lengths[groups[2][:, 0]] - suffix_length),
        ]
        self.group_sizes = [int(g.shape[0]) for g in groups]
        order = torch.cat(groups)
        self.register_buffer("token_class", order[:, 0].contiguous(), persistent=False)
        self.register_buffer("token_position", order[:, 1].contiguous(), persistent=False)
        for name, row in zip(("unchanged_rows", "prefix_rows", "suffix_rows"), rows):
            self.register_buffer(name, row, persistent=False)
        self.layers = nn.ModuleList(
            KnowledgePromptLayer(dim, rank, out_dim, cond_dim, dropout) for _ in range(num_layers)
        )

    def forward(self, layer: int, z: torch.Tensor | None = None) -> torch.Tensor:
        """Knowledge tokens of text layer ``layer``, one per valid knowledge position (padding is never computed).

        Token ``i`` belongs to class :attr:`token_class` ``[i]`` at knowledge position :attr:`token_position` ``[i]``.
        The image-independent parts (the unchanged positions' projection, the frozen knowledge's own projection and
        the image-independent factors of the interventions) are computed once for all images. Without dropout (eval,
        or ``dropout=0``) the projection of an edit is folded into the rank-``r`` space, so no per-image vector of
        the LLM's size ``D`` is formed; with dropout in training, each image's edited ``D``-vector is formed as the
        method says, since dropout acts on it.

        Args:
            layer: index of the text layer (``0`` is the input).
            z: ``(B, cond_dim)`` normalised image embeddings (conditional) or ``None``.

        Returns:
            ``(B, N, out_dim)`` float32 tokens, ``N = sum_c L_c`` (``B = 1`` when unconditional).
        """
        block = self.layers[layer]
        projection = block.projection
        unchanged = projection(self.bank.flatten(0, 1)[self.unchanged_rows])
        edited = []
        for intervention, inputs, rows in (
            (block.prefix, self.prefix_inputs, self.prefix_rows),
            (block.suffix, self.suffix_inputs, self.suffix_rows),
        ):
            h = inputs.flatten(0, 1)[rows]  # (n, D): only the rows that are used
            with torch.autocast(device_type=h.device.type, enabled=False):
                coords = intervention.edit_coordinates(h, z)  # (B, n, r)
                if intervention.dropout.p > 0 and intervention.training:
                    edited.append(projection(intervention.dropout(h + coords @ intervention.rotation.T)))
                else:  # projection(h + coords R^T) = projection(h) + coords (R^T down^T) up^T
                    folded = (coords @ (intervention.rotation.T @ projection.down.T)) @ projection.up.T
                    edited.append(projection(h) + folded)
        n_img = max(t.shape[0] for t in edited)
        return torch.cat([unchanged.expand(n_img, -1, -1), *(t.expand(n_img, -1, -1) for t in edited)], dim=1)

    def all_layers(self, z: torch.Tensor | None = None) -> torch.Tensor:
        """The knowledge tokens of every layer at once: ``(depth, B, N, out_dim)``, ``[j]`` equal to ``forward(j, z)``.

        The layers' parameters are stacked and every step runs as one batched product over the layers instead of one
        small product per layer: the same arithmetic in a twelfth of the kernel launches, which is what a GPU spends
        its time on at these sizes. Dropout (in training) draws one mask for all layers.
        """
        with torch.autocast(device_type=self.bank.device.type, enabled=False):
            stack = _LayerStack(self.layers)
            unchanged = stack.project(self.bank.flatten(0, 1)[self.unchanged_rows])  # (depth, n, out)
            edited = [
                stack.edited(part, inputs.flatten(0, 1)[rows], z)
                for part, inputs, rows in (
                    ("prefix", self.prefix_inputs, self.prefix_rows),
                    ("suffix", self.suffix_inputs, self.suffix_rows),
                )
            ]
            n_img = max(t.shape[1] for t in edited)
            depth = len(self.layers)
            parts = [unchanged.unsqueeze(1).expand(depth, n_img, -1, -1)]
            parts += [t.expand(depth, n_img, -1, -1) for t in edited]
            return torch.cat(parts, dim=2)


def _mixing(w_cond: torch.Tensor, h: torch.Tensor, a2_w: torch.Tensor) -> torch.Tensor:
    """``M_h = W_ah diag(h) A2`` of every layer and row: ``(depth, n, r, r)`` from ``W_ah`` ``(depth, r, D)``, ``h``
    ``(n, D)`` and ``A2`` ``(depth, D, r)``; its intermediate ``(depth, n, r, D)`` product is the largest tensor of the
    knowledge tokens."""
    return (w_cond.unsqueeze(1) * h[None, :, None, :]) @ a2_w.unsqueeze(1)


class _LayerStack:
    """The parameters of every :class:`KnowledgePromptLayer`, stacked along a leading layer axis (autograd flows)."""

    def __init__(self, layers: nn.ModuleList) -> None:
        self.layers = layers
        self.down = torch.stack([layer.projection.down for layer in layers])  # (depth, r, D)
        self.up = torch.stack([layer.projection.up for layer in layers])  # (depth, out, r)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """``(n, D)`` rows (the same for every layer) -> ``(depth, n, out)``; ``(depth, B, n, D)`` ->
        ``(depth, B, n, out)``."""
        down, up = self.down.transpose(1, 2), self.up.transpose(1, 2)
        if h.ndim == 4:
            down, up = down.unsqueeze(1), up.unsqueeze(1)
        return (h.float() @ down) @ up

    def _edit_dropout_project(self, h: torch.Tensor, coords: torch.Tensor, rotation: torch.Tensor, p: float):
        """``project(dropout(h + coords R^T))``: each image's edited ``D``-vectors, in training."""
        return self.project(F.dropout(h + coords @ rotation.transpose(1, 2).unsqueeze(1), p, training=True))

    def edited(self, part: str, h: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """Projected edited rows ``h`` ``(n, D)`` of the ``part`` ("prefix"/"suffix") interventions: ``(depth, B, n,
        out)``; as :meth:`KnowledgePrompt.forward` computes them layer by layer."""
        modules = [getattr(layer, part) for layer in self.layers]
        first = modules[0]
        dim = first.embed_dim
        rotation = torch.stack([m.rotation for m in modules])  # (depth, D, r)
        weight = torch.stack([m.source.weight for m in modules])  # (depth, r, D or 2D)
        bias = torch.stack([m.source.bias for m in modules]).unsqueeze(1)  # (depth, 1, r)
        h = h.float()
        fixed = torch.baddbmm(bias, h.expand(len(modules), -1, -1), weight[..., :dim].transpose(1, 2)) - h @ rotation
        if first.condition is None:
            coords = fixed.unsqueeze(1)  # (depth, 1, n, r)
        else:
            if z is None:
                raise ValueError("ConditionalLoReFT built with cond_dim needs the image embedding z.")
            w_cond = weight[..., dim:]  # (depth, r, D)
            a1_w = torch.stack([m.condition[0].weight for m in modules])  # (depth, r, e)
            a1_b = torch.stack([m.condition[0].bias for m in modules]).unsqueeze(1)
            a2_w = torch.stack([m.condition[1].weight for m in modules])  # (depth, D, r)
            a2_b = torch.stack([m.condition[1].bias for m in modules])  # (depth, D)
            fixed = fixed + (h * a2_b.unsqueeze(1)) @ w_cond.transpose(1, 2)  # m_h = W_ah (c * h)
            if torch.is_grad_enabled() and (w_cond.requires_grad or a2_w.requires_grad):
                # recomputed in backward: autograd would keep two (depth, n, r, D) tensors alive per part otherwise
                mixing = checkpoint(_mixing, w_cond, h, a2_w, use_reentrant=False)
            else:
                mixing = _mixing(w_cond, h, a2_w)
            u = torch.baddbmm(a1_b, z.float().expand(len(modules), -1, -1), a1_w.transpose(1, 2))  # (depth, B, r)
            coords = fixed.unsqueeze(1) + torch.einsum("lnrk,lbk->lbnr", mixing, u)  # (depth, B, n, r)
        if first.dropout.p > 0 and first.training:
            if torch.is_grad_enabled():
                # recomputed in backward, with the same mask (checkpoint replays the random state): the (depth, B, n, D)
                # mask and edit are not kept alive until then
                return checkpoint(self._edit_dropout_project, h, coords, rotation, first.dropout.p, use_reentrant=False)
            return self._edit_dropout_project(h, coords, rotation, first.dropout.p)
        fold = rotation.transpose(1, 2) @ self.down.transpose(1, 2)  # (depth, r, r): R^T down^T
        folded = (coords @ fold.unsqueeze(1)) @ self.up.transpose(1, 2).unsqueeze(1)
        return self.project(h).unsqueeze(1) + folded
