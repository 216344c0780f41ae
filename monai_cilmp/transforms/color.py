"""Colour transforms: grayscale/RGB channel conversion, colour jitter and H&E stain normalisation.

Images are channel-first with values in ``[0, 1]`` (``ToGrayscale``/``ToRGB`` accept any range).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.apps.pathology.transforms.stain.array import NormalizeHEStains
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import get_track_meta
from monai.transforms import MapTransform, RandomizableTransform, Transform
from monai.transforms.utils_pytorch_numpy_unification import concatenate
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from ._base import KeysTransform

__all__ = [
    "HEStainNormalize",
    "HEStainNormalizeD",
    "HEStainNormalizeDict",
    "HEStainNormalized",
    "RandColorJitter",
    "RandColorJitterD",
    "RandColorJitterDict",
    "RandColorJitterd",
    "ToGrayscale",
    "ToGrayscaleD",
    "ToGrayscaleDict",
    "ToGrayscaled",
    "ToRGB",
    "ToRGBD",
    "ToRGBDict",
    "ToRGBd",
]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, what Pillow's "L" conversion uses


def _luma(img: NdarrayOrTensor) -> NdarrayOrTensor:
    return img[0:1] * _LUMA[0] + img[1:2] * _LUMA[1] + img[2:3] * _LUMA[2]


class ToGrayscale(Transform):
    """One channel: RGB(A) becomes its luma (BT.601 weights), an alpha channel is dropped, gray stays gray.

    Raises:
        ValueError: the image has more than four channels.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        channels = img.shape[0]
        if channels in (1, 2):
            return img[0:1]
        if channels in (3, 4):
            return _luma(img)
        raise ValueError(f"ToGrayscale expects 1 to 4 channels (gray, gray+alpha, RGB, RGBA), got {channels}.")


class ToRGB(Transform):
    """Three channels, as CLIP expects: gray is repeated, RGBA loses its alpha, RGB stays.

    Two channels (e.g. two CT windows or two MRI echoes) are completed with their mean as the third channel.

    Raises:
        ValueError: the image has more than four channels.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        channels = img.shape[0]
        if channels == 1:
            return concatenate([img, img, img], axis=0)
        if channels == 2:
            return concatenate([img, (img[0:1] + img[1:2]) / 2], axis=0)
        if channels == 3:
            return img
        if channels == 4:
            return img[:3]
        raise ValueError(f"ToRGB expects 1 to 4 channels, got {channels}.")


def _hue_matrix(
    shift: float, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """RGB-to-RGB matrix rotating hue by ``shift`` turns, through the YIQ colour space, on ``device``."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64)
    cos, sin = math.cos(2 * math.pi * shift), math.sin(2 * math.pi * shift)
    rotate = torch.tensor([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]], dtype=torch.float64)
    return (torch.linalg.inv(to_yiq) @ rotate @ to_yiq).to(device=device, dtype=dtype)


class RandColorJitter(RandomizableTransform):
    """Randomly change brightness, contrast, saturation and hue of an image in ``[0, 1]``.

    Factors are drawn uniformly: brightness and contrast in ``[1 - b, 1 + b]``, saturation in ``[1 - s, 1 + s]``,
    hue shift in ``[-h, h]`` turns; saturation and hue only apply to three-channel images. The result is clipped
    to ``[0, 1]``. Meant for stain and camera variation in histology, dermoscopy and endoscopy.

    Args:
        prob: probability of jittering.
        brightness: maximum relative brightness change.
        contrast: maximum relative contrast change (around the mean gray value).
        saturation: maximum relative saturation change.
        hue: maximum hue shift in turns (0.5 = half the colour wheel).
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        prob: float = 0.8,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.02,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value}.")
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}.")
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue
        self.factors = (1.0, 1.0, 1.0, 0.0)

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        b, c, s, h = self.brightness, self.contrast, self.saturation, self.hue
        self.factors = (
            float(self.R.uniform(1 - b, 1 + b)),
            float(self.R.uniform(1 - c, 1 + c)),
            float(self.R.uniform(1 - s, 1 + s)),
            float(self.R.uniform(-h, h)),
        )

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        if randomize:
            self.randomize()
        if not self._do_transform:
            return convert_to_tensor(img, track_meta=get_track_meta())
        brightness, contrast, saturation, hue = self.factors
        x = convert_to_tensor(img, dtype=torch.float32, track_meta=False) * brightness
        colour = x.shape[0] == 3
        mean = (_luma(x) if colour else x).mean()
        x = (x - mean) * contrast + mean
        if colour:
            gray = _luma(x)
            x = (x - gray) * saturation + gray
            if hue:
                x = torch.einsum("ij,j...->i...", _hue_matrix(hue, x.device, x.dtype), x)
        out = x.clamp(0.0, 1.0)
        return convert_to_dst_type(out, img, dtype=torch.float32)[0]


class HEStainNormalize(Transform):
    """Macenko H&E stain normalisation (MONAI's ``NormalizeHEStains``) of a channel-first RGB image.

    Histology tiles from different labs differ mostly in their staining; mapping every tile to one reference
    stain matrix removes that shift. Tiles without enough stained tissue (background, blur) are returned
    unchanged, since their stain vectors cannot be estimated. Meant for H&E; not for Giemsa-stained blood smears.

    Args:
        scale: the value of full intensity in the input (1 for images in ``[0, 1]``, 255 for 8-bit values).
        kwargs: passed to ``monai.apps.pathology.transforms.NormalizeHEStains`` (``tli``, ``alpha``, ``beta``,
            ``target_he``, ``max_cref``).
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, scale: float = 1.0, **kwargs: Any) -> None:
        self.scale = float(scale)
        self.normalizer = NormalizeHEStains(**kwargs)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if img.shape[0] != 3:
            raise ValueError(f"HEStainNormalize expects an RGB image (3 channels), got {img.shape[0]} channels.")
        array = convert_to_dst_type(img, np.zeros(0), dtype=np.float32)[0]
        rgb = np.clip(np.moveaxis(array, 0, -1) * (255.0 / self.scale), 0, 255).round().astype(np.uint8)
        try:
            normalised = self.normalizer(rgb)
        except (ValueError, np.linalg.LinAlgError):
            return img
        out = np.moveaxis(normalised, -1, 0).astype(np.float32) * (self.scale / 255.0)
        return convert_to_dst_type(out, img, dtype=torch.float32 if isinstance(img, torch.Tensor) else np.float32)[0]


class ToGrayscaled(KeysTransform):
    """Dictionary-based :class:`ToGrayscale`."""

    backend = ToGrayscale.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ToGrayscale()


class ToRGBd(KeysTransform):
    """Dictionary-based :class:`ToRGB`."""

    backend = ToRGB.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ToRGB()


class HEStainNormalized(KeysTransform):
    """Dictionary-based :class:`HEStainNormalize`."""

    backend = HEStainNormalize.backend

    def __init__(self, keys: KeysCollection, scale: float = 1.0, allow_missing_keys: bool = False, **kwargs) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = HEStainNormalize(scale, **kwargs)


class RandColorJitterd(RandomizableTransform, MapTransform):
    """Dictionary-based :class:`RandColorJitter`; all keys get the same random factors."""

    backend = RandColorJitter.backend

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.8,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.02,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.jitter = RandColorJitter(1.0, brightness, contrast, saturation, hue)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandColorJitterd:
        super().set_random_state(seed, state)
        self.jitter.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            for key in self.key_iterator(d):
                d[key] = convert_to_tensor(d[key], track_meta=get_track_meta())
            return d
        self.jitter.randomize(None)
        for key in self.key_iterator(d):
            d[key] = self.jitter(d[key], randomize=False)
        return d


ToGrayscaleD = ToGrayscaleDict = ToGrayscaled
ToRGBD = ToRGBDict = ToRGBd
HEStainNormalizeD = HEStainNormalizeDict = HEStainNormalized
RandColorJitterD = RandColorJitterDict = RandColorJitterd
