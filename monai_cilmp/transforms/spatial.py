"""Spatial transforms: 2D slice selection from volumes (and 2.5D), fundus field-of-view crop, square padding and
the CLIP resize, each with a dictionary variant.

Images are channel-first: ``(C, H, W)`` or, for volumes, ``(C, X, Y, Z)``.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import CropForeground, Orientation, Resize, SpatialPad, Transform
from monai.utils import StrEnum, TransformBackends, convert_to_dst_type, convert_to_tensor, look_up_option

from ._base import KeysTransform
from .checks import MIN_IMAGE_SIDE
from .orientation import ANATOMICAL, VOLUME_AXCODES, display_slice

__all__ = [
    "ClipResize",
    "ClipResizeD",
    "ClipResizeDict",
    "ClipResized",
    "FieldOfViewCrop",
    "FieldOfViewCropD",
    "FieldOfViewCropDict",
    "FieldOfViewCropd",
    "PadToSquare",
    "PadToSquareD",
    "PadToSquareDict",
    "PadToSquared",
    "ResizeMode",
    "SelectSlice",
    "SelectSliceD",
    "SelectSliceDict",
    "SelectSliced",
    "SliceStrategy",
    "SquarePixels",
    "SquarePixelsD",
    "SquarePixelsDict",
    "SquarePixelsd",
]


class ResizeMode(StrEnum):
    """How :class:`ClipResize` fits an image into CLIP's square input.

    - ``crop``: shorter side to the target size, keeping the aspect ratio; the centre crop that follows in the
      presets cuts the longer side (what CLIP's own preprocessing does).
    - ``pad``: zero-pad to a square, then resize: nothing is cut (borders of radiographs can matter).
    - ``stretch``: resize both sides to the target size, ignoring the aspect ratio.
    """

    CROP = "crop"
    PAD = "pad"
    STRETCH = "stretch"


class SliceStrategy(StrEnum):
    """How :class:`SelectSlice` picks the slice of a volume: the middle one, a given index, or the slice with the
    largest foreground area."""

    MIDDLE = "middle"
    INDEX = "index"
    LARGEST_FOREGROUND = "largest_foreground"


class PadToSquare(Transform):
    """Zero-pad the shorter side of a 2D image symmetrically so that it becomes square (MONAI's ``SpatialPad``)."""

    backend = SpatialPad.backend

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        side = max(img.shape[1:])
        if all(s == side for s in img.shape[1:]):
            return img
        return SpatialPad([side] * (img.ndim - 1), method="symmetric", mode="constant")(img)


class ClipResize(Transform):
    """Resize a 2D image for a CLIP backbone of input size ``size`` (see :class:`ResizeMode`).

    Downsampling averages areas (no aliasing of fine texture such as fundus vessels or cell nuclei); upsampling is
    bilinear, which, unlike CLIP's bicubic, never overshoots the ``[0, 1]`` range.

    Args:
        size: the backbone's input side length (``net.image_size``).
        mode: ``"crop"`` (default), ``"pad"`` or ``"stretch"``.

    Raises:
        ValueError: the image is not 2D (select a slice of volumes first with :class:`SelectSlice`).
    """

    backend = Resize.backend

    def __init__(self, size: int, mode: str = ResizeMode.CROP) -> None:
        if int(size) < 1:
            raise ValueError(f"size must be a positive number of pixels, got {size}.")
        self.size, self.mode = int(size), look_up_option(mode, ResizeMode)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if img.ndim != 3:
            raise ValueError(
                f"ClipResize expects a 2D image (C, H, W), got shape {tuple(img.shape)}; reduce volumes and "
                "multi-frame images to one slice first (SelectSlice)."
            )
        if self.mode == ResizeMode.PAD:
            img = PadToSquare()(img)
        height, width = (int(s) for s in img.shape[1:])
        if self.mode == ResizeMode.CROP:
            scale = self.size / min(height, width)
            target = (max(self.size, round(height * scale)), max(self.size, round(width * scale)))
        else:
            target = (self.size, self.size)
        if target == (height, width):
            return img
        shrink = target[0] <= height and target[1] <= width
        resize = Resize(target, mode="area" if shrink else "bilinear", anti_aliasing=not shrink)
        return resize(img)


class _AboveFraction:
    """Foreground of a fundus photograph: channel mean above ``fraction`` of its maximum (picklable)."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        mean = img.mean(0, keepdims=True) if isinstance(img, np.ndarray) else img.mean(0, keepdim=True)
        return mean > self.fraction * mean.max()


class FieldOfViewCrop(Transform):
    """Crop a fundus photograph to its circular field of view and make it square.

    Fundus cameras record a bright disc on a black background, often clipped at the top and bottom and placed
    off-centre; cropping to the disc's bounding box (MONAI's ``CropForeground``) and padding it to a square puts
    the retina in the same place and scale in every image. Optionally pixels outside the inscribed circle are
    zeroed, which removes text and reflections in the corners.

    Args:
        threshold: foreground is where the channel mean exceeds this fraction of its maximum.
        margin: pixels kept around the field of view.
        mask: zero the pixels outside the circle inscribed in the square.
    """

    backend = CropForeground.backend

    def __init__(self, threshold: float = 0.05, margin: int = 0, mask: bool = True) -> None:
        if not 0 <= threshold < 1:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}.")
        self.crop = CropForeground(select_fn=_AboveFraction(threshold), margin=margin, allow_smaller=True)
        self.mask = mask

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if img.ndim != 3:
            raise ValueError(f"FieldOfViewCrop expects a 2D image (C, H, W), got shape {tuple(img.shape)}.")
        out = PadToSquare()(self.crop(img))
        if not self.mask:
            return out
        side = out.shape[-1]
        centre = (side - 1) / 2
        yy, xx = np.ogrid[:side, :side]
        inside = ((yy - centre) ** 2 + (xx - centre) ** 2) <= (side / 2) ** 2
        return out * convert_to_dst_type(inside[None], out, dtype=out.dtype)[0]


class SelectSlice(Transform):
    """Reduce a volume ``(C, X, Y, Z)`` to a 2D image: one slice, or adjacent slices as channels (2.5D).

    Volumes placed in the patient (NIfTI, DICOM series, multi-frame DICOM with plane positions, NumPy arrays with
    declared axes: the readers mark them) are first reoriented to LPS with MONAI's ``Orientation``, so that ``axis``
    0, 1 and 2 are sagittal, coronal and axial whatever the file's affine, and each slice is shown as radiologists
    view it (see :mod:`monai_cilmp.transforms.orientation`). 2D images pass through (with ``context`` their channels
    are repeated, so that the output has the same number of channels either way). Multi-frame files that do not say
    where their frames lie (ultrasound clips, endoscopy videos) are volumes whose last axis is the frame axis.

    Args:
        strategy: ``"middle"``, ``"index"`` (``index``, negative counts from the end) or ``"largest_foreground"``
            (the slice with most voxels above ``threshold``, e.g. the widest section of an organ or a tumour).
        index: slice index for ``"index"``.
        axis: spatial axis to slice (0, 1, 2 or -1): sagittal, coronal, axial (-1) for volumes placed in the patient,
            the frame axis (-1) for clips.
        context: number of neighbours on each side taken as extra channels: ``context=1`` gives 2.5D input of three
            adjacent slices (clamped at the volume's ends); the output has ``C * (2 * context + 1)`` channels.
        threshold: foreground threshold for ``"largest_foreground"`` (``None``: the volume's mean intensity).

    Raises:
        ValueError: a bad option, an index out of range, or an input that is neither 2D nor 3D.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        strategy: str = SliceStrategy.MIDDLE,
        index: int | None = None,
        axis: int = -1,
        context: int = 0,
        threshold: float | None = None,
    ) -> None:
        self.strategy = look_up_option(strategy, SliceStrategy)
        if self.strategy == SliceStrategy.INDEX and index is None:
            raise ValueError("The 'index' slice strategy needs a slice index.")
        if axis not in (-3, -2, -1, 0, 1, 2):
            raise ValueError(f"axis must be a spatial axis of a volume (0, 1, 2 or negative), got {axis}.")
        if context < 0:
            raise ValueError(f"context must be >= 0, got {context}.")
        self.index, self.axis, self.context, self.threshold = index, axis % 3, int(context), threshold

    def slice_index(self, volume: torch.Tensor) -> int:
        """The selected slice of a ``(C, X, Y, Z)`` tensor."""
        count = volume.shape[1 + self.axis]
        if self.strategy == SliceStrategy.MIDDLE:
            return count // 2
        if self.strategy == SliceStrategy.INDEX:
            if not -count <= self.index < count:  # type: ignore[operator]
                raise ValueError(
                    f"Slice index {self.index} is out of range for a volume of {count} slices along axis {self.axis}."
                )
            return int(self.index) % count  # type: ignore[arg-type]
        threshold = float(volume.float().mean()) if self.threshold is None else self.threshold
        foreground = (volume > threshold).any(0)
        area = foreground.sum(dim=[d for d in range(3) if d != self.axis])
        return int(torch.argmax(area))

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        repeats = 2 * self.context + 1
        if img.ndim == 3:
            return img if repeats == 1 else convert_to_dst_type(torch.cat([convert_to_tensor(img)] * repeats), img)[0]
        if img.ndim != 4:
            raise ValueError(f"SelectSlice expects a 2D (C, H, W) or 3D (C, X, Y, Z) image, got {tuple(img.shape)}.")
        anatomical = isinstance(img, MetaTensor) and bool(img.meta.get(ANATOMICAL, False))
        if anatomical:  # one orientation whatever the container: LPS, then slices as radiologists view them
            img = Orientation(axcodes=VOLUME_AXCODES)(img)
        volume = convert_to_tensor(img, track_meta=False)
        index = self.slice_index(volume)
        count = volume.shape[1 + self.axis]
        picks = [min(max(i, 0), count - 1) for i in range(index - self.context, index + self.context + 1)]
        slices = torch.movedim(volume, 1 + self.axis, 1)[:, picks]  # (C, 2k+1, a, b)
        out = slices.reshape(-1, *slices.shape[2:])
        spacing = None
        if anatomical:
            out = display_slice(out, self.axis)
            # the physical size of the displayed pixels (rows, columns), for SquarePixels
            sizes = np.linalg.norm(np.asarray(img.affine, dtype=np.float64)[:3, :3], axis=0)
            rows, columns = {0: (2, 1), 1: (2, 0), 2: (1, 0)}[self.axis]
            spacing = (float(sizes[rows]), float(sizes[columns]))
        if not isinstance(img, MetaTensor):
            return convert_to_dst_type(out, img)[0]
        # the volume's 3D affine no longer describes the slice: keep the rest of the metadata and where it came from
        meta = {k: v for k, v in img.meta.items() if k not in ("affine", "original_affine", "spatial_shape")}
        if min(out.shape[1:]) < MIN_IMAGE_SIDE:
            source = img.meta.get("filename_or_obj", "the volume")
            raise ValueError(
                f"'{source}' gives a {out.shape[1]}x{out.shape[2]} slice along axis {self.axis} (volume "
                f"{'x'.join(str(s) for s in volume.shape[1:])}): slice it along another axis (slice_axis)."
            )
        meta.update({"SliceIndex": index, "SliceAxis": self.axis})
        if spacing is not None:
            meta["PixelSpacing"] = spacing
        return MetaTensor(out, meta=meta)


class SquarePixels(Transform):
    """Resample a 2D image ``(C, H, W)`` whose pixels are not square (its ``PixelSpacing`` metadata: DICOM's
    ``PixelSpacing``/``ImagerPixelSpacing``, or the in-plane voxel sizes of a volume's slice) so that they are, before
    the CLIP resize: anatomy keeps its shape. The coarser axis is resampled to the finer spacing, unless the image
    would then exceed ``max_side`` pixels (the finer axis is then reduced instead). Images without a spacing, or with
    square pixels, pass through.

    Args:
        max_side: the largest side the resampled image may have.
        tolerance: relative spacing difference below which pixels count as square.
    """

    backend = Resize.backend

    def __init__(self, max_side: int = 2048, tolerance: float = 0.01) -> None:
        self.max_side, self.tolerance = int(max_side), float(tolerance)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        spacing = img.meta.get("PixelSpacing") if isinstance(img, MetaTensor) else None
        if spacing is None or img.ndim != 3:
            return img
        try:
            rows, columns = (float(s) for s in np.asarray(spacing, dtype=np.float64).reshape(-1)[:2])
        except (TypeError, ValueError):
            return img
        if not (rows > 0 and columns > 0) or abs(rows - columns) <= self.tolerance * max(rows, columns):
            return img
        height, width = (int(s) for s in img.shape[1:])
        extent = (height * rows, width * columns)
        target = max(min(rows, columns), max(extent) / self.max_side)
        size = (max(1, round(extent[0] / target)), max(1, round(extent[1] / target)))
        shrink = size[0] <= height and size[1] <= width
        out = Resize(size, mode="area" if shrink else "bilinear", anti_aliasing=False)(img)
        if isinstance(out, MetaTensor):
            out.meta["PixelSpacing"] = (extent[0] / size[0], extent[1] / size[1])
        return out


class SquarePixelsd(KeysTransform):
    """Dictionary-based :class:`SquarePixels`."""

    backend = SquarePixels.backend

    def __init__(
        self, keys: KeysCollection, max_side: int = 2048, tolerance: float = 0.01, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = SquarePixels(max_side, tolerance)


class PadToSquared(KeysTransform):
    """Dictionary-based :class:`PadToSquare`."""

    backend = PadToSquare.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = PadToSquare()


class ClipResized(KeysTransform):
    """Dictionary-based :class:`ClipResize`."""

    backend = ClipResize.backend

    def __init__(
        self, keys: KeysCollection, size: int, mode: str = ResizeMode.CROP, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ClipResize(size, mode)


class FieldOfViewCropd(KeysTransform):
    """Dictionary-based :class:`FieldOfViewCrop`."""

    backend = FieldOfViewCrop.backend

    def __init__(
        self,
        keys: KeysCollection,
        threshold: float = 0.05,
        margin: int = 0,
        mask: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = FieldOfViewCrop(threshold, margin, mask)


class SelectSliced(KeysTransform):
    """Dictionary-based :class:`SelectSlice`."""

    backend = SelectSlice.backend

    def __init__(
        self,
        keys: KeysCollection,
        strategy: str = SliceStrategy.MIDDLE,
        index: int | None = None,
        axis: int = -1,
        context: int = 0,
        threshold: float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = SelectSlice(strategy, index, axis, context, threshold)


PadToSquareD = PadToSquareDict = PadToSquared
ClipResizeD = ClipResizeDict = ClipResized
FieldOfViewCropD = FieldOfViewCropDict = FieldOfViewCropd
SelectSliceD = SelectSliceDict = SelectSliced
SquarePixelsD = SquarePixelsDict = SquarePixelsd
