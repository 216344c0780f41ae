"""open_clip's timm image tower (a timm ``VisionTransformer`` trunk) with deep visual prompts."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .tower_base import frozen

__all__ = ["TimmVisionTower"]


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
        self.visual = frozen(visual)
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
