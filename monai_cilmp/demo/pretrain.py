"""Make the tiny backbone meaningful: a short contrastive (CLIP) pre-training on synthetic image-caption pairs.

A frozen *random* ``CILMP-Tiny`` gives prompt tuning almost nothing to work with, and there are no downloadable
weights for it. So the demo first teaches it a small visual vocabulary the way CLIP was taught: image-caption
pairs and the symmetric contrastive loss. The pairs are drawn on the fly by :mod:`~monai_cilmp.demo.lesions` with
every attribute chosen independently (any of 12 colours, 3 shapes, 3 textures with any second colour, 3 sizes,
2 borders, and "X to Y" colour blends), and captioned in words with random templates, synonyms, word order,
fillers and left-out attributes, for example::

    "a dermoscopy image of a large, irregular, pink to purple mark with green streaks and a fuzzy edge"

The captions never name a disease and the images are not the demo's classes, which are particular combinations
of these attributes plus their own atypical cases. Zero-shot transfer to the demo therefore has to go through
the attribute words of the class descriptions, which is meaningful but imperfect; CILMP's prompt tuning on the
labelled images then has something to improve on.

A caption that leaves an attribute out also describes the images that differ only in that attribute, so the loss
uses soft targets: a caption's positives are all images of the batch that agree with every attribute it names.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_cilmp.networks.backbones import TINY_BACKBONE, load_backbone
from monai_cilmp.networks.blocks.fused_block import run_block
from monai_cilmp.utils.files import atomic_write

from .lesions import BORDERS, PALETTE, SHAPES, SIZES, TEXTURES, LesionAttributes, render_lesions

__all__ = [
    "DEFAULT_STEPS",
    "DEFAULT_TRAINED_LAYERS",
    "CaptionedBatch",
    "PretrainResult",
    "caption_batch",
    "encode_images",
    "encode_texts",
    "pretrain_tiny_clip",
    "read_pretrain_info",
]

logger = logging.getLogger(__name__)

_COLOURS = tuple(PALETTE)
_SIZE_NAMES = tuple(SIZES)
_BORDER_NAMES = tuple(BORDERS)
# caption words per attribute value; none of them names a disease or one of the demo's classes
_SIZE_WORDS = {
    "small": ("small", "tiny", "little"),
    "medium": ("medium-sized", "mid-sized", "moderate"),
    "large": ("large", "big", "wide"),
}
_SHAPE_WORDS = {
    "round": ("round", "circular", "round, symmetric", "regular round"),
    "elongated": ("elongated", "oval", "elongated oval", "long oval"),
    "irregular": ("irregular", "asymmetric", "irregular, asymmetric", "jagged"),
}
_TEXTURE_WORDS = {
    "smooth": ("with a smooth surface", "with a smooth uniform surface", "smooth and uniform", "evenly coloured"),
    "speckled": ("with {c} dots", "speckled with {c} dots", "with speckled {c} dots", "dotted with {c}"),
    "streaked": ("with {c} streaks", "streaked with {c}", "with {c} stripes", "with streaks of {c}"),
}
_BORDER_WORDS = {
    "sharp": ("with a sharp border", "and a sharp regular border", "with a well-defined edge", "sharply bordered"),
    "blurred": ("with a blurred border", "and a blurred uneven border", "with a fuzzy edge", "blurry edged"),
}
_NOUNS = ("spot", "lesion", "patch", "mark", "area", "blob")
_PREFIXES = (
    "a",
    "a photo of a",
    "a dermoscopy image of a",
    "dermoscopy: a",
    "close-up of a",
    "skin with a",
    "there is a",
    "an image showing a",
    "on dermoscopy, a",
)
_SUFFIXES = ("", "", "", "on the skin", "on dermoscopy", "under the dermatoscope", "on the arm", "in a clinical photo")
# attribute slots of the soft-target matching: colour, second colour, shape, texture, size, border
_N_SLOTS = 6

DEFAULT_STEPS = 500
"""Pre-training steps of the demo (about 45 s on two CPU cores)."""

DEFAULT_TRAINED_LAYERS = (0, 6)
"""Blocks trained in each tower; the other ten become identities (see :func:`pretrain_tiny_clip`)."""


@dataclass
class CaptionedBatch:
    """Images with their captions and which attributes each caption names.

    Attributes:
        images: ``(B, 3, S, S)`` RGB in ``[0, 1]``.
        captions: ``B`` captions.
        values: ``(B, 6)`` attribute values (colour, second colour, shape, texture, size, border) as integers.
        named: ``(B, 6)`` whether the caption names that attribute.
    """

    images: torch.Tensor
    captions: list[str]
    values: torch.Tensor
    named: torch.Tensor

    def targets(self) -> torch.Tensor:
        """``(B, B)`` 0/1 matrix: caption ``i`` describes image ``j`` (all attributes it names agree)."""
        agree = self.values[:, None, :] == self.values[None, :, :]
        return (agree | ~self.named[:, None, :]).all(dim=-1).float()


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _caption(rng: random.Random, colour: str, colour2: str, shape: str, texture: str, size: str, border: str):
    """A caption naming a random subset of the attributes; returns it and which slots it names."""
    named = [rng.random() > 0.15 for _ in range(_N_SLOTS)]
    named[1] = named[3] and texture != "smooth"  # the second colour is only named with its dots or streaks
    adjectives = []
    if named[4]:
        adjectives.append(rng.choice(_SIZE_WORDS[size]))
    if named[2]:
        adjectives.append(rng.choice(_SHAPE_WORDS[shape]))
    if named[0]:
        adjectives.append(colour)
    if rng.random() < 0.3:
        rng.shuffle(adjectives)
    after = []
    if named[3]:
        after.append(rng.choice(_TEXTURE_WORDS[texture]).format(c=colour2))
    if named[5]:
        after.append(rng.choice(_BORDER_WORDS[border]))
    rng.shuffle(after)
    words = (", " if rng.random() < 0.5 else " ").join(adjectives)
    prefix = rng.choice(_PREFIXES)
    head = f"{prefix} {words} {rng.choice(_NOUNS)}".strip() if words else f"{prefix} {rng.choice(_NOUNS)}"
    if prefix.endswith(" a") and words:  # "a elongated" reads wrong; the article follows the first word
        head = f"{prefix[:-1]}{_article(words)} {words} {head.rsplit(' ', 1)[-1]}"
    text = " ".join([head, " and ".join(after) if len(after) == 2 and rng.random() < 0.5 else " ".join(after)])
    text = " ".join(f"{text} {rng.choice(_SUFFIXES)}".split())
    return text, named


def _in_range(ranges: dict[str, tuple[float, float]], index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A uniform value in the range of each ``ranges`` entry picked by ``index``."""
    low, high = (torch.tensor(v) for v in zip(*ranges.values()))
    return low[index] + (high - low)[index] * torch.rand(len(index), generator=generator)


@dataclass
class _Drawn:
    """Attributes of a batch of random lesions: what to render and the values captions are written from."""

    attributes: LesionAttributes
    values: torch.Tensor  # (B, 6) colour, second colour, shape, texture, size, border
    colour_words: list[str]


def _draw(n: int, generator: torch.Generator) -> _Drawn:
    """``n`` lesions with every attribute drawn independently of the others."""
    k = len(_COLOURS)
    first = torch.randint(k, (n,), generator=generator)
    # a third of the lesions blend two colours ("pink to purple"); the blend counts as its own colour value
    second = torch.where(torch.rand(n, generator=generator) < 0.3, torch.randint(k, (n,), generator=generator), first)
    palette = torch.tensor([PALETTE[c] for c in _COLOURS])
    blend = torch.rand(n, 1, generator=generator) * 0.6 + 0.2
    colour = palette[first] * (1 - blend) + palette[second] * blend
    colour = (colour + (torch.rand(n, 3, generator=generator) - 0.5) * 0.08).clamp(0, 1)
    colour2 = torch.randint(k - 1, (n,), generator=generator)
    colour2 = colour2 + (colour2 >= first).long()  # never the body colour
    shape = torch.randint(len(SHAPES), (n,), generator=generator)
    texture = torch.randint(len(TEXTURES), (n,), generator=generator)
    size = torch.randint(len(SIZES), (n,), generator=generator)
    border = torch.randint(len(BORDERS), (n,), generator=generator)
    radius = _in_range(SIZES, size, generator)
    softness = _in_range(BORDERS, border, generator)
    attributes = LesionAttributes(colour, palette[colour2], shape, texture, radius, softness)
    pairs = zip(first.tolist(), second.tolist())
    words = [_COLOURS[a] if a == b else f"{_COLOURS[a]} to {_COLOURS[b]}" for a, b in pairs]
    colour_value = torch.minimum(first, second) * k + torch.maximum(first, second)
    values = torch.stack([colour_value, colour2, shape, texture, size, border], dim=1)
    return _Drawn(attributes, values, words)


def _captions(values: torch.Tensor, colour_words: Sequence[str], rng: random.Random) -> tuple[list[str], torch.Tensor]:
    """A fresh random caption per lesion, and which attributes each names."""
    captions, named = [], []
    for row, colour in zip(values.tolist(), colour_words):
        text, mask = _caption(
            rng,
            colour,
            _COLOURS[row[1]],
            SHAPES[row[2]],
            TEXTURES[row[3]],
            _SIZE_NAMES[row[4]],
            _BORDER_NAMES[row[5]],
        )
        captions.append(text)
        named.append(mask)
    return captions, torch.tensor(named, dtype=torch.bool)


def caption_batch(n: int, image_size: int, generator: torch.Generator, rng: random.Random) -> CaptionedBatch:
    """``n`` random lesions with every attribute drawn independently, rendered and captioned.

    Args:
        n: batch size.
        image_size: image side in pixels.
        generator: torch random stream of the images.
        rng: Python random stream of the caption wording.
    """
    drawn = _draw(n, generator)
    images = render_lesions(drawn.attributes, image_size, generator)
    captions, named = _captions(drawn.values, drawn.colour_words, rng)
    return CaptionedBatch(images, captions, drawn.values, named)


class _LesionPool:
    """A pool of rendered lesions that batches are sampled from, a few of them replaced by new ones at every step.

    Rendering costs about as much as a training step of the two trained layers; a rolling pool keeps the images
    varied (each is used a few times, always with a new caption and a random flip) at a fraction of that cost.
    """

    def __init__(self, size: int, refresh: int, image_size: int, generator: torch.Generator) -> None:
        self.refresh, self.image_size, self.generator = refresh, image_size, generator
        drawn = _draw(size, generator)
        self.images = render_lesions(drawn.attributes, image_size, generator)
        self.values, self.words = drawn.values, list(drawn.colour_words)

    def sample(self, n: int, rng: random.Random) -> CaptionedBatch:
        g = self.generator
        index = torch.randperm(len(self.values), generator=g)[:n]
        images = self.images[index]
        flip = torch.rand(n, 2, generator=g) < 0.5
        images = torch.where(flip[:, 0, None, None, None], images.flip(-1), images)
        images = torch.where(flip[:, 1, None, None, None], images.flip(-2), images)
        values = self.values[index]
        captions, named = _captions(values, [self.words[i] for i in index.tolist()], rng)
        self._replace()
        return CaptionedBatch(images, captions, values, named)

    def _replace(self) -> None:
        if not self.refresh:
            return
        slots = torch.randperm(len(self.values), generator=self.generator)[: self.refresh]
        drawn = _draw(len(slots), self.generator)
        self.images[slots] = render_lesions(drawn.attributes, self.image_size, self.generator)
        self.values[slots] = drawn.values
        for slot, words in zip(slots.tolist(), drawn.colour_words):
            self.words[slot] = words


def _blocks(transformer: nn.Module, active: Sequence[int] | None) -> list[nn.Module]:
    blocks = list(transformer.resblocks)
    return blocks if active is None else [blocks[i] for i in active]


def encode_texts(model: nn.Module, tokens: torch.Tensor, active: Sequence[int] | None = None) -> torch.Tensor:
    """Unnormalised text features of ``(N, context)`` token ids, as ``model.encode_text`` computes them.

    The text transformer is causal and pooled at the end-of-text token (the largest id), so cutting the batch
    after its longest text changes nothing but the cost.
    """
    eot = tokens.argmax(dim=-1)
    length = int(eot.max()) + 1
    x = model.token_embedding(tokens[:, :length]) + model.positional_embedding[:length]
    for block in _blocks(model.transformer, active):
        x = run_block(block, x, True, getattr(model.transformer, "batch_first", True))
    x = model.ln_final(x)[torch.arange(x.shape[0]), eot]
    return model.text_projection(x) if isinstance(model.text_projection, nn.Module) else x @ model.text_projection


def encode_images(model: nn.Module, images: torch.Tensor, active: Sequence[int] | None = None) -> torch.Tensor:
    """Unnormalised image features of normalised ``(N, 3, S, S)`` images, as ``model.encode_image`` computes them."""
    v = model.visual
    x = v.conv1(images).flatten(2).transpose(1, 2)
    cls = v.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = v.ln_pre(torch.cat([cls, x], dim=1) + v.positional_embedding)
    for block in _blocks(v.transformer, active):
        x = run_block(block, x, False, getattr(v.transformer, "batch_first", True))
    pooled, _ = v._pool(x)
    return pooled @ v.proj if v.proj is not None else pooled


def _soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets / targets.sum(dim=1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on the matrices of the blocks only: not on embeddings, norms, biases or the logit scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        matrix = p.ndim >= 2 and "embedding" not in name and not name.endswith(("class_embedding", "proj"))
        (decay if matrix else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _make_identity(block: nn.Module) -> None:
    """Zero the output projections of a residual block, so that it adds nothing (``x + 0``), and freeze it."""
    with torch.no_grad():
        for proj in (block.attn.out_proj, block.mlp.c_proj):
            proj.weight.zero_()
            if proj.bias is not None:
                proj.bias.zero_()
    block.requires_grad_(False)


def _check_layers(trained_layers: Sequence[int] | None, num_layers: int) -> list[int] | None:
    if trained_layers is None:
        return None
    layers = sorted({int(i) for i in trained_layers})
    if not layers or layers[0] < 0 or layers[-1] >= num_layers:
        raise ValueError(
            f"trained_layers must be block indices between 0 and {num_layers - 1} (or None for all), "
            f"got {list(trained_layers)}."
        )
    return layers


@dataclass
class PretrainResult:
    """What a pre-training run did (also stored in the checkpoint's header, see :func:`read_pretrain_info`).

    Attributes:
        path: the checkpoint.
        steps: optimisation steps done.
        seconds: training time.
        final_loss: the loss of the last step.
    """

    path: Path
    steps: int
    seconds: float
    final_loss: float


def pretrain_tiny_clip(
    out_path: str | os.PathLike,
    *,
    steps: int | None = DEFAULT_STEPS,
    seconds_budget: float | None = None,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    warmup_steps: int = 20,
    trained_layers: Sequence[int] | None = DEFAULT_TRAINED_LAYERS,
    pool_size: int = 1024,
    seed: int = 0,
    num_threads: int | None = None,
    log_every: int = 100,
    model_name: str = TINY_BACKBONE,
) -> PretrainResult:
    """Pre-train a randomly initialised ``CILMP-Tiny`` contrastively and save it for ``load_backbone``.

    Training stops after ``steps`` steps or ``seconds_budget`` seconds, whichever comes first; the learning rate
    follows a linear warm-up and then a cosine over that horizon (whichever of the step and time fractions is
    further along), so a run cut by the time budget still ends with a low learning rate. With ``steps`` alone the
    result depends only on the seed (on one machine); a time budget makes it depend on the machine's speed.

    Only the blocks in ``trained_layers`` of each tower are trained; the others get zero output projections, which
    makes them exact identities (a pre-LN residual block computes ``x + 0``), and are skipped. Twelve 64-wide
    layers cannot be trained from scratch in a minute and a half of CPU, but two of them can (a few hundred steps
    of 64 pairs); the checkpoint is still an ordinary 12-layer ``CILMP-Tiny``. CILMP's deep prompts reach the
    encoders through the trained blocks: those of layer ``i`` take effect at the first trained block ``>= i``.

    The checkpoint is a plain open_clip state dict in safetensors (written atomically), so
    ``load_backbone("CILMP-Tiny", str(path))`` loads it; its header records how it was made
    (:func:`read_pretrain_info`).

    Args:
        out_path: the ``.safetensors`` file to write.
        steps: the most optimisation steps (``None``: only the time budget).
        seconds_budget: the most seconds of training (``None``: only ``steps``).
        batch_size: image-caption pairs per step.
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay of the blocks' weight matrices.
        warmup_steps: linear warm-up steps.
        trained_layers: indices of the blocks trained in each tower (``None``: all of them).
        pool_size: rendered lesions batches are drawn from; a quarter of a batch is replaced by new ones per step.
        seed: seed of the initial weights, the images and the captions.
        num_threads: torch threads while training (``None``: leave as set); the previous setting is restored.
            One thread is often faster than two for this 64-wide model when another process uses a core.
        log_every: log the loss every this many steps (0: never).
        model_name: the open_clip configuration to train.

    Returns:
        what the run did: the checkpoint's path, the steps, the seconds and the final loss.

    Raises:
        ValueError: neither ``steps`` nor ``seconds_budget`` given, ``out_path`` not a ``.safetensors`` file, or
            ``trained_layers`` out of range.
    """
    if steps is None and seconds_budget is None:
        raise ValueError("Give steps, seconds_budget or both: pre-training needs a point to stop.")
    out_path = Path(out_path)
    if out_path.suffix != ".safetensors":
        raise ValueError(
            f"The pre-trained backbone is written as safetensors: name it '*.safetensors', not '{out_path}'."
        )
    previous_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(int(num_threads))
    try:
        torch.manual_seed(seed)
        backbone = load_backbone(model_name, None)
        model = backbone.model.train()
        model.requires_grad_(True)
        text_layers = _check_layers(trained_layers, len(model.transformer.resblocks))
        image_layers = _check_layers(trained_layers, len(model.visual.transformer.resblocks))
        for transformer, layers in ((model.transformer, text_layers), (model.visual.transformer, image_layers)):
            for i, block in enumerate(transformer.resblocks):
                if layers is not None and i not in layers:
                    _make_identity(block)
        groups = [
            {"params": [p for p in group["params"] if p.requires_grad], "weight_decay": group["weight_decay"]}
            for group in _param_groups(model, weight_decay)
        ]
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=True)
        mean = torch.tensor(backbone.mean).view(1, 3, 1, 1)
        std = torch.tensor(backbone.std).view(1, 3, 1, 1)
        generator, rng = torch.Generator().manual_seed(seed), random.Random(seed)
        pool = _LesionPool(pool_size, max(1, batch_size // 4), backbone.image_size, generator)

        start = time.perf_counter()
        step, loss_value = 0, float("nan")
        while True:
            elapsed = time.perf_counter() - start
            done = max(step / steps if steps else 0.0, elapsed / seconds_budget if seconds_budget else 0.0)
            if done >= 1.0:
                break
            factor = min(1.0, (step + 1) / max(1, warmup_steps)) * 0.5 * (1 + math.cos(math.pi * done))
            for group in optimizer.param_groups:
                group["lr"] = lr * factor
            batch = pool.sample(batch_size, rng)
            images = F.normalize(encode_images(model, (batch.images - mean) / std, image_layers), dim=-1)
            texts = F.normalize(encode_texts(model, backbone.tokenizer(batch.captions), text_layers), dim=-1)
            logits = model.logit_scale.exp().clamp(max=100) * texts @ images.t()
            targets = batch.targets()
            loss = 0.5 * (_soft_cross_entropy(logits, targets) + _soft_cross_entropy(logits.t(), targets.t()))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            with torch.no_grad():  # CLIP's clamp: a temperature below 1/100 only makes training unstable
                model.logit_scale.clamp_(0, math.log(100))
            step += 1
            loss_value = float(loss.detach())
            if log_every and step % log_every == 0:
                logger.info("pre-training step %d: loss %.3f (%.0f s)", step, loss_value, time.perf_counter() - start)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous_threads)

    model.eval()
    info = {
        "format": "open_clip state dict",
        "model": model_name,
        "made_by": "monai_cilmp.demo.pretrain.pretrain_tiny_clip",
        "data": "synthetic dermoscopy-like lesions with attribute captions (monai_cilmp.demo.lesions)",
        "trained_layers": "all" if trained_layers is None else ",".join(map(str, text_layers or [])),
        "steps": str(step),
        "batch_size": str(batch_size),
        "lr": str(lr),
        "seed": str(seed),
        "seconds": f"{seconds:.1f}",
        "final_loss": f"{loss_value:.4f}",
        "logit_scale": f"{float(model.logit_scale.detach().exp()):.2f}",
    }
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}

    def write(tmp: str) -> None:
        from safetensors.torch import save_file

        save_file(state, tmp, metadata=info)

    atomic_write(out_path, write)
    logger.info(
        "pre-trained %s in %d steps (%.0f s), final loss %.3f: %s", model_name, step, seconds, loss_value, out_path
    )
    return PretrainResult(out_path, step, seconds, loss_value)


def read_pretrain_info(path: str | os.PathLike) -> dict[str, str]:
    """The header :func:`pretrain_tiny_clip` wrote into a checkpoint (steps, seconds, seed, ...); ``{}`` if none."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})
