"""An asymmetric CT phantom written in every container the readers take (used by the orientation tests and by
scripts/orientation_figure.py).

The phantom is defined on an LPS grid ``P[x, y, z]`` (x to the patient's left, y to posterior, z to superior), in
Hounsfield units: air around a soft-tissue body, a dense block anterior-right, soft tissue posterior-left, and a bony
marker in the superior slices, so that every flip or transpose of any view shows.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SHAPE = (20, 24, 11)  # x, y, z (1 mm voxels)


def phantom() -> np.ndarray:
    volume = np.full(SHAPE, -1000.0, dtype=np.float32)
    volume[1:19, 1:23, :] = 0.0  # body (water)
    volume[2:7, 3:9, :] = 1000.0  # dense block, anterior-right (low x is right, low y is anterior)
    volume[12:18, 15:21, :] = 60.0  # soft tissue, posterior-left
    volume[8:12, 9:15, 7:] = 400.0  # bony marker, superior
    volume += np.arange(SHAPE[2], dtype=np.float32)[None, None, :]  # every slice differs a little
    return volume


def _dataset(sop_class: str, rows: int, columns: int, pixels: np.ndarray, **elements):
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.int16)).tobytes()
    assert pydicom is not None
    return ds


CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


def write_dicom_series(folder: Path, volume: np.ndarray, flipped: bool = False) -> str:
    """One file per axial slice, in shuffled file-name order. ``flipped``: rows and columns run the other way
    (``ImageOrientationPatient`` -1,0,0,0,-1,0, the image rotated by 180 degrees), positions at the other corner."""
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series, study = generate_uid(), generate_uid()
    order = np.random.default_rng(0).permutation(volume.shape[2])
    for name_index, z in enumerate(order):
        image = volume[:, :, z].T  # rows along y (posterior), columns along x (left)
        orientation, position = [1, 0, 0, 0, 1, 0], [0.0, 0.0, float(z)]
        if flipped:
            image = image[::-1, ::-1]
            orientation = [-1, 0, 0, 0, -1, 0]
            position = [float(volume.shape[0] - 1), float(volume.shape[1] - 1), float(z)]
        ds = _dataset(
            CT_IMAGE,
            *image.shape,
            image,
            SeriesInstanceUID=series,
            StudyInstanceUID=study,
            InstanceNumber=int(name_index + 1),
            ImageOrientationPatient=orientation,
            ImagePositionPatient=position,
            PixelSpacing=[1.0, 1.0],
            SliceThickness=1.0,
            RescaleSlope=1,
            RescaleIntercept=0,
        )
        ds.save_as(folder / f"slice{name_index:03d}.dcm", enforce_file_format=True)
    return str(folder)


def write_multiframe(path: Path, volume: np.ndarray) -> str:
    """A legacy multi-frame CT: one ImagePositionPatient, frames stepped by SpacingBetweenSlices."""
    frames = np.stack([volume[:, :, z].T for z in range(volume.shape[2])])
    ds = _dataset(
        CT_IMAGE,
        frames.shape[1],
        frames.shape[2],
        frames,
        NumberOfFrames=frames.shape[0],
        ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
        ImagePositionPatient=[0.0, 0.0, 0.0],
        PixelSpacing=[1.0, 1.0],
        SpacingBetweenSlices=1.0,
        RescaleSlope=1,
        RescaleIntercept=0,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return str(path)


def write_enhanced(path: Path, volume: np.ndarray) -> str:
    """An enhanced CT with per-frame functional groups (plane positions), its frames stored in shuffled order."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    order = np.random.default_rng(1).permutation(volume.shape[2])
    frames = np.stack([volume[:, :, z].T for z in order])
    shared = Dataset()
    orientation, measures, transform = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing, measures.SliceThickness = [1.0, 1.0], 1.0
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 1, 0, "HU"
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PixelValueTransformationSequence = Sequence([transform])
    per_frame = []
    for z in order:
        item, position = Dataset(), Dataset()
        position.ImagePositionPatient = [0.0, 0.0, float(z)]
        item.PlanePositionSequence = Sequence([position])
        per_frame.append(item)
    ds = _dataset(
        ENHANCED_CT,
        frames.shape[1],
        frames.shape[2],
        frames,
        NumberOfFrames=frames.shape[0],
        SharedFunctionalGroupsSequence=Sequence([shared]),
        PerFrameFunctionalGroupsSequence=Sequence(per_frame),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return str(path)


#: NIfTI storage orders (axis codes of the stored array) and whether the affine is also rotated (oblique)
NIFTI_LAYOUTS = {"RAS": False, "LPS": False, "PRI": False, "ASR": False, "LPS-oblique": True}


def write_nifti(path: Path, volume: np.ndarray, layout: str) -> str:
    """The phantom stored with axes ``layout`` (e.g. ``"RAS"``, ``"PRI"``: flipped and transposed) and the affine
    that says so; ``-oblique`` rotates the affine by 12 degrees about the patient's z axis."""
    import nibabel as nib
    from nibabel.orientations import apply_orientation, axcodes2ornt, ornt_transform

    codes = layout.split("-")[0]
    data = apply_orientation(volume, ornt_transform(axcodes2ornt("LPS"), axcodes2ornt(tuple(codes))))
    from monai_cilmp.transforms.orientation import axcodes_affine

    affine = axcodes_affine(codes)
    if layout.endswith("oblique"):
        angle = np.radians(12)
        rotation = np.eye(4)
        rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
        affine = rotation @ affine
    affine[:3, 3] = [5.0, -7.0, 11.0]
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), path)
    return str(path)


def write_numpy(path: Path, volume: np.ndarray, codes: str = "LPS") -> str:
    from nibabel.orientations import apply_orientation, axcodes2ornt, ornt_transform

    data = apply_orientation(volume, ornt_transform(axcodes2ornt("LPS"), axcodes2ornt(tuple(codes))))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.ascontiguousarray(data))
    return str(path)


def write_all(root: str | os.PathLike) -> dict[str, str]:
    """``{container name: path}`` of the phantom in every container (NumPy in LPS order)."""
    root, volume = Path(root), phantom()
    paths = {
        "DICOM series": write_dicom_series(root / "series", volume),
        "DICOM series 180°": write_dicom_series(root / "series-flipped", volume, flipped=True),
        "multi-frame DICOM": write_multiframe(root / "multiframe.dcm", volume),
        "enhanced DICOM": write_enhanced(root / "enhanced.dcm", volume),
    }
    for layout in NIFTI_LAYOUTS:
        paths[f"NIfTI {layout}"] = write_nifti(root / f"phantom-{layout}.nii.gz", volume, layout)
    paths["NumPy (LPS)"] = write_numpy(root / "phantom.npy", volume)
    return paths
