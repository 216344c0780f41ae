"""A small synthetic dermoscopy-like classification set for the offline demo.

Four lesion classes with medical names, each drawn the way its description says (colour, shape, texture, size and
border), with nuisance variation no class explains (skin tone, lighting, hairs, a dermatoscope's dark rim,
position, rotation, noise) and a minority of atypical lesions per class, so that no single cue is enough:

============================  ================  ===================  ======================  ==========  =======
class                         colour            shape                texture                 size        border
============================  ================  ===================  ======================  ==========  =======
melanocytic naevus            brown             round                smooth                  small       sharp
melanoma                      dark brown/black  irregular            black/blue-grey dots    large       blurred
seborrhoeic keratosis         light tan         elongated            dark brown streaks      medium      sharp
vascular lesion               red to purple     round to oval        smooth                  small       sharp
============================  ================  ===================  ======================  ==========  =======

:func:`make_synthetic_dataset` writes the images as a folder per class, a MONAI datalist (training, validation,
test) and a descriptions file for ``extract_knowledge`` / ``monai-cilmp knowledge extract --descriptions``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_cilmp.data import datalist_from_folder, summarize_datalist, write_datalist
from monai_cilmp.utils.files import write_json

from .lesions import PALETTE, SHAPES, TEXTURES, LesionAttributes, render_lesions

__all__ = [
    "DATASET_NAME",
    "DEFAULT_ACQUISITION",
    "MODALITY",
    "PRESET",
    "SYNTHETIC_CLASSES",
    "SyntheticClass",
    "class_names",
    "descriptions",
    "make_synthetic_dataset",
    "render_class",
]

DATASET_NAME = "synthetic-dermoscopy"
DEFAULT_ACQUISITION = 1.6
"""Strength of the demo dermatoscope's look, which the backbone's pre-training images never have."""
_DEVICE_CAST = (-0.10, -0.04, 0.12)  # relative change of R, G, B under the dermatoscope's cool LED light
MODALITY = "dermoscopy image"
PRESET = "dermoscopy"


@dataclass(frozen=True)
class SyntheticClass:
    """How one synthetic class is described and drawn.

    Attributes:
        name: the class name (label text).
        description: the text its knowledge is extracted from; it says how the class is drawn.
        attributes: hand-written attribute phrases (``colour``, ``shape``, ``texture``, ``location``).
        synonyms: plain words for the class.
        colours: two :data:`~monai_cilmp.demo.lesions.PALETTE` names; the body colour is a random blend of them.
        colours2: palette names of the dots or streaks, one picked per image.
        shapes: outline name -> probability.
        textures: texture name -> probability.
        radius: range of the lesion radius (fraction of the half image width).
        border: range of the edge softness (fraction of the radius).
    """

    name: str
    description: str
    attributes: Mapping[str, str]
    synonyms: tuple[str, ...]
    colours: tuple[str, str]
    colours2: tuple[str, ...]
    shapes: Mapping[str, float]
    textures: Mapping[str, float]
    radius: tuple[float, float]
    border: tuple[float, float]


SYNTHETIC_CLASSES: tuple[SyntheticClass, ...] = (
    SyntheticClass(
        name="melanocytic naevus",
        description=(
            "A benign melanocytic naevus on dermoscopy: a small, round, symmetric, evenly brown spot with a smooth "
            "uniform surface and a sharp regular border."
        ),
        attributes={"colour": "evenly brown", "shape": "small round", "texture": "smooth", "location": "on the skin"},
        synonyms=("mole", "common naevus", "nevus"),
        colours=("brown", "light tan"),
        colours2=("dark brown",),
        shapes={"round": 0.9, "elongated": 0.1},
        textures={"smooth": 0.9, "speckled": 0.1},
        radius=(0.22, 0.36),
        border=(0.03, 0.07),
    ),
    SyntheticClass(
        name="melanoma",
        description=(
            "A melanoma on dermoscopy: a large, irregular, asymmetric dark brown to black lesion with a blurred "
            "uneven border and speckled black and blue-grey dots."
        ),
        attributes={
            "colour": "dark brown to black",
            "shape": "large irregular",
            "texture": "speckled with black and blue-grey dots",
            "location": "on the skin",
        },
        synonyms=("malignant melanoma", "skin cancer"),
        colours=("dark brown", "black"),
        colours2=("black", "blue-grey"),
        shapes={"irregular": 0.85, "round": 0.15},
        textures={"speckled": 0.8, "streaked": 0.2},
        radius=(0.46, 0.66),
        border=(0.12, 0.24),
    ),
    SyntheticClass(
        name="seborrhoeic keratosis",
        description=(
            "A seborrhoeic keratosis on dermoscopy: a medium-sized, elongated oval, light tan patch with dark brown "
            "streaks and a sharp border."
        ),
        attributes={
            "colour": "light tan",
            "shape": "elongated oval",
            "texture": "streaked with dark brown",
            "location": "on the skin",
        },
        synonyms=("seborrheic keratosis", "senile wart", "basal cell papilloma"),
        colours=("light tan", "yellow"),
        colours2=("dark brown", "brown"),
        shapes={"elongated": 0.85, "irregular": 0.15},
        textures={"streaked": 0.9, "speckled": 0.1},
        radius=(0.32, 0.46),
        border=(0.03, 0.07),
    ),
    SyntheticClass(
        name="vascular lesion",
        description=(
            "A vascular lesion on dermoscopy: a small, round to oval, bright red to purple spot with a smooth "
            "uniform surface and a sharp border."
        ),
        attributes={"colour": "red to purple", "shape": "small round", "texture": "smooth", "location": "on the skin"},
        synonyms=("haemangioma", "angioma", "cherry angioma"),
        colours=("red", "purple"),
        colours2=("purple", "red"),
        shapes={"round": 0.7, "elongated": 0.3},
        textures={"smooth": 0.8, "speckled": 0.2},
        radius=(0.20, 0.32),
        border=(0.03, 0.07),
    ),
)
"""The demo's classes, in label order."""


def class_names(classes: Sequence[SyntheticClass] = SYNTHETIC_CLASSES) -> list[str]:
    """The class names, in label order."""
    return [c.name for c in classes]


def descriptions(classes: Sequence[SyntheticClass] = SYNTHETIC_CLASSES) -> dict[str, Any]:
    """The descriptions file's content: ``{"dataset", "modality", "classes": {name: {"description", ...}}}``.

    It is the layout of the curated description files, which ``load_description_file`` reads.
    """
    return {
        "dataset": DATASET_NAME,
        "modality": MODALITY,
        "classes": {
            c.name: {"description": c.description, "synonyms": list(c.synonyms), "attributes": dict(c.attributes)}
            for c in classes
        },
    }


def _pick(options: Mapping[str, float], names: Sequence[str], n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` indices into ``names``, drawn with the probabilities of ``options``."""
    weights = torch.tensor([float(options.get(name, 0.0)) for name in names])
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def _sample(spec: SyntheticClass, n: int, generator: torch.Generator) -> LesionAttributes:
    g = generator
    first, second = (torch.tensor(PALETTE[c]) for c in spec.colours)
    blend = torch.rand(n, 1, generator=g)
    colour = first * (1 - blend) + second * blend + (torch.rand(n, 3, generator=g) - 0.5) * 0.08
    palette2 = torch.tensor([PALETTE[c] for c in spec.colours2])
    colour2 = palette2[torch.randint(len(spec.colours2), (n,), generator=g)]
    shape = _pick(spec.shapes, SHAPES, n, g)
    texture = _pick(spec.textures, TEXTURES, n, g)
    radius = spec.radius[0] + (spec.radius[1] - spec.radius[0]) * torch.rand(n, generator=g)
    border = spec.border[0] + (spec.border[1] - spec.border[0]) * torch.rand(n, generator=g)
    return LesionAttributes(colour.clamp(0, 1), colour2, shape, texture, radius, border)


def render_class(
    spec: SyntheticClass,
    n: int,
    image_size: int = 96,
    seed: int = 0,
    acquisition: float = DEFAULT_ACQUISITION,
    chunk: int = 32,
) -> np.ndarray:
    """``n`` images of one class as ``(n, image_size, image_size, 3)`` uint8, the same for the same seed.

    Args:
        spec: the class.
        n: number of images.
        image_size: side in pixels.
        seed: random seed (each class uses its own stream derived from it and its name).
        acquisition: strength of the demo dermatoscope's look (colour cast, glare, gel bubbles; 0: none).
        chunk: images drawn at once; the random streams are consumed per chunk, so keep it fixed for the same images.
    """
    # a stream per (seed, class) so that one class's images do not change when another class is added
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + sum(map(ord, spec.name)))
    out = []
    for start in range(0, n, chunk):
        attributes = _sample(spec, min(chunk, n - start), generator)
        images = render_lesions(attributes, image_size, generator)
        images = _acquire(images, acquisition, generator)
        out.append((images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out) if out else np.zeros((0, image_size, image_size, 3), np.uint8)


def _acquire(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """What the demo's (fictional) dermatoscope does to every picture: a domain shift from the pre-training images.

    A cool LED light with a slightly different cast per image and a gamma, specular glare and air bubbles in the
    immersion gel; ``strength`` scales all of it (0: none).
    """
    if strength <= 0:
        return images
    n, _, size, _ = images.shape
    g = generator
    cast = 1 + strength * torch.tensor(_DEVICE_CAST)
    images = images * (cast + 0.03 * torch.randn(n, 3, generator=g)).view(n, 3, 1, 1)
    images = images.clamp(0, 1) ** (1 - 0.15 * strength)
    lin = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    y, x = torch.meshgrid(lin, lin, indexing="ij")
    for _ in range(4):  # up to four glare spots, each inside a faint bubble ring
        on = (torch.rand(n, generator=g) < min(1.0, 0.5 * strength)).float().view(n, 1, 1)
        cx, cy = (torch.rand(n, 2, generator=g) * 1.4 - 0.7).view(n, 2, 1, 1).unbind(1)
        r = (0.02 + 0.05 * torch.rand(n, generator=g)).view(n, 1, 1)
        d = torch.sqrt(torch.square(x - cx) + torch.square(y - cy))
        ring = torch.sigmoid((2.5 * r - d) / 0.01) - torch.sigmoid((2.5 * r - 0.02 - d) / 0.01)
        spot = torch.sigmoid((r - d) / 0.01)
        alpha = (torch.maximum(spot, 0.6 * ring) * on)[:, None]
        images = images * (1 - alpha) + alpha
    return images.clamp(0, 1)


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array, mode="RGB").save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def make_synthetic_dataset(
    out_dir: str | os.PathLike,
    n_per_class: int = 80,
    seed: int = 0,
    *,
    image_size: int = 96,
    acquisition: float = DEFAULT_ACQUISITION,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
) -> dict[str, Any]:
    """Write the synthetic dermoscopy set: images, a MONAI datalist and a descriptions file.

    Layout under ``out_dir``::

        images/<class_name>/<class_name>_0000.png   a folder per class ("_" for spaces)
        datalist.json                               training / validation / test, absolute image paths
        descriptions.json                           class -> description, synonyms, attributes

    The images are the same bytes for the same ``seed``, ``n_per_class`` and ``image_size``; the split is stratified
    and seeded, so every class has the same number of images in each split.

    Args:
        out_dir: where everything goes (created; existing images of the same names are overwritten).
        n_per_class: images per class.
        seed: random seed of the images and the split.
        image_size: image side in pixels (the ``CILMP-Tiny`` backbone resizes to 64).
        acquisition: strength of the demo dermatoscope's look (cool colour cast, glare, gel bubbles), a domain shift
            from the backbone's pre-training images; 0 draws the lesions as the pre-training does.
        val_fraction: fraction of each class for validation.
        test_fraction: fraction of each class for test.

    Returns:
        ``{"root", "images", "datalist", "descriptions"}`` paths (as strings), ``"class_names"``, ``"preset"``,
        ``"modality"``, ``"dataset"``, ``"counts"`` (images per split) and ``"summary"`` (one line per split).

    Raises:
        ValueError: ``n_per_class`` too small to give every split at least one image per class.
    """
    if n_per_class < 3:
        raise ValueError(f"n_per_class must be at least 3 (one image per split and class), got {n_per_class}.")
    root = Path(out_dir).expanduser().resolve()
    images_dir = root / "images"
    names = class_names()
    for spec in SYNTHETIC_CLASSES:
        folder = images_dir / spec.name.replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        for i, array in enumerate(render_class(spec, n_per_class, image_size, seed, acquisition)):
            (folder / f"{folder.name}_{i:04d}.png").write_bytes(_png_bytes(array))
    datalist = datalist_from_folder(
        images_dir,
        names,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        extensions=(".png",),
        name=DATASET_NAME,
        preset=PRESET,
    )
    datalist_path = write_datalist(datalist, root / "datalist.json")
    descriptions_path = write_json(root / "descriptions.json", descriptions())
    return {
        "root": str(root),
        "images": str(images_dir),
        "datalist": str(datalist_path),
        "descriptions": str(descriptions_path),
        "class_names": names,
        "dataset": DATASET_NAME,
        "modality": MODALITY,
        "preset": PRESET,
        "counts": {split: len(datalist[split]) for split in ("training", "validation", "test")},
        "summary": summarize_datalist(datalist),
    }
