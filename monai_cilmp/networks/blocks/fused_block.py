"""open_clip's standard transformer block run as fused 2-D matmuls and ``scaled_dot_product_attention``.

:func:`run_block` computes exactly what one frozen ``ResidualAttentionBlock`` computes, faster on every device;
:func:`run_block_shared_prefix` runs a causal block once for a start that every sequence shares. The prompt towers
and the demo's pre-training use them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SHARED_PREFIX_DEVICES",
    "is_standard_block",
    "quick_gelu",
    "run_block",
    "run_block_shared_prefix",
    "shared_prefix_pays",
]

#: device types where running a shared prompt start once (:func:`run_block_shared_prefix`) is faster than running it
#: in every prompt. On the CPU it is not: its 3-6 % fewer FLOPs cost a second, smaller set of matmuls per block, the
#: concatenated keys and values and a masked attention (ViT-B/16 shape, B 4, C 4, L 16: 0.98x, see the README).
SHARED_PREFIX_DEVICES = ("cuda",)


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


def is_standard_block(block: nn.Module) -> bool:
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
    if not is_standard_block(block):
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


def shared_prefix_pays(device: torch.device | str) -> bool:
    """Whether a shared prompt start pays to run once on ``device``: its type is in :data:`SHARED_PREFIX_DEVICES`."""
    return torch.device(device).type in SHARED_PREFIX_DEVICES
