"""Intensity transforms that MONAI lacks for medical images: CT windows by name, ``MONOCHROME1`` inversion,
speckle-robust ultrasound scaling and foreground z-scores for MRI, each with a dictionary variant.

Every transform maps its modality's raw values to ``[0, 1]`` (the range CLIP's normalisation expects), except
:class:`InvertMonochrome1`, which keeps the range it is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MedianSmooth, NormalizeIntensity, ScaleIntensityRange, Transform
from monai.transforms.utils_pytorch_numpy_unification import concatenate
from monai.utils import StrEnum, TransformBackends, convert_to_dst_type, convert_to_tensor, look_up_option

from ._base import KeysTransform

__all__ = [
    "CT_WINDOWS",
    "CTWindow",
    "CTWindowD",
    "CTWindowDict",
    "CTWindowName",
    "CTWindowd",
    "InvertMonochrome1",
    "InvertMonochrome1D",
    "InvertMonochrome1Dict",
    "InvertMonochrome1d",
    "SpeckleRobustScaleIntensity",
    "SpeckleRobustScaleIntensityD",
    "SpeckleRobustScaleIntensityDict",
    "SpeckleRobustScaleIntensityd",
    "ZScoreScaleIntensity",
    "ZScoreScaleIntensityD",
    "ZScoreScaleIntensityDict",
    "ZScoreScaleIntensityd",
    "parse_windows",
]


class CTWindowName(StrEnum):
    """Named CT windows (see :data:`CT_WINDOWS`)."""

    LUNG = "lung"
    MEDIASTINUM = "mediastinum"
    BONE = "bone"
    BRAIN = "brain"
    SUBDURAL = "subdural"
    STROKE = "stroke"
    ABDOMEN = "abdomen"
    LIVER = "liver"
    SOFT_TISSUE = "soft_tissue"


# (level, width) in Hounsfield units, the usual radiology reading windows
CT_WINDOWS: dict[str, tuple[float, float]] = {
    CTWindowName.LUNG: (-600.0, 1500.0),
    CTWindowName.MEDIASTINUM: (50.0, 350.0),
    CTWindowName.BONE: (400.0, 1800.0),
    CTWindowName.BRAIN: (40.0, 80.0),
    CTWindowName.SUBDURAL: (75.0, 215.0),
    CTWindowName.STROKE: (40.0, 40.0),
    CTWindowName.ABDOMEN: (40.0, 400.0),
    CTWindowName.LIVER: (30.0, 150.0),
    CTWindowName.SOFT_TISSUE: (40.0, 350.0),
}

Window = str | tuple[float, float]


def parse_windows(windows: Window | Sequence[Window]) -> list[tuple[str, float, float]]:
    """``(name, level, width)`` of each window: a name of :data:`CT_WINDOWS` or a ``(level, width)`` pair.

    Raises:
        ValueError: an unknown name (with a suggestion), a width that is not positive, or not 1 to 3 windows.
    """
    is_pair = (
        isinstance(windows, (tuple, list)) and len(windows) == 2 and all(isinstance(v, (int, float)) for v in windows)
    )
    items = [windows] if isinstance(windows, str) or is_pair else list(windows)  # type: ignore[arg-type]
    if not 1 <= len(items) <= 3:
        raise ValueError(f"Give 1 to 3 CT windows (one per image channel), got {len(items)}.")
    parsed = []
    for item in items:
        if isinstance(item, str):
            name = look_up_option(item.strip().lower().replace("-", "_").replace(" ", "_"), CTWindowName)
            parsed.append((str(name), *CT_WINDOWS[name]))
        else:
            level, width = (float(v) for v in item)
            parsed.append((f"L{level:g}/W{width:g}", level, width))
    for name, _, width in parsed:
        if width <= 0:
            raise ValueError(f"CT window {name} must have a positive width.")
    return parsed


class CTWindow(Transform):
    """Window Hounsfield units into ``[0, 1]``; several windows become channels.

    With one window every input channel is windowed (e.g. three adjacent slices of a 2.5D input); with two or three
    windows the input must have one channel and the output has one channel per window, so that e.g. lung,
    mediastinum and bone windows fill the three channels CLIP expects.

    Args:
        windows: a window name of :data:`CT_WINDOWS` (``"lung"``, ``"mediastinum"``, ``"bone"``, ``"brain"``,
            ``"subdural"``, ``"stroke"``, ``"abdomen"``, ``"liver"``, ``"soft_tissue"``), a ``(level, width)``
            pair in HU, or a sequence of up to three of them.

    Raises:
        ValueError: bad windows, or several windows for a multi-channel input.
    """

    backend = ScaleIntensityRange.backend

    def __init__(self, windows: Window | Sequence[Window] = ("lung", "mediastinum", "bone")) -> None:
        self.windows = parse_windows(windows)
        self.scalers = [
            ScaleIntensityRange(a_min=level - width / 2, a_max=level + width / 2, b_min=0.0, b_max=1.0, clip=True)
            for _, level, width in self.windows
        ]

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if len(self.scalers) == 1:
            return self.scalers[0](img)
        if img.shape[0] != 1:
            raise ValueError(
                f"Several CT windows ({', '.join(n for n, _, _ in self.windows)}) need a one-channel image of "
                f"Hounsfield units, got {img.shape[0]} channels."
            )
        return concatenate([scaler(img) for scaler in self.scalers], axis=0)


class InvertMonochrome1(Transform):
    """Invert a ``MONOCHROME1`` image (bright = low values) so that it reads like ``MONOCHROME2``.

    :class:`~monai_cilmp.transforms.DicomReader` already inverts ``MONOCHROME1`` DICOM files (and then records
    ``MONOCHROME2``), so by default this only acts on images whose metadata still says ``MONOCHROME1``; use
    ``invert=True`` for exports known to be inverted (e.g. PNGs of ``MONOCHROME1`` radiographs). The inversion
    maps the image's minimum to its maximum and back.

    Args:
        invert: ``None``: invert when the ``MetaTensor``'s ``PhotometricInterpretation`` is ``MONOCHROME1``;
            ``True``/``False``: always/never invert.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, invert: bool | None = None) -> None:
        self.invert = invert

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        meta = img.meta if isinstance(img, MetaTensor) else {}
        invert = self.invert
        if invert is None:
            invert = str(meta.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1"
        if not invert:
            return img
        out = img.max() + img.min() - img
        if isinstance(out, MetaTensor):
            out.meta["PhotometricInterpretation"], out.meta["Inverted"] = "MONOCHROME2", True
        return out


def _percentiles(values: torch.Tensor, q: Sequence[float]) -> list[float]:
    """``np.percentile(values, q)`` (linear interpolation) computed with torch on the tensor's own device.

    A sort instead of ``torch.quantile``, which refuses inputs of more than 16 million elements.
    """
    ordered = torch.sort(values.flatten()).values
    n = ordered.numel()
    out = []
    for percent in q:
        position = percent / 100.0 * (n - 1)
        low = int(math.floor(position))
        high = min(low + 1, n - 1)
        a, b = ordered[[low, high]].double().tolist()
        out.append(a + (b - a) * (position - low))
    return out


class SpeckleRobustScaleIntensity(Transform):
    """Scale an ultrasound image to ``[0, 1]`` between robust percentiles.

    The percentiles are taken on a median-filtered copy (so that bright speckle and isolated reflections do not
    set the range) and only over non-zero pixels (so that the black background around the ultrasound sector does
    not set the lower bound); the image itself is scaled unfiltered, keeping its texture.

    Args:
        lower: lower percentile (0-100).
        upper: upper percentile (0-100).
        radius: radius of the median filter (0 disables it).
        ignore_zeros: take percentiles over non-zero pixels only.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, lower: float = 1.0, upper: float = 99.0, radius: int = 1, ignore_zeros: bool = True) -> None:
        if not 0 <= lower < upper <= 100:
            raise ValueError(f"Percentiles must satisfy 0 <= lower < upper <= 100, got {lower} and {upper}.")
        self.lower, self.upper, self.ignore_zeros = lower, upper, ignore_zeros
        self.smooth = MedianSmooth(radius) if radius > 0 else None

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        x = convert_to_tensor(img, dtype=torch.float32, track_meta=False)
        reference = self.smooth(x) if self.smooth is not None else x
        values = reference.flatten()
        if self.ignore_zeros and bool((values != 0).any()):
            values = values[values != 0]
        low, high = _percentiles(values, (self.lower, self.upper))
        scaled = ((x - low) / max(high - low, 1e-8)).clamp(0.0, 1.0)
        return convert_to_dst_type(scaled, img, dtype=torch.float32)[0]


class ZScoreScaleIntensity(Transform):
    """Z-score an MRI image over its foreground, clip at ``±clip`` standard deviations and map to ``[0, 1]``.

    MRI intensities have no absolute scale, so each image is standardised by its own statistics (MONAI's
    ``NormalizeIntensity``); the background (exact zeros when ``nonzero``) stays at 0 instead of landing mid-range.

    Args:
        clip: number of standard deviations mapped to 0 and 1.
        nonzero: compute the statistics over non-zero voxels only and keep zeros at 0.
        channel_wise: standardise each channel separately.
    """

    backend = NormalizeIntensity.backend

    def __init__(self, clip: float = 3.0, nonzero: bool = True, channel_wise: bool = True) -> None:
        if clip <= 0:
            raise ValueError(f"clip must be positive, got {clip}.")
        self.nonzero = nonzero
        self.normalize = NormalizeIntensity(nonzero=nonzero, channel_wise=channel_wise)
        self.scale = ScaleIntensityRange(a_min=-clip, a_max=clip, b_min=0.0, b_max=1.0, clip=True)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        out = self.scale(self.normalize(img))
        if self.nonzero:
            out = out * (img != 0)
        return out


class CTWindowd(KeysTransform):
    """Dictionary-based :class:`CTWindow`."""

    backend = CTWindow.backend

    def __init__(
        self,
        keys: KeysCollection,
        windows: Window | Sequence[Window] = ("lung", "mediastinum", "bone"),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = CTWindow(windows)


class InvertMonochrome1d(KeysTransform):
    """Dictionary-based :class:`InvertMonochrome1`."""

    backend = InvertMonochrome1.backend

    def __init__(self, keys: KeysCollection, invert: bool | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = InvertMonochrome1(invert)


class SpeckleRobustScaleIntensityd(KeysTransform):
    """Dictionary-based :class:`SpeckleRobustScaleIntensity`."""

    backend = SpeckleRobustScaleIntensity.backend

    def __init__(
        self,
        keys: KeysCollection,
        lower: float = 1.0,
        upper: float = 99.0,
        radius: int = 1,
        ignore_zeros: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = SpeckleRobustScaleIntensity(lower, upper, radius, ignore_zeros)


class ZScoreScaleIntensityd(KeysTransform):
    """Dictionary-based :class:`ZScoreScaleIntensity`."""

    backend = ZScoreScaleIntensity.backend

    def __init__(
        self,
        keys: KeysCollection,
        clip: float = 3.0,
        nonzero: bool = True,
        channel_wise: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ZScoreScaleIntensity(clip, nonzero, channel_wise)


CTWindowD = CTWindowDict = CTWindowd
InvertMonochrome1D = InvertMonochrome1Dict = InvertMonochrome1d
SpeckleRobustScaleIntensityD = SpeckleRobustScaleIntensityDict = SpeckleRobustScaleIntensityd
ZScoreScaleIntensityD = ZScoreScaleIntensityDict = ZScoreScaleIntensityd
