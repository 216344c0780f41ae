"""One orientation for 2D views of volumes, whatever the container (DICOM series, multi-frame and enhanced DICOM,
NIfTI with any affine, NumPy arrays with declared axes).

The readers give every volume whose voxels have a place in the patient an ``affine`` (MONAI's convention: RAS world
coordinates) and the metadata flag :data:`ANATOMICAL`. :class:`~monai_cilmp.transforms.SelectSlice` then reorients
such volumes with MONAI's ``Orientation`` to :data:`VOLUME_AXCODES` (``"LPS"``: axis 0 runs to the patient's left,
axis 1 to posterior, axis 2 to superior; ``slice_axis`` 0, 1, 2 are sagittal, coronal and axial) and shows each
slice as radiologists view it (:func:`display_slice`):

- axial: patient anterior at the top, patient right on the image's left (looking from the feet);
- coronal: superior at the top, patient right on the image's left (looking from the front);
- sagittal: superior at the top, anterior on the image's left.

2.5D neighbours follow axis order: inferior to superior (axial), anterior to posterior (coronal), right to left
(sagittal). An axial DICOM slice with ``ImageOrientationPatient`` (1, 0, 0, 0, 1, 0) is already displayed this way,
so the readers' 2D images (radiographs, single slices: rows x columns as a viewer shows them) need nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "ANATOMICAL",
    "VOLUME_AXCODES",
    "axcodes_affine",
    "dicom_frame_geometry",
    "dicom_volume_affine",
    "display_slice",
]

#: metadata key set by the readers on volumes whose affine places the voxels in the patient
ANATOMICAL = "AnatomicalVolume"
#: the orientation volumes are brought to before slicing
VOLUME_AXCODES = "LPS"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def axcodes_affine(axcodes: str, spacing: Sequence[float] | None = None) -> np.ndarray:
    """The RAS affine of an array whose axes run towards ``axcodes`` (e.g. ``"LPS"``, ``"RAS"``, ``"PLS"``)."""
    from nibabel.orientations import axcodes2ornt

    codes = tuple(str(axcodes).upper())
    if len(codes) != 3 or set("".join(codes)) - set("LRAPSI"):
        raise ValueError(f"Axis codes must be three of L/R, A/P, S/I (e.g. 'LPS' or 'RAS'), got '{axcodes}'.")
    if sorted("LRPASI".index(c) // 2 for c in codes) != [0, 1, 2]:
        raise ValueError(f"Axis codes '{axcodes}' name one direction twice: use one of L/R, A/P and S/I each.")
    ornt = axcodes2ornt(codes)
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for axis, (world, flip) in enumerate(ornt):
        affine[int(world), axis] = float(flip) * (float(spacing[axis]) if spacing is not None else 1.0)
    return affine


def _floats(value: Any, count: int) -> np.ndarray | None:
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (count,) and np.isfinite(out).all() else None


def _item(ds: Any, group: str, sequence: str, attribute: str, frame: int | None = None) -> Any:
    """``attribute`` of an enhanced object's functional group ``sequence``: per frame first, then shared."""
    places = []
    if frame is not None and group in ("per", "any") and "PerFrameFunctionalGroupsSequence" in ds:
        places.append(ds.PerFrameFunctionalGroupsSequence[frame])
    if group in ("shared", "any") and "SharedFunctionalGroupsSequence" in ds:
        places.append(ds.SharedFunctionalGroupsSequence[0])
    for place in places:
        items = place.get(sequence)
        if items and attribute in items[0]:
            return items[0].get(attribute)
    return None


def dicom_frame_geometry(ds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Where the frames of one DICOM data set lie: ``(positions (F, 3), orientation (6,), spacing (2,))`` in LPS
    millimetres, or ``None`` when the data set does not say (a radiograph, an ultrasound clip).

    Classic images give ``ImagePositionPatient``/``ImageOrientationPatient``/``PixelSpacing``; enhanced multi-frame
    objects the per-frame (or shared) functional groups; legacy multi-frame ones a first position stepped along the
    slice normal by ``SpacingBetweenSlices`` (or ``SliceThickness``).
    """
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if "PerFrameFunctionalGroupsSequence" in ds:
        orientation = _floats(_item(ds, "any", "PlaneOrientationSequence", "ImageOrientationPatient", 0), 6)
        spacing = _floats(_item(ds, "any", "PixelMeasuresSequence", "PixelSpacing", 0), 2)
        positions = [
            _floats(_item(ds, "any", "PlanePositionSequence", "ImagePositionPatient", i), 3) for i in range(frames)
        ]
        if orientation is None or spacing is None or any(p is None for p in positions):
            return None
        return np.stack(positions), orientation, spacing
    orientation = _floats(ds.get("ImageOrientationPatient"), 6)
    position = _floats(ds.get("ImagePositionPatient"), 3)
    spacing = _floats(ds.get("PixelSpacing"), 2)
    if orientation is None or position is None or spacing is None:
        return None
    if frames == 1:
        return position[None], orientation, spacing
    step = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
    try:
        step = float(step)
    except (TypeError, ValueError):
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    return position[None] + np.arange(frames)[:, None] * step * normal[None], orientation, spacing


def dicom_volume_affine(
    positions: np.ndarray, orientation: np.ndarray, spacing: np.ndarray, source: str = "the DICOM series"
) -> np.ndarray:
    """The RAS affine of a ``(rows, columns, slices)`` array whose slices lie at ``positions`` (sorted along the
    slice normal), warning when the slices are unevenly spaced (a missing slice, a gap).

    Args:
        positions: ``(S, 3)`` LPS positions of the first voxel of each slice, in slice order.
        orientation: ``ImageOrientationPatient`` (row direction, then column direction).
        spacing: ``PixelSpacing`` (between rows, between columns).
        source: the file or folder, for the warning.
    """
    row_direction, column_direction = orientation[:3], orientation[3:]
    normal = np.cross(row_direction, column_direction)
    affine = np.eye(4)
    affine[:3, 0] = column_direction * spacing[0]  # down the rows
    affine[:3, 1] = row_direction * spacing[1]  # along a row
    affine[:3, 3] = positions[0]
    if len(positions) > 1:
        distances = positions @ normal
        steps = np.diff(distances)
        affine[:3, 2] = (positions[-1] - positions[0]) / (len(positions) - 1)
        typical = float(np.median(steps))
        uneven = np.flatnonzero(np.abs(steps - typical) > max(0.01 * abs(typical), 1e-3))
        if uneven.size:
            i = int(uneven[0])
            warnings.warn(
                f"{source} has unevenly spaced slices: {steps[i]:.3g} mm between slices {i} and {i + 1} (at "
                f"{distances[i]:.4g} and {distances[i + 1]:.4g} mm along the slice normal) where most are "
                f"{typical:.3g} mm apart ({uneven.size} such gap{'s' if uneven.size > 1 else ''}): a slice may be "
                "missing; views across the slices are approximate.",
                stacklevel=2,
            )
    else:
        affine[:3, 2] = normal
    return _LPS_TO_RAS @ affine


def display_slice(slices: torch.Tensor, axis: int) -> torch.Tensor:
    """Slices ``(C, a, b)`` of a :data:`VOLUME_AXCODES` volume taken along ``axis``, as radiologists view them."""
    out = slices.transpose(-1, -2)  # (b, a): rows are the later axis
    if axis in (0, 1):  # coronal and sagittal: the rows run along S, superior goes to the top
        out = out.flip(-2)
    return out
