"""Medical image readers for MONAI's ``LoadImage``: photographs (PIL), DICOM (pydicom) and NIfTI (nibabel).

The readers are :class:`monai.data.ImageReader` subclasses, so they can be registered with MONAI's own
``LoadImage``/``LoadImaged``. :class:`LoadMedicalImage` (``LoadMedicalImaged``) registers all three and picks one by
file type, so that a file that cannot be read fails with one sentence naming it (MONAI's loader would try every
reader in turn and report a wall of tracebacks), and applies the one rule for bad images
(:func:`~monai_cilmp.transforms.checks.image_problem`) to every image it reads.

Conventions of the arrays they return (before ``EnsureChannelFirst``):

- photographs and single-frame DICOM images are ``(rows, columns[, 3])``, the orientation CLIP was trained on
  (MONAI's ``PILReader`` transposes 2D images by default; for a CLIP backbone upright images matter);
- multi-frame DICOM files and DICOM series folders are ``(rows, columns, frames[, 3])``, frames sorted along the
  slice normal; when the files say where their frames lie (series, enhanced and legacy multi-frame objects) the
  volume carries its RAS ``affine`` and the :data:`~monai_cilmp.transforms.orientation.ANATOMICAL` flag;
- NIfTI images keep nibabel's voxel order, reoriented to the closest canonical (RAS) orientation by default, with
  their affine and the same flag (so do NumPy volumes whose axes are declared with ``numpy_axcodes``).

:class:`~monai_cilmp.transforms.SelectSlice` turns flagged volumes into 2D views in one orientation whatever the
container (see :mod:`monai_cilmp.transforms.orientation`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import KeysCollection, PathLike
from monai.data import ImageReader, NibabelReader, NumpyReader
from monai.data.utils import is_supported_format
from monai.transforms import LoadImage, LoadImaged, MapTransform
from monai.utils import PostFix, ensure_tuple, ensure_tuple_rep, optional_import

from .checks import image_problem, too_large_problem
from .orientation import ANATOMICAL, axcodes_affine, dicom_frame_geometry, dicom_volume_affine

pydicom, has_pydicom = optional_import("pydicom")
PILImage, has_pil = optional_import("PIL.Image")
ImageOps, _ = optional_import("PIL.ImageOps")

__all__ = [
    "COMPRESSED_TRANSFER_SYNTAXES",
    "DECODER_PACKAGES",
    "DICOM_SUFFIXES",
    "DicomReader",
    "ImageReadError",
    "LoadMedicalImage",
    "LoadMedicalImageD",
    "LoadMedicalImageDict",
    "LoadMedicalImaged",
    "NIFTI_SUFFIXES",
    "NiftiReader",
    "NumpyArrayReader",
    "PHOTO_SUFFIXES",
    "PhotoReader",
    "SUPPORTED_PHOTOMETRIC_INTERPRETATIONS",
    "reader_error",
]

PHOTO_SUFFIXES = ("png", "jpg", "jpeg", "tif", "tiff", "bmp")
DICOM_SUFFIXES = ("dcm", "dicom", "dic", "ima")
NIFTI_SUFFIXES = ("nii", "nii.gz")
SUPPORTED_PHOTOMETRIC_INTERPRETATIONS = (
    "MONOCHROME1",
    "MONOCHROME2",
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_ICT",
    "YBR_RCT",
    "PALETTE COLOR",
)


class ImageReadError(ValueError):
    """An image file that cannot be read; the message is one sentence naming the file."""


def _reason(error: BaseException, path: str = "") -> str:
    """The first line of an exception's message, without its final full stop or the file name (already in the
    sentence), to quote inside a sentence."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if path:
        text = text.replace(f" '{path}'", "").replace(f' "{path}"', "").replace(f" {path}", "")
    return text.rstrip(".: ")


def _single(data: Sequence[PathLike] | PathLike, reader: str) -> str:
    names = ensure_tuple(data)
    if len(names) != 1:
        raise ValueError(f"{reader} reads one file (or one DICOM series folder) at a time, got {len(names)}.")
    path = os.fspath(names[0])
    if not os.path.exists(path):
        raise FileNotFoundError(f"Image file '{path}' does not exist.")
    return path


def _channel_axis(value: Any) -> int | None:
    """The channel axis recorded by a reader (``original_channel_dim``), ``None`` for none (NaN or ``no_channel``)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else int(number)


def _plain(value: Any) -> Any:
    """A pydicom value as a plain Python number or string (MONAI's loader only accepts plain metadata)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return _plain(value[0]) if len(value) else None
    if isinstance(value, (int, float)):
        return float(value)
    return str(value)


class PhotoReader(ImageReader):
    """Read PNG, JPEG, TIFF and BMP files with Pillow.

    Palette, bi-level and other colour modes become RGB or grayscale; an alpha channel is dropped; 16-bit and
    floating-point grayscale images keep their values. JPEG EXIF orientation is applied (camera photos of skin
    lesions often carry it). The array is ``(rows, columns)`` or ``(rows, columns, 3)``.

    Args:
        mode: ``"RGB"`` or ``"L"`` to convert every image to that Pillow mode, ``None`` to keep the image's own
            channels (use ``None`` for grayscale modalities so that 16-bit images keep their bit depth).
        exif_transpose: apply the EXIF orientation tag.
        reverse_indexing: return ``(columns, rows)`` like MONAI's ``PILReader`` (``False`` keeps images upright).
        reduce_to: read images whose shorter side is at least twice this many pixels at a reduced scale, by an integer
            factor that keeps the shorter side at ``reduce_to`` or more: JPEG files are decoded at that scale by the
            decoder (1/2, 1/4 or 1/8, so a 20,000-pixel photograph never occupies memory at full size), other formats
            are reduced after decoding. ``None`` reads every image at full resolution.

    Raises:
        ImageReadError: the file is corrupt, not an image of a supported format, or larger than Pillow's
            decompression-bomb limit.
    """

    def __init__(
        self,
        mode: str | None = None,
        exif_transpose: bool = True,
        reverse_indexing: bool = False,
        reduce_to: int | None = 1024,
    ) -> None:
        super().__init__()
        if mode not in (None, "RGB", "L"):
            raise ValueError(f"mode must be None, 'RGB' or 'L', got {mode!r}.")
        self.mode, self.exif_transpose, self.reverse_indexing = mode, exif_transpose, reverse_indexing
        self.reduce_to = None if reduce_to is None else max(1, int(reduce_to))

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        return has_pil and is_supported_format(filename, PHOTO_SUFFIXES)

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs) -> Any:
        path = _single(data, type(self).__name__)
        try:
            with PILImage.open(path) as image:
                factor = self._reduction(image.size)
                if factor > 1 and image.format == "JPEG":
                    # DCT scaling in the decoder: the full-size image is never held in memory
                    image.draft(image.mode, (image.size[0] // factor, image.size[1] // factor))
                    factor = 1
                image.load()
                if factor > 1:
                    image = self._reduce(image, factor)
                if self.exif_transpose:
                    ImageOps.exif_transpose(image, in_place=True)
                image = self._convert(image)
                image.load()
        except PILImage.DecompressionBombError as e:
            raise ImageReadError(
                f"'{path}' is too large to read safely ({_reason(e, path)}): downsample or crop it first."
            ) from e
        except (OSError, SyntaxError, ValueError) as e:
            kind = Path(path).suffix.lstrip(".").upper() or "image"
            raise ImageReadError(
                f"Cannot read '{path}': the file is corrupt or not a valid {kind} image ({_reason(e, path)})."
            ) from e
        image.info["filename"] = path
        return image

    def _reduction(self, size: tuple[int, int]) -> int:
        """The integer factor an image of ``size`` is read at (1: full resolution)."""
        if self.reduce_to is None:
            return 1
        return max(1, min(size) // self.reduce_to)

    @staticmethod
    def _reduce(image: Any, factor: int) -> Any:
        """``image`` reduced by ``factor`` (box average); modes Pillow cannot reduce stay at full resolution."""
        try:
            return image.reduce(factor)
        except (ValueError, NotImplementedError):  # 16-bit grayscale: through 32-bit integers, values kept
            return image.convert("I").reduce(factor) if image.mode.startswith("I;16") else image

    def _convert(self, image: Any) -> Any:
        if self.mode is not None:
            return image if image.mode == self.mode else image.convert(self.mode)
        if image.mode in ("L", "RGB", "F") or image.mode.startswith("I"):
            return image
        if image.mode in ("1", "LA", "La"):
            return image.convert("L")
        return image.convert("RGB")  # P, PA, RGBA, RGBa, CMYK, YCbCr, LAB, HSV

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        array = np.array(img)  # a writable copy: torch warns about (and cannot use) read-only arrays
        if self.reverse_indexing:
            array = np.moveaxis(array, 0, 1)
        spatial = array.shape[:2]
        meta = {
            "format": str(img.format or ""),
            "mode": str(img.mode),
            "spatial_shape": np.asarray(spatial),
            "original_channel_dim": -1 if array.ndim == 3 else float("nan"),
            "PhotometricInterpretation": "RGB" if array.ndim == 3 else "MONOCHROME2",
        }
        return array, meta


class _DicomImage:
    """What :meth:`DicomReader.read` returns: the source path and its datasets (one per file, in slice order)."""

    def __init__(self, path: str, datasets: list) -> None:
        self.path, self.datasets = path, datasets


class DicomReader(ImageReader):
    """Read DICOM files, multi-frame files and single-series folders with pydicom.

    Steps, in the order DICOM defines them: decode the pixel data (pydicom converts YBR colour to RGB); expand
    ``PALETTE COLOR`` through its lookup table; apply the modality LUT (``RescaleSlope``/``RescaleIntercept``, so
    CT values are Hounsfield units); optionally apply the VOI LUT or window stored in the header (values then lie
    in ``[0, 1]``); invert ``MONOCHROME1`` images (where bright means low values, as in many radiographs) so that
    all grayscale images read as ``MONOCHROME2``. Colour images are returned in the ``[0, 255]`` range.

    The metadata carries ``Modality``, ``PhotometricInterpretation`` (after inversion),
    ``OriginalPhotometricInterpretation``, ``WindowCenter``/``WindowWidth`` (first window in the header, when
    there is one), ``VOIApplied``, ``Inverted`` and ``NumberOfFrames``.

    Args:
        rescale: apply the modality LUT (rescale slope and intercept).
        voi_lut: apply the header's VOI LUT or window when there is one (radiographs are usually read this way;
            CT is better windowed by name with :class:`~monai_cilmp.transforms.CTWindow`).
        invert_monochrome1: invert ``MONOCHROME1`` images.

    Raises:
        ImageReadError: the file is corrupt or not DICOM, has no pixel data, has an unsupported photometric
            interpretation, its pixel data cannot be decoded, or a folder holds no or several series.
    """

    def __init__(self, rescale: bool = True, voi_lut: bool = False, invert_monochrome1: bool = True) -> None:
        super().__init__()
        self.rescale, self.voi_lut, self.invert_monochrome1 = rescale, voi_lut, invert_monochrome1

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        names = ensure_tuple(filename)
        if not has_pydicom or len(names) != 1:
            return False
        path = Path(os.fspath(names[0]))
        if path.is_dir():
            return any(_looks_like_dicom(p) for p in sorted(path.iterdir())[:16] if p.is_file())
        return is_supported_format(names, DICOM_SUFFIXES) or _looks_like_dicom(path)

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs) -> _DicomImage:
        path = _single(data, type(self).__name__)
        if os.path.isdir(path):
            return _DicomImage(path, self._read_series(path))
        return _DicomImage(path, [self._read_file(path)])

    @staticmethod
    def _read_file(path: str) -> Any:
        from pydicom.errors import InvalidDicomError

        corrupt = f"Cannot read '{path}': the file is corrupt or not DICOM"
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError as e:
            # files written without the 128-byte preamble and file meta are still DICOM data sets
            try:
                ds = pydicom.dcmread(path, force=True)
            except Exception:
                raise ImageReadError(f"{corrupt} (no DICOM header).") from e
            if not any(tag in ds for tag in ("SOPClassUID", "Modality", "Rows", "PixelData")):
                raise ImageReadError(f"{corrupt} (no DICOM header).") from e
        except Exception as e:
            raise ImageReadError(f"{corrupt} ({_reason(e, path)}).") from e
        refused = _not_an_image(ds, path)
        if refused is not None:
            raise ImageReadError(refused)
        if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            raise ImageReadError(f"Cannot read '{path}': the DICOM file has no pixel data.")
        try:
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            shape = (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0), frames)
        except (TypeError, ValueError) as e:
            raise ImageReadError(f"{corrupt} (an invalid image size in its header: {_reason(e, path)}).") from e
        problem = too_large_problem(shape, path)
        if problem is not None:  # from the header, before the pixel data is decoded
            raise ImageReadError(problem)
        interpretation = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
        if interpretation not in SUPPORTED_PHOTOMETRIC_INTERPRETATIONS:
            raise ImageReadError(
                f"Cannot read '{path}': photometric interpretation '{interpretation}' is not supported "
                f"(supported: {', '.join(SUPPORTED_PHOTOMETRIC_INTERPRETATIONS)})."
            )
        ds.filename = path
        return ds

    def _read_series(self, folder: str) -> list:
        files = [os.path.join(folder, n) for n in sorted(os.listdir(folder))]
        files = [
            f for f in files if os.path.isfile(f) and (is_supported_format(f, DICOM_SUFFIXES) or _looks_like_dicom(f))
        ]
        index = [f for f in files if os.path.basename(f).upper() == "DICOMDIR"]
        files = [f for f in files if f not in index]
        if not files and index:
            raise ImageReadError(
                f"Cannot read '{folder}': it holds a DICOMDIR (the index of a DICOM disc or export), whose images lie "
                "in its subfolders: point to the folder of one series."
            )
        if not files:
            raise ImageReadError(f"Cannot read '{folder}': the folder holds no DICOM files.")
        datasets = [self._read_file(f) for f in files]
        series: dict[str, int] = {}
        for ds in datasets:
            uid = str(ds.get("SeriesInstanceUID", ""))
            series[uid] = series.get(uid, 0) + 1
        if len(series) > 1:
            listed = ", ".join(f"{uid or '(none)'} ({count} files)" for uid, count in sorted(series.items()))
            raise ImageReadError(
                f"Cannot read '{folder}': the folder mixes {len(series)} DICOM series ({listed}): move each series "
                "into a folder of its own."
            )
        if len({(int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) for ds in datasets}) > 1:
            raise ImageReadError(f"Cannot read '{folder}': the DICOM series mixes images of different sizes.")
        if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in datasets) and len(datasets) > 1:
            raise ImageReadError(f"Cannot read '{folder}': a series folder must hold single-frame files only.")
        return sorted(datasets, key=_slice_position)

    def get_data(self, img: _DicomImage) -> tuple[np.ndarray, dict]:
        frames = [self._pixels(ds) for ds in img.datasets]
        first = img.datasets[0]
        original = str(first.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
        array, interpretation, voi, inverted = frames[0] if len(frames) == 1 else _stack_series(frames)
        colour = interpretation == "RGB"
        n_frames = int(first.get("NumberOfFrames", 1) or 1) if len(frames) == 1 else len(frames)
        if len(frames) == 1 and n_frames > 1:
            array = np.moveaxis(array, 0, 2)  # (frames, rows, cols[, 3]) -> (rows, cols, frames[, 3])
        array, affine = self._place(img, array, n_frames)
        meta: dict[str, Any] = {
            "Modality": str(first.get("Modality", "")),
            "PhotometricInterpretation": interpretation,
            "OriginalPhotometricInterpretation": original,
            "VOIApplied": voi,
            "Inverted": inverted,
            "NumberOfFrames": n_frames,
            "spatial_shape": np.asarray(array.shape[:-1] if colour else array.shape),
            "original_channel_dim": -1 if colour else float("nan"),
        }
        if affine is not None:  # a volume placed in the patient: SelectSlice shows its slices in one orientation
            meta.update({"affine": affine, "original_affine": affine.copy(), "space": "RAS", ANATOMICAL: True})
        center, width = _window(first)
        if center is not None and width is not None:
            meta["WindowCenter"], meta["WindowWidth"] = center, width
        spacing = _pixel_spacing(first)
        if spacing is not None:  # (between rows, between columns), for SquarePixels
            meta["PixelSpacing"] = spacing
        return array, meta

    @staticmethod
    def _place(img: _DicomImage, array: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The volume with its slices in order along the slice normal, and its RAS affine; ``None`` for 2D images
        and for multi-frame files that do not say where their frames lie (ultrasound clips, videos)."""
        if n_frames < 2:
            return array, None
        if len(img.datasets) > 1:  # a series folder, already sorted along the normal
            geometries = [dicom_frame_geometry(ds) for ds in img.datasets]
            if any(g is None for g in geometries):
                return array, None
            positions = np.concatenate([g[0] for g in geometries])  # type: ignore[index]
            orientation, spacing = geometries[0][1], geometries[0][2]  # type: ignore[index]
        else:
            geometry = dicom_frame_geometry(img.datasets[0])
            if geometry is None or len(geometry[0]) != n_frames:
                return array, None
            positions, orientation, spacing = geometry
            order = np.argsort(positions @ np.cross(orientation[:3], orientation[3:]), kind="stable")
            array, positions = np.take(array, order, axis=2), positions[order]
        if np.ptp(positions @ np.cross(orientation[:3], orientation[3:])) < 1e-6:
            return array, None  # every frame at one place (a cine or dynamic series): frames are time, not space
        return array, dicom_volume_affine(positions, orientation, spacing, source=f"'{img.path}'")

    def _pixels(self, ds: Any) -> tuple[np.ndarray, str, bool, bool]:
        """Decoded, rescaled, windowed and inverted pixels of one data set, its interpretation and the flags."""
        try:
            from pydicom.pixels import apply_color_lut, apply_modality_lut
        except ImportError:  # pydicom 2, which MONAI Label's environment needs (pydicom-seg fails on pydicom 3)
            from pydicom.pixel_data_handlers.util import apply_color_lut, apply_modality_lut

        path = str(ds.filename)
        interpretation = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
        try:
            array = ds.pixel_array
        except Exception as e:
            raise ImageReadError(_decode_failure(ds, path, e)) from e
        if interpretation == "PALETTE COLOR":
            array = apply_color_lut(array, ds)
            array = array / 257.0 if array.dtype == np.uint16 else array
            return array.astype(np.float32), "RGB", False, False
        if interpretation not in ("MONOCHROME1", "MONOCHROME2"):  # RGB and YBR (pydicom converts YBR to RGB)
            bits = int(ds.get("BitsStored", 8) or 8)
            array = array.astype(np.float32)
            return (array * (255.0 / (2**bits - 1)) if bits > 8 else array), "RGB", False, False
        array = array.astype(np.float64)
        lo, hi = _stored_range(ds)
        if self.rescale:
            if "ModalityLUTSequence" in ds:
                array = apply_modality_lut(array, ds)
                lo, hi = 0.0, 2.0 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1
            else:
                slope, intercept = _rescale(ds)
                array = array * slope + intercept
                lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
        voi = False
        if self.voi_lut and ("VOILUTSequence" in ds or "WindowCenter" in ds):
            array = _apply_voi(array, ds)
            lo, hi, voi = 0.0, 1.0, True
        inverted = False
        if interpretation == "MONOCHROME1" and self.invert_monochrome1:
            # around the theoretical range (not the slice's own min/max) so that the slices of a series agree
            array = lo + hi - array
            interpretation, inverted = "MONOCHROME2", True
        return array.astype(np.float32), interpretation, voi, inverted


#: compressed transfer syntaxes: (name, the decoder packages pydicom uses for them, the first one to install)
COMPRESSED_TRANSFER_SYNTAXES: dict[str, tuple[str, tuple[str, ...]]] = {
    "1.2.840.10008.1.2.4.50": ("JPEG Baseline (8-bit)", ("PIL", "libjpeg")),
    "1.2.840.10008.1.2.4.51": ("JPEG Extended (12-bit)", ("libjpeg",)),
    "1.2.840.10008.1.2.4.57": ("JPEG Lossless (process 14)", ("libjpeg",)),
    "1.2.840.10008.1.2.4.70": ("JPEG Lossless SV1 (process 14, selection value 1)", ("libjpeg",)),
    "1.2.840.10008.1.2.4.80": ("JPEG-LS Lossless", ("jpeg_ls", "libjpeg")),
    "1.2.840.10008.1.2.4.81": ("JPEG-LS Near-Lossless", ("jpeg_ls", "libjpeg")),
    "1.2.840.10008.1.2.4.90": ("JPEG 2000 Lossless", ("openjpeg", "PIL")),
    "1.2.840.10008.1.2.4.91": ("JPEG 2000", ("openjpeg", "PIL")),
    "1.2.840.10008.1.2.4.201": ("HTJ2K Lossless", ("openjpeg",)),
    "1.2.840.10008.1.2.4.202": ("HTJ2K Lossless RPCL", ("openjpeg",)),
    "1.2.840.10008.1.2.4.203": ("HTJ2K", ("openjpeg",)),
    "1.2.840.10008.1.2.5": ("RLE Lossless", ("rle",)),
}
#: transfer syntaxes whose pixel data pydicom reads without a decoder
UNCOMPRESSED_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.2",
)
#: the pip package of each decoder module named above
DECODER_PACKAGES = {
    "PIL": "pillow",
    "libjpeg": "pylibjpeg-libjpeg",
    "jpeg_ls": "pyjpegls",
    "openjpeg": "pylibjpeg-openjpeg",
    "rle": "pylibjpeg-rle",
}


def _decode_failure(ds: Any, path: str, error: BaseException) -> str:
    """One sentence on pixel data that cannot be decoded: the transfer syntax, and the decoder to install (or that
    the installed ones reject the data)."""
    import importlib.util

    uid = str(getattr(getattr(ds, "file_meta", None), "get", lambda *_: None)("TransferSyntaxUID") or "")
    if not uid:
        return (
            f"Cannot read '{path}': its pixel data cannot be decoded because the file names no transfer syntax "
            "(0002,0010); rewrite it with a DICOM tool (e.g. dcmconv or gdcmconv)."
        )
    # pydicom lists each plugin's failure on its own line after a summary: the first of them says most
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = (lines[1] if len(lines) > 1 else lines[0] if lines else type(error).__name__).rstrip(".")
    if uid not in COMPRESSED_TRANSFER_SYNTAXES:
        syntax = getattr(pydicom.uid.UID(uid), "name", uid)
        if uid in UNCOMPRESSED_TRANSFER_SYNTAXES:
            return (
                f"Cannot read '{path}': its pixel data cannot be decoded ({reason}; transfer syntax {syntax}, "
                f"{uid}): the file is truncated or its header is wrong; export it again."
            )
        return (
            f"Cannot read '{path}': its pixel data is compressed as {syntax} ({uid}), which no installed decoder reads "
            f"({reason}): convert it to an uncompressed or JPEG transfer syntax (e.g. gdcmconv --raw); video transfer "
            "syntaxes are not read, export the frames as images."
        )
    name, modules = COMPRESSED_TRANSFER_SYNTAXES[uid]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if len(missing) == len(modules):
        packages = " or ".join(DECODER_PACKAGES[m] for m in modules)
        extra = " pylibjpeg" if any(m in ("libjpeg", "openjpeg", "rle") for m in modules) else ""
        return (
            f"Cannot read '{path}': its pixel data is compressed as {name} ({uid}) and no decoder for it is installed: "
            f"pip install{extra} {packages}."
        )
    return (
        f"Cannot read '{path}': its pixel data is compressed as {name} ({uid}) and the installed decoders "
        f"({', '.join(DECODER_PACKAGES[m] for m in modules if m not in missing)}) reject it ({reason}): the file may "
        "be corrupt or not conformant; python-gdcm (pip install python-gdcm) decodes some such files."
    )


#: DICOM objects that are not images, by SOP class UID (prefix): refused by name
NON_IMAGE_SOP_CLASSES = {
    "1.2.840.10008.1.3.10": "a DICOMDIR (the index of a DICOM disc or export: point to a series folder it lists)",
    "1.2.840.10008.5.1.4.1.1.66.4": "a segmentation (SEG), not an image",
    "1.2.840.10008.5.1.4.1.1.481.3": "an RT structure set (RTSTRUCT), not an image",
    "1.2.840.10008.5.1.4.1.1.88.": "a structured report (SR), not an image",
    "1.2.840.10008.5.1.4.1.1.11.": "a presentation state, not an image",
    "1.2.840.10008.5.1.4.1.1.104.": "an encapsulated document (PDF or CDA), not an image",
    "1.2.840.10008.5.1.4.1.1.66": "raw data or a registration, not an image",
}


def _not_an_image(ds: Any, path: str) -> str | None:
    """The sentence refusing a DICOM object that is not an image (by SOP class), else ``None``."""
    uid = str(ds.get("SOPClassUID", "") or getattr(ds.get("file_meta", None), "MediaStorageSOPClassUID", "") or "")
    if not uid and "DirectoryRecordSequence" in ds:
        uid = "1.2.840.10008.1.3.10"
    for prefix, what in NON_IMAGE_SOP_CLASSES.items():
        if uid == prefix or (prefix.endswith(".") and uid.startswith(prefix)) or uid.startswith(prefix + "."):
            return f"Cannot read '{path}': the DICOM file is {what} ({uid}); remove it from the image list."
    return None


def _looks_like_dicom(path: PathLike) -> bool:
    """Whether a file starts with the DICOM preamble and ``DICM`` magic."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _pixel_spacing(ds: Any) -> tuple[float, float] | None:
    """``PixelSpacing`` (or a projection image's ``ImagerPixelSpacing``, or an enhanced object's pixel measures)."""
    for value in (
        ds.get("PixelSpacing"),
        ds.get("ImagerPixelSpacing"),
        _shared_item(ds, "PixelMeasuresSequence", "PixelSpacing"),
    ):
        try:
            rows, columns = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if rows > 0 and columns > 0:
            return rows, columns
    return None


def _shared_item(ds: Any, sequence: str, attribute: str) -> Any:
    try:
        return ds.SharedFunctionalGroupsSequence[0].get(sequence)[0].get(attribute)
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def _rescale(ds: Any) -> tuple[float, float]:
    """Rescale slope and intercept from the data set or, for enhanced multi-frame objects, its shared groups."""
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        return float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    try:
        item = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
        return float(item.get("RescaleSlope", 1) or 1), float(item.get("RescaleIntercept", 0) or 0)
    except (AttributeError, IndexError, KeyError):
        return 1.0, 0.0


def _window(ds: Any) -> tuple[float | None, float | None]:
    center, width = _plain(ds.get("WindowCenter")), _plain(ds.get("WindowWidth"))
    if center is None:
        try:
            item = ds.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]
            center, width = _plain(item.get("WindowCenter")), _plain(item.get("WindowWidth"))
        except (AttributeError, IndexError, KeyError):
            return None, None
    return center, width


def _stored_range(ds: Any) -> tuple[float, float]:
    """Theoretical range of the stored pixel values: ``BitsStored`` bits, signed when ``PixelRepresentation`` is 1."""
    bits = int(ds.get("BitsStored", 16) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0):
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1


def _apply_voi(array: np.ndarray, ds: Any) -> np.ndarray:
    """The first VOI LUT or window of the data set on modality (rescaled) values, scaled to [0, 1].

    A LINEAR or LINEAR_EXACT window is applied here on the given values (DICOM PS3.3 C.11.2.1.2),
    so it does not depend on how pydicom guesses the rescaled output range; a VOI LUT sequence and a SIGMOID
    window go through pydicom, normalised with exactly the output range pydicom uses.
    """
    try:
        from pydicom.pixels import apply_voi_lut
    except ImportError:  # pydicom 2
        from pydicom.pixel_data_handlers.util import apply_voi_lut

    if "VOILUTSequence" in ds:
        bits = _voi_output_bits(ds)
        return np.clip(apply_voi_lut(array, ds, index=0) / (2.0**bits - 1), 0.0, 1.0)
    center, width = (float(v) for v in _first_window(ds))
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if function == "SIGMOID":
        y_min, y_max = _stored_range(ds)
        if "RescaleSlope" in ds and "RescaleIntercept" in ds:
            slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
            y_min, y_max = y_min * slope + intercept, y_max * slope + intercept
        out = apply_voi_lut(array, ds, index=0)
        return np.clip((out - y_min) / (y_max - y_min), 0.0, 1.0)
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise ImageReadError(f"Cannot window '{ds.filename}': WindowWidth must be > 0 for LINEAR_EXACT.")
        return np.clip((array - center) / width + 0.5, 0.0, 1.0)
    if width < 1:
        raise ImageReadError(f"Cannot window '{ds.filename}': WindowWidth must be >= 1 for a LINEAR window.")
    if width == 1:
        return (array >= center - 0.5).astype(np.float64)
    return np.clip((array - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _first_window(ds: Any) -> tuple[float, float]:
    """The first (WindowCenter, WindowWidth) pair of a data set (both attributes may be multi-valued)."""
    center, width = ds.WindowCenter, ds.WindowWidth
    center = center[0] if isinstance(center, Sequence) and not isinstance(center, str) else center
    width = width[0] if isinstance(width, Sequence) and not isinstance(width, str) else width
    return float(center), float(width)


def _voi_output_bits(ds: Any) -> int:
    """Bit depth of the entries of the data set's first VOI LUT."""
    descriptor = ds.VOILUTSequence[0].LUTDescriptor
    return int(descriptor[2])


def _slice_position(ds: Any) -> tuple[float, float, str]:
    """Sort key of a slice: position along the slice normal, then instance number, then file name."""
    position, orientation = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    distance = 0.0
    if position is not None and orientation is not None and len(orientation) == 6:
        normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
        distance = float(np.dot(normal, np.asarray(position, float)))
    return distance, float(ds.get("InstanceNumber", 0) or 0), str(ds.filename)


def _stack_series(frames: list[tuple[np.ndarray, str, bool, bool]]) -> tuple[np.ndarray, str, bool, bool]:
    # slices go on axis 2: (rows, cols, slices) or (rows, cols, slices, 3)
    return np.stack([f[0] for f in frames], axis=2), frames[0][1], frames[0][2], frames[0][3]


class NiftiReader(NibabelReader):
    """Read NIfTI-1/NIfTI-2 images (2D, 3D, or 4D with the last axis as channels) with nibabel.

    MONAI's :class:`~monai.data.NibabelReader` with clear errors and, by default, reorientation to the closest
    canonical (RAS) orientation so that the last axis of every volume is the axial one.

    Args:
        as_closest_canonical: reorient to the closest canonical orientation.
        kwargs: passed to :class:`~monai.data.NibabelReader`.

    Raises:
        ImageReadError: the file is corrupt or not NIfTI.
    """

    def __init__(self, as_closest_canonical: bool = True, **kwargs) -> None:
        super().__init__(as_closest_canonical=as_closest_canonical, **kwargs)

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        return is_supported_format(filename, NIFTI_SUFFIXES)

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs) -> Any:
        path = _single(data, type(self).__name__)
        try:
            image = super().read(path, **kwargs)
        except Exception as e:
            raise ImageReadError(f"Cannot read '{path}': the file is corrupt or not NIfTI ({_reason(e, path)}).") from e
        problem = too_large_problem(image.shape, path)  # from the header, before the voxels are read
        if problem is not None:
            raise ImageReadError(problem)
        return image

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        try:
            array, meta = super().get_data(img)
        except Exception as e:
            path = img.get_filename() or "NIfTI image"
            raise ImageReadError(f"Cannot read '{path}': the file is corrupt or not NIfTI ({_reason(e, path)}).") from e
        meta[ANATOMICAL] = len(meta.get("spatial_shape", ())) == 3  # the affine places every voxel in the patient
        return array, meta


class NumpyArrayReader(NumpyReader):
    """MONAI's :class:`~monai.data.NumpyReader` that never unpickles, whatever MONAI's version or arguments.

    A ``.npy``/``.npz`` file may hold pickled Python objects, and unpickling runs code: only plain arrays are read.

    Args:
        npz_keys: see MONAI's reader.
        channel_dim: see MONAI's reader.
        axcodes: where the axes of 3-D arrays run in the patient (e.g. ``"LPS"`` for ``(x, y, z)`` arrays from ITK or
            DICOM, ``"RAS"`` for nibabel's canonical arrays, ``"PLS"`` for ``(rows, columns, slices)`` of axial
            DICOM): such volumes are sliced in the same orientation as DICOM and NIfTI volumes. ``None``: the axes are
            not anatomical (slices are taken along the last axis as stored).
        kwargs: see MONAI's reader.

    Raises:
        ImageReadError: the file holds pickled objects, is corrupt, or is not a NumPy file.
    """

    def __init__(
        self,
        npz_keys: KeysCollection | None = None,
        channel_dim: str | int | None = None,
        axcodes: str | None = None,
        **kwargs,
    ) -> None:
        kwargs.pop("allow_pickle", None)
        super().__init__(npz_keys=npz_keys, channel_dim=channel_dim, allow_pickle=False, **kwargs)
        self.axcodes = axcodes_affine(axcodes) if axcodes is not None else None

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        array, meta = super().get_data(img)
        if self.axcodes is not None and array.ndim == 3:  # a volume whose axes were declared: place it in the patient
            meta.update({"affine": self.axcodes.copy(), "original_affine": self.axcodes.copy(), "space": "RAS"})
            meta[ANATOMICAL] = True
        return array, meta

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs) -> Any:
        kwargs.pop("allow_pickle", None)
        arrays: list[np.ndarray] = []
        for name in ensure_tuple(data):
            try:
                loaded = np.load(name, allow_pickle=False, **{**self.kwargs, **kwargs})
            except ValueError as e:
                if "pickle" in str(e).lower():
                    raise ImageReadError(
                        f"Refusing to read '{name}': it holds pickled Python objects, which could run code when "
                        "loaded; save it as a plain array (numpy.save with allow_pickle=False) or as an image."
                    ) from None
                raise ImageReadError(f"Cannot read '{name}': not a NumPy array file ({_reason(e, name)}).") from e
            except OSError as e:
                raise ImageReadError(f"Cannot read '{name}': not a NumPy array file ({_reason(e, name)}).") from e
            if str(name).endswith(".npz"):
                arrays += [loaded[k] for k in (self.npz_keys or list(loaded.keys()))]
            else:
                arrays.append(loaded)
        return arrays if len(arrays) > 1 else arrays[0]


def reader_error(error: BaseException) -> BaseException | None:
    """The reader's own one-sentence error (:class:`ImageReadError` or a missing file) in an exception's chain.

    MONAI's ``Compose`` wraps a transform's exception in ``RuntimeError("applying transform <...>")``; a front that
    reports a bad image shows this sentence instead, so that every command says the same thing about the same file.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, (ImageReadError, FileNotFoundError)):
            return current
        # a DataLoader worker's exception reaches the main process as text holding the original traceback
        text = str(current)
        if "Original Traceback" in text:
            for line in reversed(text.splitlines()):
                for name, kind in (("ImageReadError: ", ImageReadError), ("FileNotFoundError: ", FileNotFoundError)):
                    if name in line and not line.startswith(" "):
                        return kind(line.split(name, 1)[1].strip())
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class LoadMedicalImage(LoadImage):
    """MONAI's ``LoadImage`` with :class:`PhotoReader`, :class:`DicomReader` and :class:`NiftiReader` registered.

    The reader is chosen by file type: photographs by suffix, NIfTI by suffix, DICOM by suffix or by the ``DICM``
    magic of a file without one, and a folder is read as one DICOM series; ``.npy``/``.npz`` go to
    :class:`NumpyArrayReader` (never unpickles). Failures are one sentence naming the file.

    Args:
        photo_mode: ``PhotoReader`` mode: ``"RGB"``, ``"L"`` or ``None`` (keep the image's channels).
        dicom_rescale: apply DICOM rescale slope and intercept.
        dicom_voi_lut: apply the VOI LUT or window from the DICOM header when present.
        invert_monochrome1: invert ``MONOCHROME1`` DICOM images.
        nifti_canonical: reorient NIfTI images to the closest canonical orientation.
        image_only: return only the image ``MetaTensor`` (else image and metadata).
        dtype: data type of the loaded image.
        ensure_channel_first: move or add the channel dimension first (``(C, H, W[, D])``).
        numpy_axcodes: where the axes of 3-D NumPy arrays run in the patient (see :class:`NumpyArrayReader`).

    Raises:
        FileNotFoundError: the file does not exist.
        ImageReadError: the file cannot be read (see the readers) or its type is not supported.
    """

    def __init__(
        self,
        photo_mode: str | None = None,
        dicom_rescale: bool = True,
        dicom_voi_lut: bool = False,
        invert_monochrome1: bool = True,
        nifti_canonical: bool = True,
        image_only: bool = True,
        dtype: Any = np.float32,
        ensure_channel_first: bool = True,
        numpy_axcodes: str | None = None,
    ) -> None:
        # LoadImage.__init__ would instantiate every reader MONAI knows (ITK, nvImageCodec, ...), logging warnings
        # about the absent ones, only for them to be bypassed here: set its attributes directly instead.
        self.auto_select, self.image_only, self.dtype = True, image_only, dtype
        self.ensure_channel_first, self.simple_keys, self.expanduser = ensure_channel_first, False, True
        self.pattern, self.sep = None, "."
        self.readers: list[ImageReader] = []
        for reader in (
            NumpyArrayReader(axcodes=numpy_axcodes),
            NiftiReader(as_closest_canonical=nifti_canonical),
            DicomReader(rescale=dicom_rescale, voi_lut=dicom_voi_lut, invert_monochrome1=invert_monochrome1),
            PhotoReader(mode=photo_mode),
        ):
            self.register(reader)

    def __call__(self, filename: Sequence[PathLike] | PathLike, reader: ImageReader | None = None) -> Any:
        names = tuple(os.path.expanduser(os.fspath(n)) for n in ensure_tuple(filename))
        for name in names:
            if not os.path.exists(name):
                raise FileNotFoundError(f"Image file '{name}' does not exist.")
        if reader is None:
            reader = next((r for r in reversed(self.readers) if r.verify_suffix(names)), None)
        if reader is None:
            suffixes = ", ".join(f".{s}" for s in (*PHOTO_SUFFIXES, *DICOM_SUFFIXES, *NIFTI_SUFFIXES, "npy", "npz"))
            kind = "".join(Path(names[0]).suffixes) or "without a suffix"
            raise ImageReadError(
                f"Cannot read '{names[0]}': unsupported file type '{kind}' "
                f"(supported: {suffixes}, DICOM files without a suffix and DICOM series folders)."
            )
        # a reader given at call time bypasses LoadImage's try-every-reader loop, so its one-sentence error surfaces
        loaded = super().__call__(names if len(names) > 1 else names[0], reader)
        image = loaded if self.image_only else loaded[0]
        if self.ensure_channel_first:
            channel_dim: int | None = 0
        else:
            channel_dim = _channel_axis(image.meta.get("original_channel_dim") if hasattr(image, "meta") else None)
        # NIfTI and NumPy files have no colour channels: their 4th axis holds volumes (a time series, vector images)
        colour = isinstance(reader, (PhotoReader, DicomReader))
        problem = image_problem(image, names[0], channel_dim, colour=colour)
        if problem is not None:
            raise ImageReadError(problem)
        return loaded


class LoadMedicalImaged(LoadImaged):
    """Dictionary-based :class:`LoadMedicalImage`.

    Args:
        keys: keys of the items holding file paths.
        photo_mode: see :class:`LoadMedicalImage`.
        dicom_rescale: see :class:`LoadMedicalImage`.
        dicom_voi_lut: see :class:`LoadMedicalImage`.
        invert_monochrome1: see :class:`LoadMedicalImage`.
        nifti_canonical: see :class:`LoadMedicalImage`.
        image_only: store only the image ``MetaTensor`` (else also ``{key}_meta_dict``).
        dtype: data type of the loaded image.
        ensure_channel_first: move or add the channel dimension first.
        numpy_axcodes: see :class:`LoadMedicalImage`.
        allow_missing_keys: don't raise an exception when a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        photo_mode: str | None = None,
        dicom_rescale: bool = True,
        dicom_voi_lut: bool = False,
        invert_monochrome1: bool = True,
        nifti_canonical: bool = True,
        image_only: bool = True,
        dtype: Any = np.float32,
        ensure_channel_first: bool = True,
        numpy_axcodes: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        # LoadImaged.__init__ builds a default LoadImage (see LoadMedicalImage): set what its __call__ uses instead
        MapTransform.__init__(self, keys, allow_missing_keys)
        self._loader = LoadMedicalImage(
            photo_mode=photo_mode,
            dicom_rescale=dicom_rescale,
            dicom_voi_lut=dicom_voi_lut,
            invert_monochrome1=invert_monochrome1,
            nifti_canonical=nifti_canonical,
            image_only=image_only,
            dtype=dtype,
            ensure_channel_first=ensure_channel_first,
            numpy_axcodes=numpy_axcodes,
        )
        self.meta_keys = ensure_tuple_rep(None, len(self.keys))
        self.meta_key_postfix = ensure_tuple_rep(PostFix.meta(), len(self.keys))
        self.overwriting = False


LoadMedicalImageD = LoadMedicalImageDict = LoadMedicalImaged
