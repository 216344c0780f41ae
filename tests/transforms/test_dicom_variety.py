"""The DICOM variety of real archives, on files pydicom ships or that are written here: colour encodings, rescaled
16-bit values, mixed series, non-image objects, DICOMDIR, non-square pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_cilmp.transforms import SquarePixels, get_preset
from monai_cilmp.transforms.readers import ImageReadError, LoadMedicalImage

from . import phantom as ph
from .conftest import dicom_file, pydicom

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _colour(rgb: np.ndarray, interpretation: str, planar: int) -> object:
    ds = ph._dataset("1.2.840.10008.5.1.4.1.1.7", *rgb.shape[:2], np.zeros(1), Modality="OT")
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, interpretation, planar
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    data = rgb
    if interpretation == "YBR_FULL":
        from pydicom.pixels import convert_color_space

        data = convert_color_space(rgb, "RGB", "YBR_FULL")
    data = np.moveaxis(data, -1, 0) if planar else data  # planar: all red, then all green, then all blue
    ds.PixelData = np.ascontiguousarray(data.astype(np.uint8)).tobytes()
    return ds


@pytest.mark.parametrize("interpretation, planar", [("RGB", 1), ("YBR_FULL", 0), ("YBR_FULL", 1)])
def test_colour_encodings_read_as_rgb(tmp_path, interpretation, planar):
    rgb = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    path = tmp_path / "colour.dcm"
    _colour(rgb, interpretation, planar).save_as(path, enforce_file_format=True)
    image = LoadMedicalImage()(str(path))
    assert image.shape == (3, 16, 24)
    tolerance = 0 if interpretation == "RGB" else 3  # YBR_FULL round trip: 8-bit rounding
    np.testing.assert_allclose(image.numpy(), np.moveaxis(rgb, -1, 0).astype(np.float32), atol=tolerance)


def test_ybr_full_422_and_palette_colour_from_pydicom():
    ybr = LoadMedicalImage()(dicom_file("SC_ybr_full_422_uncompressed.dcm"))
    assert ybr.shape == (3, 100, 100) and float(ybr.min()) >= 0 and float(ybr.max()) <= 255
    # pydicom's own conversion of the same file (YBR_FULL_422 is upsampled, then converted to RGB)
    expected = pydicom.dcmread(dicom_file("SC_ybr_full_422_uncompressed.dcm")).pixel_array
    np.testing.assert_allclose(ybr.numpy(), np.moveaxis(expected, -1, 0), atol=1e-4)
    palette = LoadMedicalImage()(dicom_file("examples_palette.dcm"))
    assert palette.shape[0] == 3 and float(palette.max()) <= 255


@pytest.mark.parametrize("signed, slope, intercept", [(False, 0.5, -1024.25), (True, 2.5, 0.75)])
def test_16_bit_with_float_rescale(tmp_path, signed, slope, intercept):
    rng = np.random.default_rng(1)
    stored = rng.integers(-2000 if signed else 0, 4000, (16, 16)).astype(np.int16 if signed else np.uint16)
    ds = ph._dataset("1.2.840.10008.5.1.4.1.1.2", 16, 16, stored, PixelRepresentation=int(signed))
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = stored.tobytes()
    ds.save_as(tmp_path / "rescaled.dcm", enforce_file_format=True)
    image = LoadMedicalImage()(str(tmp_path / "rescaled.dcm"))
    np.testing.assert_allclose(image[0].numpy(), stored * slope + intercept, rtol=1e-6)


def test_two_series_in_one_folder_are_named(tmp_path):
    volume = ph.phantom()
    ph.write_dicom_series(tmp_path / "mixed", volume)
    ph.write_dicom_series(tmp_path / "other", volume)
    for i, path in enumerate(sorted((tmp_path / "other").iterdir())[:3]):
        path.rename(tmp_path / "mixed" / f"other{i}.dcm")
    uids = sorted({str(pydicom.dcmread(p).SeriesInstanceUID) for p in (tmp_path / "mixed").iterdir()})
    with pytest.raises(ImageReadError) as caught:
        LoadMedicalImage()(str(tmp_path / "mixed"))
    message = str(caught.value)
    assert f"{uids[0]} (" in message and f"{uids[1]} (" in message and "3 files" in message
    assert "folder of its own" in message


@pytest.mark.parametrize(
    "name, what",
    [
        ("rtstruct.dcm", "RT structure set (RTSTRUCT)"),
        ("test-SR.dcm", "structured report (SR)"),
        ("liver_1frame.dcm", "segmentation (SEG)"),
        ("DICOMDIR", "DICOMDIR"),
    ],
)
def test_non_image_objects_are_refused_by_name(name, what):
    path = dicom_file(name)
    with pytest.raises(ImageReadError, match="not an image|DICOMDIR") as caught:
        LoadMedicalImage()(path)
    assert what in str(caught.value) and path in str(caught.value)


def test_a_folder_with_only_a_dicomdir_says_where_the_images_are(tmp_path):
    import shutil

    shutil.copy(dicom_file("DICOMDIR"), tmp_path / "DICOMDIR")
    with pytest.raises(ImageReadError, match="holds a DICOMDIR .* point to the folder of one series"):
        LoadMedicalImage()(str(tmp_path))


def test_non_square_pixels_are_resampled_before_the_clip_resize(tmp_path):
    # a physical disc of radius 10 mm on pixels 0.5 mm high and 1 mm wide: 40 rows x 20 columns in pixel space
    rows, columns = np.mgrid[0:48, 0:24]
    disc = (((rows - 24) * 0.5) ** 2 + ((columns - 12) * 1.0) ** 2 <= 10**2).astype(np.uint16) * 1000 + 100
    ds = ph._dataset("1.2.840.10008.5.1.4.1.1.1.1", 48, 24, disc, Modality="DX", PixelRepresentation=0)
    ds.ImagerPixelSpacing = [0.5, 1.0]
    ds.save_as(tmp_path / "film.dcm", enforce_file_format=True)
    image = LoadMedicalImage()(str(tmp_path / "film.dcm"))
    square = SquarePixels()(image)
    assert square.shape == (1, 48, 48) and square.meta["PixelSpacing"] == (0.5, 0.5)
    inside = square[0] > 550
    height = int(inside.any(1).sum())
    width = int(inside.any(0).sum())
    assert abs(height - width) <= 1  # round again
    # the presets do it before the resize: the disc fills the same share of both axes of the network's input
    out = torch.as_tensor(
        get_preset("radiography", resize_mode="pad").eval_transforms(keys=None, image_size=64)(
            str(tmp_path / "film.dcm")
        )
    )
    inside = out[0] > out[0].mean()
    assert abs(int(inside.any(1).sum()) - int(inside.any(0).sum())) <= 2
    # square pixels or no spacing: unchanged
    plain = MetaTensor(torch.rand(1, 10, 12))
    assert SquarePixels()(plain) is plain


def test_volume_slices_get_square_pixels(tmp_path):
    import nibabel as nib

    volume = np.random.default_rng(2).random((20, 24, 10)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.diag([1.0, 1.0, 3.0, 1.0])), tmp_path / "thick.nii.gz")
    from monai_cilmp.transforms import SelectSlice

    coronal = SelectSlice(axis=1)(LoadMedicalImage()(str(tmp_path / "thick.nii.gz")))
    assert coronal.shape == (1, 10, 20) and coronal.meta["PixelSpacing"] == pytest.approx((3.0, 1.0))
    assert SquarePixels()(coronal).shape == (1, 30, 20)
