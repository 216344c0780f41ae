"""Per-modality preprocessing presets: training and evaluation pipelines that end CLIP-ready.

Every pipeline has the same skeleton, so that the modality-specific choices are the only differences::

    load (LoadMedicalImage) -> volume/multi-frame to 2D (SelectSlice, SquarePixels) -> modality intensity to [0, 1]
    -> modality geometry (e.g. fundus field of view) -> ClipResize to the backbone's size
    -> modality steps at that size (e.g. stain normalisation) -> [training: geometric augmentation]
    -> CenterSpatialCrop -> [training: intensity/colour augmentation]
    -> ToRGB -> NormalizeIntensity with the backbone's mean and std -> float32 tensor (3, size, size)

Augmenting after the resize keeps it cheap for large photographs and scans. Use a preset with the network's
input size and normalisation::

    preset = get_preset("dermoscopy")
    train = preset.train_transforms(keys="image", image_size=net.image_size, mean=net.image_mean, std=net.image_std)
    evaluate = preset.eval_transforms(keys="image", image_size=net.image_size, mean=net.image_mean, std=net.image_std)

``keys=None`` gives the array variant (input: a path, or an array when ``load=False``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import monai.transforms
import torch
from monai.config import KeysCollection
from monai.transforms import Compose
from monai.utils import StrEnum, look_up_option

from . import color, intensity, readers, spatial
from .spatial import ResizeMode, SliceStrategy

__all__ = [
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "CTPreset",
    "DermoscopyPreset",
    "EndoscopyPreset",
    "FundusPreset",
    "HistopathologyPreset",
    "MRINormalization",
    "MRIPreset",
    "Preset",
    "PresetName",
    "PRESETS",
    "STAGES",
    "check_preset_transforms",
    "RadiographyPreset",
    "UltrasoundPreset",
    "get_preset",
    "list_presets",
]

# OpenAI CLIP's normalisation (as in open_clip.constants), the default when no network is at hand
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_LOCAL_MODULES = (readers, intensity, color, spatial)

#: the modality stages of the skeleton in pipeline order (see :meth:`Preset.steps`)
STAGES = ("load", "to_2d", "intensity", "geometry", "resized", "spatial_augmentation", "intensity_augmentation")
AUGMENTATION_STAGES = ("spatial_augmentation", "intensity_augmentation")


class PresetName(StrEnum):
    """Names of the modality presets (``get_preset`` also accepts a few aliases, see :data:`PRESETS`)."""

    DERMOSCOPY = "dermoscopy"
    ENDOSCOPY = "endoscopy"
    FUNDUS = "fundus"
    HISTOPATHOLOGY = "histopathology"
    RADIOGRAPHY = "radiography"
    ULTRASOUND = "ultrasound"
    CT = "ct"
    MRI = "mri"


class _Steps:
    """Builds transforms in their dictionary (``keys`` given) or array (``keys=None``) variant by class name."""

    def __init__(self, keys: KeysCollection | None) -> None:
        self.keys = keys

    def __call__(self, name: str, **kwargs: Any) -> Any:
        class_name = name if self.keys is None else f"{name}d"
        for module in (*_LOCAL_MODULES, monai.transforms):
            cls = getattr(module, class_name, None)
            if cls is not None:
                return cls(**kwargs) if self.keys is None else cls(keys=self.keys, **kwargs)
        raise AttributeError(f"No transform named {class_name}.")


class _StepConfigs:
    """Writes the dictionary transforms a preset lists as bundle config entries (``_target_`` and arguments) instead of
    building them: the preset overlays ``configs/presets/<name>.json`` are these entries."""

    def __init__(self, keys: str) -> None:
        self.keys = keys

    def __call__(self, name: str, **kwargs: Any) -> dict[str, Any]:
        class_name = f"{name}d"
        local = next((m for m in _LOCAL_MODULES if hasattr(m, class_name)), None)
        if local is None and not hasattr(monai.transforms, class_name):
            raise AttributeError(f"No transform named {class_name}.")
        target = f"monai_cilmp.transforms.{class_name}" if local is not None else class_name
        return {"_target_": target, "keys": self.keys, **{k: _plain(v) for k, v in kwargs.items()}}


def _plain(value: Any) -> Any:
    """A transform argument as JSON data (tuples as lists, enum members as their values)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, str):
        return str(value)
    return value


class Preset:
    """Base of the modality presets: the shared pipeline skeleton (see the module docstring) and its options.

    Args:
        resize_mode: how images fit the square input: ``"crop"`` (CLIP's resize + centre crop), ``"pad"`` or
            ``"stretch"`` (see :class:`~monai_cilmp.transforms.ResizeMode`).
        slice_strategy: how volumes and multi-frame files become 2D: ``"middle"``, ``"index"`` or
            ``"largest_foreground"`` (see :class:`~monai_cilmp.transforms.SelectSlice`).
        slice_index: the slice for ``"index"``.
        slice_axis: the axis slices are taken along: 0 sagittal, 1 coronal, 2 or -1 axial for volumes placed in the
            patient (NIfTI, DICOM series, multi-frame DICOM with plane positions), shown as radiologists view them
            whatever the file's orientation (docs/data.md); -1 is the frame axis of clips.
        context: 2.5D neighbours on each side of the slice as channels (1 gives three adjacent slices).
        augment: include the training augmentations in :meth:`train_transforms`.
        numpy_axcodes: where the axes of 3-D ``.npy``/``.npz`` volumes run in the patient (e.g. ``"LPS"``, ``"RAS"``),
            so that they are sliced like DICOM and NIfTI volumes (``None``: their axes are taken as stored).
    """

    name: ClassVar[str] = ""
    #: value of the foreground threshold for ``"largest_foreground"`` (``None``: the volume's mean)
    slice_threshold: ClassVar[float | None] = None

    def __init__(
        self,
        resize_mode: str = ResizeMode.CROP,
        slice_strategy: str = SliceStrategy.MIDDLE,
        slice_index: int | None = None,
        slice_axis: int = -1,
        context: int = 0,
        augment: bool = True,
        numpy_axcodes: str | None = None,
    ) -> None:
        self.numpy_axcodes = numpy_axcodes
        if numpy_axcodes is not None:
            readers.NumpyArrayReader(axcodes=numpy_axcodes)  # validate the codes now
        self.resize_mode = look_up_option(resize_mode, ResizeMode)
        self.slice = dict(
            strategy=look_up_option(slice_strategy, SliceStrategy),
            index=slice_index,
            axis=slice_axis,
            context=context,
            threshold=self.slice_threshold,
        )
        spatial.SelectSlice(**self.slice)  # validate the options now rather than at the first image
        self.context, self.augment = int(context), augment

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(resize_mode={self.resize_mode!r}, slice={self.slice}, augment={self.augment}, "
            f"numpy_axcodes={self.numpy_axcodes!r})"
        )

    # the parts subclasses change -------------------------------------------------------------------------------
    def load(self, t: _Steps) -> list:
        """The loader with this modality's reader options."""
        return [t("LoadMedicalImage", numpy_axcodes=self.numpy_axcodes)]

    def intensity(self, t: _Steps) -> list:
        """Transforms mapping the modality's values to ``[0, 1]``."""
        return []

    def geometry(self, t: _Steps) -> list:
        """Modality-specific geometry before the resize (e.g. the fundus field of view)."""
        return []

    def resized(self, t: _Steps) -> list:
        """Modality-specific transforms applied after the resize (cheaper than at full resolution)."""
        return []

    def spatial_augmentation(self, t: _Steps) -> list:
        """Random geometric transforms, applied at the backbone's resolution before the centre crop."""
        return []

    def intensity_augmentation(self, t: _Steps) -> list:
        """Random intensity or colour transforms, applied to the ``[0, 1]`` image after the crop."""
        return []

    def to_2d(self, t: _Steps) -> list:
        """Volumes and multi-frame files to one 2D image (channel-first), per the slice options, with square pixels
        (DICOM pixel spacing, a volume's voxel sizes) so that anatomy keeps its shape through the CLIP resize."""
        return [t("SelectSlice", **self.slice), t("SquarePixels")]

    def steps(self, stage: str, keys: KeysCollection | None = "image") -> list:
        """The transforms of one modality stage of the skeleton (one of :data:`STAGES`).

        This is what a bundle config fills its preprocessing list with, one entry per stage, between the steps every
        modality shares (``ClipResize``, ``CenterSpatialCrop``, ``ToRGB``, ``NormalizeIntensity``, ``EnsureType``).
        The augmentation stages are empty when the preset was made with ``augment=False``.

        Args:
            stage: the stage name.
            keys: dictionary keys of the image (``None``: array transforms).
        """
        stage = look_up_option(stage, STAGES)
        if stage in AUGMENTATION_STAGES and not self.augment:
            return []
        return getattr(self, stage)(_Steps(keys))

    def transform_configs(self, keys: str = "@image_key") -> dict[str, Any]:
        """The preset as the ``transforms`` section of a bundle config: ``preset``, ``resize_mode`` and one list of
        ``_target_`` entries per stage of :data:`STAGES` (what ``configs/presets/<name>.json`` holds; ``train.json``
        places each list in its skeleton, so that ``--set transforms#<stage>#<i>#<argument>`` changes one step).

        Args:
            keys: the ``keys`` of every entry (a reference to the bundle's image key by default).
        """
        recorder = _StepConfigs(keys)
        stages = {stage: getattr(self, stage)(recorder) for stage in STAGES}
        return {"preset": str(self.name), "resize_mode": str(self.resize_mode), **stages}

    # the shared skeleton ---------------------------------------------------------------------------------------
    def _build(
        self,
        train: bool,
        keys: KeysCollection | None,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        load: bool,
    ) -> Compose:
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need one value per RGB channel, got {list(mean)} and {list(std)}.")
        t = _Steps(keys)
        steps = self.steps("load", keys) if load else []
        steps += self.steps("to_2d", keys) + self.steps("intensity", keys) + self.steps("geometry", keys)
        steps.append(t("ClipResize", size=int(image_size), mode=self.resize_mode))
        steps += self.steps("resized", keys)
        if train:
            steps += self.steps("spatial_augmentation", keys)
        steps.append(t("CenterSpatialCrop", roi_size=(int(image_size), int(image_size))))
        if train:
            steps += self.steps("intensity_augmentation", keys)
        steps += [
            t("ToRGB"),
            t("NormalizeIntensity", subtrahend=list(mean), divisor=list(std), channel_wise=True),
            t("EnsureType", dtype=torch.float32),
        ]
        return Compose(steps)

    def train_transforms(
        self,
        keys: KeysCollection | None = "image",
        image_size: int = 224,
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
        load: bool = True,
    ) -> Compose:
        """The training pipeline.

        Args:
            keys: dictionary keys of the image (``None``: array transforms).
            image_size: the backbone's input size (``net.image_size``).
            mean: the backbone's normalisation mean (``net.image_mean``).
            std: the backbone's normalisation std (``net.image_std``).
            load: start with loading the file (else the input is a channel-first array).

        Returns:
            A ``monai.transforms.Compose`` producing float32 ``(3, image_size, image_size)`` tensors.
        """
        return self._build(True, keys, image_size, mean, std, load)

    def eval_transforms(
        self,
        keys: KeysCollection | None = "image",
        image_size: int = 224,
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
        load: bool = True,
    ) -> Compose:
        """The deterministic evaluation and inference pipeline; arguments as :meth:`train_transforms`."""
        return self._build(False, keys, image_size, mean, std, load)


def _rotation(degrees: float) -> float:
    return math.radians(degrees)


class _PhotoPreset(Preset):
    """RGB photographs: 8-bit colour scaled to ``[0, 1]``."""

    def load(self, t: _Steps) -> list:
        return [t("LoadMedicalImage", photo_mode="RGB")]

    def intensity(self, t: _Steps) -> list:
        return [t("ToRGB"), t("ScaleIntensityRange", a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True)]


class DermoscopyPreset(_PhotoPreset):
    """Dermoscopy (ISIC, HAM10000/DermaMNIST, Derm7pt): RGB photographs of skin lesions.

    Choices:
        - intensity: 8-bit RGB to ``[0, 1]``; no colour constancy step, since lesion colour (blue-white veil,
          regression) is diagnostic and presets must not remove it.
        - augmentation: a lesion has no up, down, left or right, so flips along both axes and rotations by any
          angle (0.5 probability each), mild zoom (0.9-1.1), and colour jitter (brightness, contrast and
          saturation ±20 %, hue ±0.02 turns) for the variation between dermatoscopes and lighting.
    """

    name = PresetName.DERMOSCOPY

    def spatial_augmentation(self, t: _Steps) -> list:
        return [
            t("RandFlip", prob=0.5, spatial_axis=0),
            t("RandFlip", prob=0.5, spatial_axis=1),
            t("RandRotate", range_x=math.pi, prob=0.5, padding_mode="zeros"),
            t("RandZoom", prob=0.5, min_zoom=0.9, max_zoom=1.1),
        ]

    def intensity_augmentation(self, t: _Steps) -> list:
        return [t("RandColorJitter", prob=0.8, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02)]


class EndoscopyPreset(_PhotoPreset):
    """Gastrointestinal endoscopy (Kvasir): RGB video frames.

    Choices:
        - intensity: 8-bit RGB to ``[0, 1]``.
        - augmentation: the endoscope rotates freely, so flips along both axes and rotations up to ±15°;
          mild zoom (0.9-1.1); only mild colour jitter (brightness/contrast/saturation ±10 %, no hue change), since
          colour separates classes here (indigo-carmine dye in "dyed lifted polyps", inflamed mucosa).
    """

    name = PresetName.ENDOSCOPY

    def spatial_augmentation(self, t: _Steps) -> list:
        return [
            t("RandFlip", prob=0.5, spatial_axis=0),
            t("RandFlip", prob=0.5, spatial_axis=1),
            t("RandRotate", range_x=_rotation(15), prob=0.5, padding_mode="zeros"),
            t("RandZoom", prob=0.5, min_zoom=0.9, max_zoom=1.1),
        ]

    def intensity_augmentation(self, t: _Steps) -> list:
        return [t("RandColorJitter", prob=0.8, brightness=0.1, contrast=0.1, saturation=0.1, hue=0.0)]


class FundusPreset(_PhotoPreset):
    """Colour fundus photographs (APTOS, ODIR, ADAM).

    Choices:
        - geometry: crop to the circular field of view, pad to a square and black out the corners
          (:class:`~monai_cilmp.transforms.FieldOfViewCrop`), so that every retina fills the input the same way
          whatever the camera's framing; then ``resize_mode`` applies to a square image.
        - augmentation: horizontal flips (a left eye mirrors a right eye), rotations up to ±30°, brightness and
          contrast ±10 % for illumination differences; no hue change (haemorrhages, exudates and the optic disc
          are told apart by colour) and no vertical flips (the optic disc and macula keep their vertical layout).

    Args:
        fov_threshold: foreground threshold of the field of view, as a fraction of the brightest channel mean.
        kwargs: see :class:`Preset`.
    """

    name = PresetName.FUNDUS

    def __init__(self, fov_threshold: float = 0.05, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fov_threshold = fov_threshold

    def geometry(self, t: _Steps) -> list:
        return [t("FieldOfViewCrop", threshold=self.fov_threshold, mask=True)]

    def spatial_augmentation(self, t: _Steps) -> list:
        return [
            t("RandFlip", prob=0.5, spatial_axis=1),
            t("RandRotate", range_x=_rotation(30), prob=0.5, padding_mode="zeros"),
        ]

    def intensity_augmentation(self, t: _Steps) -> list:
        return [t("RandColorJitter", prob=0.8, brightness=0.1, contrast=0.1, saturation=0.0, hue=0.0)]


class HistopathologyPreset(_PhotoPreset):
    """Histopathology tiles (Chaoyang) and stained microscopy (BloodMNIST blood smears).

    Choices:
        - intensity: 8-bit RGB to ``[0, 1]``; optional Macenko H&E stain normalisation
          (:class:`~monai_cilmp.transforms.HEStainNormalize`), off by default because it is only meaningful for
          H&E and costs an eigen-decomposition per image; turn it on for H&E tiles from several labs.
        - augmentation: tissue has no orientation, so flips along both axes and 90° rotations; colour jitter
          (brightness, contrast, saturation ±10 %, hue ±0.04 turns) for staining variation.

    Args:
        stain_normalization: apply Macenko H&E stain normalisation (after the resize, to keep it cheap).
        kwargs: see :class:`Preset`.
    """

    name = PresetName.HISTOPATHOLOGY

    def __init__(self, stain_normalization: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stain_normalization = stain_normalization

    def resized(self, t: _Steps) -> list:
        return [t("HEStainNormalize")] if self.stain_normalization else []

    def spatial_augmentation(self, t: _Steps) -> list:
        return [
            t("RandFlip", prob=0.5, spatial_axis=0),
            t("RandFlip", prob=0.5, spatial_axis=1),
            t("RandRotate90", prob=0.75, max_k=3, spatial_axes=(0, 1)),
        ]

    def intensity_augmentation(self, t: _Steps) -> list:
        return [t("RandColorJitter", prob=0.8, brightness=0.1, contrast=0.1, saturation=0.1, hue=0.04)]


class RadiographyPreset(Preset):
    """Projection radiographs, e.g. chest X-rays (DICOM, PNG or JPEG).

    Choices:
        - loading: DICOM rescale and VOI LUT/window from the header (how the image was meant to be read), and
          ``MONOCHROME1`` inversion; PNG/JPEG keep their bit depth (16-bit exports stay 16-bit).
        - intensity: grayscale; ``MONOCHROME1`` inversion of images whose metadata still says so (``invert``
          forces it for inverted exports); robust percentile scaling (0.5-99.5 %, MONAI's
          ``ScaleIntensityRangePercentiles``), which is insensitive to burnt-in labels, collimation and the
          exposure differences between machines; repeated to three channels at the end.
        - augmentation: **no flips** (laterality matters: the heart is on the left, and situs inversus or
          dextrocardia are findings); small rotations (±10°) and zoom (0.9-1.1) for positioning, gamma contrast
          changes (0.8-1.25) for exposure.

    Args:
        lower: lower percentile of the intensity scaling.
        upper: upper percentile of the intensity scaling.
        voi_lut: apply the DICOM VOI LUT/window when the header has one.
        invert: ``None`` inverts images whose metadata says ``MONOCHROME1``; ``True`` always inverts.
        kwargs: see :class:`Preset`.
    """

    name = PresetName.RADIOGRAPHY

    def __init__(
        self,
        lower: float = 0.5,
        upper: float = 99.5,
        voi_lut: bool = True,
        invert: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.lower, self.upper, self.voi_lut, self.invert = lower, upper, voi_lut, invert

    def load(self, t: _Steps) -> list:
        return [
            t("LoadMedicalImage", dicom_voi_lut=self.voi_lut, invert_monochrome1=True, numpy_axcodes=self.numpy_axcodes)
        ]

    def intensity(self, t: _Steps) -> list:
        return [
            t("ToGrayscale"),
            t("InvertMonochrome1", invert=self.invert),
            t("ScaleIntensityRangePercentiles", lower=self.lower, upper=self.upper, b_min=0.0, b_max=1.0, clip=True),
        ]

    def spatial_augmentation(self, t: _Steps) -> list:
        return [
            t("RandRotate", range_x=_rotation(10), prob=0.5, padding_mode="zeros"),
            t("RandZoom", prob=0.5, min_zoom=0.9, max_zoom=1.1),
        ]

    def intensity_augmentation(self, t: _Steps) -> list:
        return [t("RandAdjustContrast", prob=0.5, gamma=(0.8, 1.25))]


class UltrasoundPreset(Preset):
    """B-mode ultrasound (BUSI, fetal planes), single images or the frames of a clip.

    Choices:
        - intensity: grayscale (colour Doppler overlays and annotations collapse to gray); speckle-robust
          percentile scaling (:class:`~monai_cilmp.transforms.SpeckleRobustScaleIntensity`: percentiles 1-99 % of
          a median-filtered copy, ignoring the black background outside the sector), since gain settings differ
          between machines and operators; multi-frame clips give their middle frame by default.
        - augmentation: horizontal flips (probe orientation is a convention that varies), no vertical flips (the
          transducer is always at the top of the sector); rotations ±10°, zoom 0.9-1.1 (depth settings), gamma
          contrast changes (0.8-1.25) for gain.

    Args:
        lower: lower percentile of the intensity scaling.
        upper: upper percentile of the intensity scaling.
        kwargs: see :class:`Preset`.
    """

    name = PresetName.ULTRASOUND

    def __init__(self, lower: float = 1.0, upper: float = 99.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lower, self.upper = lower, upper

    def intensity(self, t: _Steps) -> list:
        return [t("ToGrayscale"), t("SpeckleRobustScaleIntensity", lower=self.lower, upper=self.upper)]

    def spatial_augmentation(self, t: _Steps) -> list:
        return [
            t("RandFlip", prob=0.5, spatial_axis=1),
            t("RandRotate", range_x=_rotation(10), prob=0.5, padding_mode="zeros"),
            t("RandZoom", prob=0.5, min_zoom=0.9, max_zoom=1.1),
        ]

    def intensity_augmentation(self, t: _Steps) -> list:
        return [t("RandAdjustContrast", prob=0.5, gamma=(0.8, 1.25))]


class CTPreset(Preset):
    """Computed tomography: DICOM slices, DICOM series folders or NIfTI volumes, in Hounsfield units.

    Choices:
        - loading: DICOM rescale slope/intercept to HU (no header window: windows are chosen by name); NIfTI
          reoriented to RAS so that slices along the last axis are axial.
        - volumes: one slice by ``slice_strategy`` (``"largest_foreground"`` counts voxels above -500 HU, i.e.
          the body rather than air), or 2.5D (``context=1``: three adjacent slices as the channels).
        - intensity: Hounsfield windows by name (:data:`~monai_cilmp.transforms.CT_WINDOWS`), up to three stacked
          as the three channels; the default lung, mediastinum and bone windows suit chest CT, use e.g.
          ``("brain", "subdural", "bone")`` for head CT. With 2.5D one window applies to the three slices.
        - augmentation: no flips (left-right anatomy is asymmetric: liver, heart, spleen); rotations ±10° and
          zoom 0.9-1.1 for positioning; no intensity augmentation, since HU are calibrated.

    Args:
        windows: window names or ``(level, width)`` pairs; one window when ``context`` > 0.
        kwargs: see :class:`Preset`.

    Raises:
        ValueError: unknown windows, or several windows with 2.5D input.
    """

    name = PresetName.CT
    slice_threshold = -500.0

    def __init__(
        self, windows: intensity.Window | Sequence[intensity.Window] = ("lung", "mediastinum", "bone"), **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        parsed = intensity.parse_windows(windows)
        if self.context and len(parsed) > 1:
            raise ValueError(
                f"2.5D input (context={self.context}) uses the channels for adjacent slices, so give one CT window, "
                f"got {len(parsed)}."
            )
        self.windows = windows

    def load(self, t: _Steps) -> list:
        return [t("LoadMedicalImage", dicom_voi_lut=False, numpy_axcodes=self.numpy_axcodes)]

    def intensity(self, t: _Steps) -> list:
        return [t("CTWindow", windows=self.windows)]

    def spatial_augmentation(self, t: _Steps) -> list:
        return [
            t("RandRotate", range_x=_rotation(10), prob=0.5, padding_mode="zeros"),
            t("RandZoom", prob=0.5, min_zoom=0.9, max_zoom=1.1),
        ]


class MRINormalization(StrEnum):
    """MRI intensity normalisation: robust percentiles, or a foreground z-score."""

    PERCENTILE = "percentile"
    ZSCORE = "zscore"


class MRIPreset(Preset):
    """Magnetic resonance images: DICOM slices or series, NIfTI volumes.

    Choices:
        - intensity: MR values have no absolute scale, so each image is normalised on its own, over the whole
          volume before slicing (more stable than per slice): ``"percentile"`` (1-99 %, MONAI's
          ``ScaleIntensityRangePercentiles``, default) or ``"zscore"`` over non-zero voxels clipped at ±3 SD
          (:class:`~monai_cilmp.transforms.ZScoreScaleIntensity`).
        - volumes: as for CT (``"largest_foreground"`` counts voxels above the volume's mean); 2.5D with
          ``context=1``.
        - augmentation: no flips by default (laterality of lesions can matter; ``flip=True`` enables left-right
          flips for symmetric problems); rotations ±10°, zoom 0.9-1.1, gamma contrast (0.8-1.25) and a smooth
          bias field (MONAI's ``RandBiasField``), the typical MR intensity inhomogeneity.

    Args:
        normalization: ``"percentile"`` or ``"zscore"``.
        flip: allow left-right flips in training.
        kwargs: see :class:`Preset`.
    """

    name = PresetName.MRI

    def __init__(self, normalization: str = MRINormalization.PERCENTILE, flip: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.normalization = look_up_option(normalization, MRINormalization)
        self.flip = flip

    def intensity(self, t: _Steps) -> list:
        return []

    def to_2d(self, t: _Steps) -> list:
        if self.normalization == MRINormalization.ZSCORE:
            scale = t("ZScoreScaleIntensity", clip=3.0, nonzero=True)
        else:
            scale = t("ScaleIntensityRangePercentiles", lower=1.0, upper=99.0, b_min=0.0, b_max=1.0, clip=True)
        return [scale, *super().to_2d(t)]

    def spatial_augmentation(self, t: _Steps) -> list:
        flips = [t("RandFlip", prob=0.5, spatial_axis=0)] if self.flip else []
        return flips + [
            t("RandRotate", range_x=_rotation(10), prob=0.5, padding_mode="zeros"),
            t("RandZoom", prob=0.5, min_zoom=0.9, max_zoom=1.1),
        ]

    def intensity_augmentation(self, t: _Steps) -> list:
        return [t("RandAdjustContrast", prob=0.5, gamma=(0.8, 1.25)), t("RandBiasField", prob=0.3)]


PRESETS: dict[str, type[Preset]] = {
    PresetName.DERMOSCOPY: DermoscopyPreset,
    PresetName.ENDOSCOPY: EndoscopyPreset,
    PresetName.FUNDUS: FundusPreset,
    PresetName.HISTOPATHOLOGY: HistopathologyPreset,
    PresetName.RADIOGRAPHY: RadiographyPreset,
    PresetName.ULTRASOUND: UltrasoundPreset,
    PresetName.CT: CTPreset,
    PresetName.MRI: MRIPreset,
}

_ALIASES = {
    "microscopy": PresetName.HISTOPATHOLOGY,
    "histology": PresetName.HISTOPATHOLOGY,
    "pathology": PresetName.HISTOPATHOLOGY,
    "xray": PresetName.RADIOGRAPHY,
    "x-ray": PresetName.RADIOGRAPHY,
    "chest-xray": PresetName.RADIOGRAPHY,
    "cxr": PresetName.RADIOGRAPHY,
    "us": PresetName.ULTRASOUND,
    "mr": PresetName.MRI,
}


def list_presets() -> list[str]:
    """Names of the modality presets."""
    return [str(name) for name in PresetName]


def get_preset(name: str, **options: Any) -> Preset:
    """The preset called ``name`` (or an alias such as ``"xray"`` or ``"microscopy"``), built with ``options``.

    Args:
        name: a :class:`PresetName` or alias.
        options: the preset's options, e.g. ``windows=("brain", "subdural", "bone")`` for ``"ct"``,
            ``stain_normalization=True`` for ``"histopathology"``, ``resize_mode="pad"`` for any.

    Raises:
        ValueError: unknown name (with a suggestion) or invalid options.
    """
    key = str(name).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    return PRESETS[look_up_option(key, PresetName)](**options)


def check_preset_transforms(preset: str, transforms_preset: str) -> None:
    """Refuse a run whose listed transforms (the ``transforms`` section of the bundle config) are another preset's
    than its data's: a datalist of CT slices must not be read as dermoscopy photographs.

    Raises:
        ValueError: the two differ, naming the overlay to add.
    """
    preset, listed = str(get_preset(preset).name), str(transforms_preset)
    if preset != listed:
        raise ValueError(
            f"The data's modality preset is '{preset}' but the config lists the transforms of '{listed}': add the "
            f"overlay configs/presets/{preset}.json after train.json or inference.json (the monai-cilmp commands do "
            "this for you)."
        )
