"""A procedural renderer of dermoscopy-like skin lesions, shared by the demo dataset and the backbone's pre-training.

Every image is a lesion on skin: a lesion of a given colour, shape (round, elongated or irregular), texture
(smooth, speckled with dots of a second colour, or streaked with stripes of it), size and border (sharp or
blurred), over a skin background with nuisance variation the class does not explain: skin tone, lighting, mottling,
hairs, the dark circular rim of a dermatoscope, position, rotation and sensor noise.

Coordinates are normalised to ``[-1, 1]`` across the image, so one attribute setting gives the same picture at any
resolution. Everything is drawn with torch from a caller's ``torch.Generator``, in a fixed order, so a seed gives
the same images (and, quantised to 8 bits, the same bytes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "BORDERS",
    "PALETTE",
    "SHAPES",
    "SIZES",
    "TEXTURES",
    "LesionAttributes",
    "render_lesions",
]

SHAPES = ("round", "elongated", "irregular")
"""Lesion outlines: a near circle, an oval 1.7-2.4 times longer than wide, or a notched asymmetric blob."""

TEXTURES = ("smooth", "speckled", "streaked")
"""Lesion surfaces: even, dotted with a second colour, or striped with a second colour along the long axis."""

SIZES = {"small": (0.20, 0.32), "medium": (0.32, 0.46), "large": (0.46, 0.66)}
"""Size words and the lesion radius range they cover, as a fraction of the half image width."""

BORDERS = {"sharp": (0.03, 0.06), "blurred": (0.14, 0.24)}
"""Border words and the softness of the lesion's edge they cover, as a fraction of the lesion radius."""

PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.78, 0.14, 0.17),
    "purple": (0.50, 0.17, 0.44),
    "pink": (0.93, 0.52, 0.60),
    "orange": (0.88, 0.50, 0.18),
    "yellow": (0.86, 0.76, 0.30),
    "light tan": (0.74, 0.58, 0.36),
    "brown": (0.52, 0.33, 0.20),
    "dark brown": (0.30, 0.18, 0.11),
    "black": (0.09, 0.07, 0.07),
    "blue-grey": (0.36, 0.43, 0.58),
    "white": (0.95, 0.94, 0.90),
    "green": (0.30, 0.55, 0.30),
}
"""Named lesion colours (RGB in ``[0, 1]``); the words are the ones captions and descriptions use."""

_SKIN_LIGHT = (0.94, 0.79, 0.69)
_SKIN_DARK = (0.76, 0.56, 0.43)
_HAIR = (0.16, 0.11, 0.08)
_MAX_DOTS = 24
_MAX_HAIRS = 3


@dataclass
class LesionAttributes:
    """What one batch of lesions looks like; every field has the batch size as first dimension.

    Attributes:
        colour: ``(B, 3)`` RGB of the lesion body in ``[0, 1]``.
        colour2: ``(B, 3)`` RGB of the dots or streaks (unused for smooth lesions).
        shape: ``(B,)`` index into :data:`SHAPES`.
        texture: ``(B,)`` index into :data:`TEXTURES`.
        radius: ``(B,)`` lesion radius as a fraction of the half image width (see :data:`SIZES`).
        border: ``(B,)`` edge softness as a fraction of the radius (see :data:`BORDERS`).
    """

    colour: torch.Tensor
    colour2: torch.Tensor
    shape: torch.Tensor
    texture: torch.Tensor
    radius: torch.Tensor
    border: torch.Tensor

    def __len__(self) -> int:
        return int(self.shape.shape[0])


def _uniform(n: int, low: float | torch.Tensor, high: float | torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _smooth_noise(n: int, grid: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``(n, size, size)`` smooth random field of about unit amplitude: ``grid x grid`` noise, upsampled."""
    coarse = torch.randn(n, 1, grid, grid, generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[:, 0]


def _mix(base: torch.Tensor, overlay: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``base`` with ``overlay`` painted over it at per-pixel opacity ``alpha`` (``(B, H, W)``)."""
    a = alpha[:, None]
    return base * (1 - a) + overlay * a


def render_lesions(attributes: LesionAttributes, size: int, generator: torch.Generator) -> torch.Tensor:
    """Draw one image per lesion of ``attributes``.

    Args:
        attributes: the lesions to draw.
        size: image side in pixels.
        generator: the source of every random choice (position, rotation, outline, dots, skin, hairs, noise).

    Returns:
        ``(B, 3, size, size)`` float32 RGB images in ``[0, 1]``.
    """
    n, g = len(attributes), generator
    lin = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    y, x = torch.meshgrid(lin, lin, indexing="ij")
    x, y = x[None], y[None]
    shape, texture = attributes.shape, attributes.texture

    # outline: an ellipse (aspect by shape), rotated and moved, whose radius wobbles with the angle
    cx, cy = _uniform(n, -0.22, 0.22, g), _uniform(n, -0.22, 0.22, g)
    theta = _uniform(n, 0.0, 2 * math.pi, g)
    aspect_low = torch.tensor([1.0, 1.7, 1.0])[shape]
    aspect_high = torch.tensor([1.15, 2.4, 1.35])[shape]
    aspect = _uniform(n, aspect_low, aspect_high, g).sqrt()
    cos, sin = theta.cos()[:, None, None], theta.sin()[:, None, None]
    dx, dy = x - cx[:, None, None], y - cy[:, None, None]
    along, across = dx * cos + dy * sin, -dx * sin + dy * cos
    ex, ey = along / aspect[:, None, None], across * aspect[:, None, None]
    radius = attributes.radius[:, None, None]
    rho = torch.sqrt(ex * ex + ey * ey) / radius
    phi = torch.atan2(ey, ex)
    wobble = torch.tensor([0.025, 0.03, 0.16])[shape] * _uniform(n, 0.8, 1.2, g)
    boundary = torch.ones_like(rho)
    for k in range(2, 8):
        amplitude = wobble * _uniform(n, 0.5, 1.0, g) / math.sqrt(k - 1)
        phase = _uniform(n, 0.0, 2 * math.pi, g)
        boundary = boundary + amplitude[:, None, None] * torch.cos(k * phi + phase[:, None, None])
    mask = torch.sigmoid((boundary - rho) / attributes.border[:, None, None])

    # body: the lesion's colour, a little lighter towards its rim, with faint mottling
    rim = (rho / boundary).clamp(0, 1.5)
    shade = 0.9 + 0.2 * rim + 0.04 * _smooth_noise(n, 8, size, g)
    body = attributes.colour[:, :, None, None] * shade[:, None]

    # texture: dots of the second colour scattered inside the outline (drawn for every lesion so that the random
    # stream does not depend on the textures, but only computed for the speckled ones), or stripes along the axis
    dot_angle = _uniform(n * _MAX_DOTS, 0.0, 2 * math.pi, g).view(n, _MAX_DOTS, 1, 1)
    dot_r = (0.8 * torch.rand(n * _MAX_DOTS, generator=g).sqrt()).view(n, _MAX_DOTS, 1, 1)
    dot_size = _uniform(n * _MAX_DOTS, 0.03, 0.055, g).view(n, _MAX_DOTS, 1, 1)
    dot_count = torch.randint(10, _MAX_DOTS + 1, (n,), generator=g)
    dots = torch.zeros_like(rho)
    speckled = (texture == 1).nonzero().flatten()
    if len(speckled):
        s = speckled
        present = (torch.arange(_MAX_DOTS)[None] < dot_count[s, None]).float()[:, :, None, None]
        r4, a4 = attributes.radius[s, None, None, None], aspect[s, None, None, None]
        # dot centres in the lesion's own frame, then turned and moved like the lesion
        du = dot_r[s] * r4 * dot_angle[s].cos() * a4
        dv = dot_r[s] * r4 * dot_angle[s].sin() / a4
        c4, s4 = cos[s, None], sin[s, None]
        px = cx[s, None, None, None] + du * c4 - dv * s4
        py = cy[s, None, None, None] + du * s4 + dv * c4
        dist = torch.sqrt(torch.square(x[:, None] - px) + torch.square(y[:, None] - py))
        dots[s] = (torch.sigmoid((dot_size[s] - dist) / 0.008) * present).amax(dim=1)
    stripe_angle = theta + _uniform(n, -0.3, 0.3, g)
    w = -dx * stripe_angle.sin()[:, None, None] + dy * stripe_angle.cos()[:, None, None]
    w = w + 0.05 * _smooth_noise(n, 6, size, g)
    period = _uniform(n, 0.13, 0.19, g)[:, None, None]
    stripe_phase = _uniform(n, 0.0, 2 * math.pi, g)[:, None, None]
    stripes = torch.sigmoid((torch.sin(2 * math.pi * w / period + stripe_phase) - 0.35) / 0.12)
    pattern = torch.where(
        (texture == 1)[:, None, None], dots, torch.where((texture == 2)[:, None, None], stripes, torch.zeros_like(dots))
    )
    strength = _uniform(n, 0.7, 0.95, g)[:, None, None]
    lesion = _mix(body, attributes.colour2[:, :, None, None].expand_as(body), pattern * strength)

    # skin: a tone between light and dark, tilted lighting, mottling and pores
    tone = torch.rand(n, 1, generator=g)
    skin = torch.tensor(_SKIN_LIGHT) * (1 - tone) + torch.tensor(_SKIN_DARK) * tone
    skin = skin + _uniform(n * 3, -0.03, 0.03, g).view(n, 3)
    tilt_x, tilt_y = _uniform(n, -0.08, 0.08, g), _uniform(n, -0.08, 0.08, g)
    light = 1 + tilt_x[:, None, None] * x + tilt_y[:, None, None] * y
    mottle = 0.035 * _smooth_noise(n, 5, size, g)
    background = skin[:, :, None, None] * light[:, None] + mottle[:, None]
    image = _mix(background, lesion, mask)

    # hairs: thin dark curves across the image, from none to three
    hair_colour = torch.tensor(_HAIR).view(1, 3, 1, 1)
    for _ in range(_MAX_HAIRS):
        on = (torch.rand(n, generator=g) < 0.3).nonzero().flatten()
        hx, hy = _uniform(n, -1.0, 1.0, g)[on, None, None], _uniform(n, -1.0, 1.0, g)[on, None, None]
        angle = _uniform(n, 0.0, math.pi, g)[on]
        bend = _uniform(n, -0.6, 0.6, g)[on, None, None]
        width = _uniform(n, 0.008, 0.016, g)[on, None, None]
        if not len(on):
            continue
        ux, uy = angle.cos()[:, None, None], angle.sin()[:, None, None]
        t = (x - hx) * ux + (y - hy) * uy
        d = ((x - hx) * -uy + (y - hy) * ux + bend * t * t).abs()
        hair = torch.sigmoid((width - d) / 0.006) * 0.85
        image[on] = _mix(image[on], hair_colour, hair)

    # the dark circular rim of a contact dermatoscope, in about half of the images
    rim_on = (torch.rand(n, generator=g) < 0.5)[:, None, None]
    rim_radius = _uniform(n, 0.95, 1.35, g)[:, None, None]
    inside = torch.sigmoid((rim_radius - torch.sqrt(x * x + y * y)) / 0.04)
    inside = torch.where(rim_on, inside, torch.ones_like(inside))
    image = image * inside[:, None] + 0.03 * (1 - inside[:, None])

    sigma = _uniform(n, 0.005, 0.025, g)[:, None, None, None]
    image = image + sigma * torch.randn(n, 3, size, size, generator=g)
    return image.clamp(0, 1)
