"""The one rule for bad images: what every command refuses, with the same sentence, wherever an image enters.

:class:`~monai_cilmp.transforms.LoadMedicalImage` applies :func:`image_problem` to every image it reads, so the
presets (and with them ``train``, ``evaluate``, ``predict``, the bundles and the MONAI Label app) refuse exactly what
``prepare --check`` (:func:`monai_cilmp.data.check_images`) reports, in the same words.

Accepted: 2-D images and 3-D volumes (or multi-frame files) with one (grayscale) or three (RGB) channels, whose two
largest sides have at least :data:`MIN_IMAGE_SIDE` pixels (so a volume with a single slice is fine: it reads as a 2-D
image), with finite values that are not all the same. Refused, each with one sentence naming the file and the fix:
4-D images (a NIfTI time series or vector image: take one volume), 1-pixel-wide or tiny images, constant (blank)
images, NaN or infinite values, and images over :data:`MAX_IMAGE_PIXELS` pixels that the format cannot reduce on read
(JPEG files are decoded at a reduced scale instead, see :class:`~monai_cilmp.transforms.PhotoReader`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["MAX_IMAGE_PIXELS", "MIN_IMAGE_SIDE", "image_problem", "too_large_problem"]

#: images whose two largest sides are not both this many pixels or more are degenerate (a 1x1 file is no image)
MIN_IMAGE_SIDE = 8
#: pixels (voxels) of the largest image read at full resolution: 2**30 float32 values are 4 GiB of memory
MAX_IMAGE_PIXELS = 2**30


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def too_large_problem(shape: Sequence[int], path: str) -> str | None:
    """The sentence refusing an image of ``shape`` (spatial sides, before reading its pixels) that is too large."""
    if int(np.prod([int(s) for s in shape], dtype=np.float64)) > MAX_IMAGE_PIXELS:
        return (
            f"'{path}' is too large to read ({_shape(shape)} pixels, over {MAX_IMAGE_PIXELS}): downsample or crop "
            "it first (the network sees a few hundred pixels a side)."
        )
    return None


def image_problem(
    image: np.ndarray | torch.Tensor, path: str, channel_dim: int | None = None, colour: bool = True
) -> str | None:
    """Why a loaded image cannot be used, in one sentence naming ``path``; ``None`` when it is fine.

    Args:
        image: the image as read.
        path: the file (or DICOM series folder) it was read from.
        channel_dim: the axis of its channels (``None``: it has none).
        colour: whether three channels are RGB (``False`` for formats such as NIfTI, where a 4th axis of three is
            three volumes of a time series).

    Returns:
        the sentence, or ``None``.
    """
    shape = tuple(int(s) for s in image.shape)
    if channel_dim is None:
        spatial, channels = shape, 1
    else:
        axis = channel_dim % len(shape)
        spatial, channels = shape[:axis] + shape[axis + 1 :], shape[axis]
    if len(spatial) not in (2, 3) or channels not in ((1, 3) if colour else (1,)):
        layers = f" with {channels} channels or volumes" if channels != 1 else ""
        return (
            f"'{path}' has {len(shape)} dimensions ({_shape(spatial)}{layers}), e.g. a time series: only 2-D images "
            "and 3-D volumes, grayscale or RGB, are supported; extract one image or volume from it (with nibabel: "
            "image.slicer[..., 0])."
        )
    sides = sorted(spatial)
    if sides[-2] < MIN_IMAGE_SIDE:
        return (
            f"'{path}' is a degenerate image of {_shape(spatial)} pixels: two of its sides need {MIN_IMAGE_SIDE} "
            "pixels or more; remove it."
        )
    if (problem := too_large_problem(spatial, path)) is not None:
        return problem
    values = image.as_subclass(torch.Tensor) if isinstance(image, torch.Tensor) else torch.as_tensor(image)
    if values.is_floating_point() and not bool(torch.isfinite(values).all()):
        return f"'{path}' holds NaN or infinite values: fix or remove it; it would turn training into NaN."
    if values.numel() and bool(values.min() == values.max()):
        return (
            f"'{path}' has a single intensity value ({float(values.reshape(-1)[0]):g}) everywhere: it is blank; "
            "remove it."
        )
    return None
