"""What every prompt-injection tower shares: frozen modules, the hook signatures and the text towers' base class."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["LayerHook", "PrefixHook", "TextTower", "frozen"]

LayerHook = Callable[[int, torch.Tensor], torch.Tensor]
PrefixHook = Callable[[int, torch.Tensor], torch.Tensor]


def frozen(module: nn.Module) -> nn.Module:
    """Freeze ``module`` in place (no gradients, eval mode) and return it; the towers share, never copy, modules."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class TextTower(nn.Module):
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
