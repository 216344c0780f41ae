"""Which parts of a class's description moved its score: gradient x input on CILMP's knowledge tokens.

A CILMP class score depends on the class's knowledge matrix ``K_c`` (one LLM hidden state per token of the class
description, see ``METHOD.md``) through the interventions, the projections and the text encoder. For position ``i``
the attribution is ``sum_d K_c[i, d] * d score_c / d K_c[i, d]``: the first-order change of the score when that
hidden state is scaled (a score's derivative along its own input). Positions edited by the prefix or suffix
intervention and positions passed on unchanged are all covered; the per-position values are then summed into the
description's words, using the token strings the knowledge bank recorded at extraction.

This shows what the *trained* network reads in the description for this image; it does not show what the LLM
"meant", and first-order attributions can miss interactions between words (see ``docs/trust.md``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from monai_cilmp.networks.blocks.knowledge_prompt import KnowledgePrompt
from monai_cilmp.utils.files import atomic_write

__all__ = ["KnowledgeAttribution", "group_words", "knowledge_attributions", "save_knowledge_plot"]

_WORDPIECE_CONTINUATION = "##"
_WORD_START_MARKERS = ("\u2581", "\u0120")  # SentencePiece's "▁" and byte-level BPE's "Ġ" (a leading space)
_WORD_END_MARKER = "</w>"  # CLIP's BPE


@dataclass
class KnowledgeAttribution:
    """One class's knowledge attribution for one image.

    Attributes:
        class_name: the class.
        tokens: the knowledge positions as the bank recorded them (token strings, or ``k0``, ``k1``... when the bank
            did not record them).
        token_scores: ``(L_c,)`` gradient x input of the class's logit per position.
        words: the description's words (tokens grouped back).
        word_scores: per word, the sum of its tokens' scores.
    """

    class_name: str
    tokens: list[str]
    token_scores: np.ndarray
    words: list[str]
    word_scores: np.ndarray

    def top(self, k: int = 8) -> list[tuple[str, float]]:
        """The ``k`` words with the largest absolute score, largest first."""
        order = np.argsort(-np.abs(self.word_scores), kind="stable")[:k]
        return [(self.words[i], float(self.word_scores[i])) for i in order]


def group_words(tokens: Sequence[str]) -> list[tuple[str, list[int]]]:
    """Group sub-word tokens into words: WordPiece (``##`` continues a word), SentencePiece/byte-level BPE (``▁``
    or ``Ġ`` starts one) or CLIP BPE (``</w>`` ends one); otherwise every token is a word.

    Returns:
        ``[(word, [token positions])]`` in text order.
    """
    tokens = [str(t) for t in tokens]
    if any(t.startswith(_WORDPIECE_CONTINUATION) for t in tokens):
        starts = [not t.startswith(_WORDPIECE_CONTINUATION) for t in tokens]
    elif any(t.startswith(_WORD_START_MARKERS) for t in tokens):
        starts = [t.startswith(_WORD_START_MARKERS) or t[:1] in {".", ",", ";", ":"} for t in tokens]
    elif any(t.endswith(_WORD_END_MARKER) for t in tokens):
        starts = [True] + [tokens[i - 1].endswith(_WORD_END_MARKER) for i in range(1, len(tokens))]
    else:
        starts = [True] * len(tokens)
    groups: list[tuple[str, list[int]]] = []
    for i, (token, start) in enumerate(zip(tokens, starts)):
        piece = (
            token.removeprefix(_WORDPIECE_CONTINUATION)
            .removesuffix(_WORD_END_MARKER)
            .lstrip("".join(_WORD_START_MARKERS))
        )
        if start or not groups:
            groups.append((piece, [i]))
        else:
            word, positions = groups[-1]
            groups[-1] = (word + piece, positions + [i])
    return groups


_INPUTS = ("bank", "prefix_inputs", "suffix_inputs")


def knowledge_attributions(network: nn.Module, image: torch.Tensor) -> list[KnowledgeAttribution] | None:
    """Gradient x input of every class's logit on its knowledge positions, for one normalised image ``(1, 3, H, W)``.

    Args:
        network: a CILMP network (anything with a ``knowledge`` :class:`~monai_cilmp.networks.blocks.KnowledgePrompt`).
        image: the preprocessed image.

    Returns:
        one :class:`KnowledgeAttribution` per class, in label order; ``None`` when the network has no knowledge
        tokens (the baselines).
    """

    prompt = getattr(network, "knowledge", None)
    if not isinstance(prompt, KnowledgePrompt):
        return None
    image = image.as_tensor() if hasattr(image, "as_tensor") else image
    originals = {name: getattr(prompt, name) for name in _INPUTS}
    leaves = {name: t.detach().clone().requires_grad_(True) for name, t in originals.items()}
    was_training = network.training
    network.eval()
    try:
        for name, leaf in leaves.items():
            setattr(prompt, name, leaf)  # still a buffer: nn.Module routes the assignment to _buffers
        with torch.enable_grad():
            logits = network(image[:1].to(leaves["bank"].device).float())
            # the classes' text features are independent: class c's knowledge only reaches logit c
            logits[0].sum().backward()
        contribution = {name: (leaf.grad * leaf.detach()).sum(-1).detach().cpu() for name, leaf in leaves.items()}
    finally:
        for name, tensor in originals.items():
            setattr(prompt, name, tensor)
        network.zero_grad(set_to_none=True)
        network.train(was_training)
    valid = prompt.valid.cpu()
    n_cls, max_len = valid.shape
    lengths = valid.sum(1)
    # positions the prefix/suffix candidates came from (as KnowledgePrompt gathers them); slots it did not use for a
    # class got no gradient, so adding them is exact
    prefix_pos = torch.arange(prompt.prefix_length).expand(n_cls, -1).clamp(max=max_len - 1)
    suffix_pos = (lengths[:, None] - prompt.suffix_length + torch.arange(prompt.suffix_length)).clamp(min=0)
    scores = contribution["bank"].clone()
    scores.scatter_add_(1, prefix_pos, contribution["prefix_inputs"])
    scores.scatter_add_(1, suffix_pos, contribution["suffix_inputs"])
    recorded = (getattr(network, "knowledge_metadata", {}) or {}).get("tokens") or {}
    out = []
    for c, name in enumerate(network.class_names):
        length = int(lengths[c])
        token_scores = scores[c, :length].numpy().astype(np.float64)
        tokens = [str(t) for t in recorded.get(name, [])]
        if len(tokens) != length:
            tokens = [f"k{i}" for i in range(length)]
        groups = group_words(tokens)
        out.append(
            KnowledgeAttribution(
                class_name=name,
                tokens=tokens,
                token_scores=token_scores,
                words=[w for w, _ in groups],
                word_scores=np.array([token_scores[p].sum() for _, p in groups]),
            )
        )
    return out


def save_knowledge_plot(
    attributions: Sequence[KnowledgeAttribution],
    path: str | os.PathLike,
    top_k: int = 8,
    probabilities: Sequence[float] | None = None,
    title: str | None = None,
) -> Path:
    """Bar charts of the ``top_k`` words per class (positive: raised the class's score), one panel per class.

    Args:
        attributions: what :func:`knowledge_attributions` returned (or a selection of classes).
        path: the PNG file.
        top_k: words per class.
        probabilities: the image's class probabilities, shown in the panel titles (same order as ``attributions``).
        title: the figure's title.
    """
    from matplotlib.figure import Figure

    n = len(attributions)
    cols = min(n, 2)
    rows = (n + cols - 1) // cols

    def write(tmp: str) -> None:
        fig = Figure(figsize=(5.2 * cols, 0.32 * top_k * rows + 1.4 * rows))
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
        for i, attribution in enumerate(attributions):
            ax = axes[i]
            top = attribution.top(top_k)[::-1]
            values = [v for _, v in top]
            ax.barh(range(len(top)), values, color=["C2" if v >= 0 else "C3" for v in values])
            ax.set_yticks(range(len(top)), [w for w, _ in top])
            ax.axvline(0, color="black", linewidth=0.6)
            label = attribution.class_name
            if probabilities is not None:
                label += f" (p = {float(probabilities[i]):.2f})"
            ax.set_title(label, fontsize=10)
            ax.set_xlabel("change of the class logit (gradient x input)", fontsize=8)
            ax.locator_params(axis="x", nbins=5)
        for ax in axes[n:]:
            ax.axis("off")
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(tmp, format="png", dpi=110)

    return atomic_write(path, write)
