"""Readers: photographs, DICOM (pydicom's real test files) and NIfTI (nibabel's), and their one-sentence errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import LoadImaged

from monai_cilmp.transforms import DicomReader, ImageReadError, LoadMedicalImage, LoadMedicalImaged

from .conftest import dicom_file, nibabel_file, pydicom, write_image


@pytest.fixture(scope="module")
def load():
    return LoadMedicalImage()


def test_png_grayscale_16bit_keeps_values_and_orientation(tmp_path, load):
    array = np.arange(12 * 20, dtype=np.uint16).reshape(12, 20) * 200  # values above 8 bits
    image = load(write_image(tmp_path / "x.png", array))
    assert image.shape == (1, 12, 20)  # (C, rows, columns): upright, not transposed like MONAI's PILReader
    np.testing.assert_array_equal(image[0].numpy(), array.astype(np.float32))


def test_jpeg_rgb_and_tiff_and_palette(tmp_path, load):
    rgb = np.zeros((10, 16, 3), np.uint8)
    rgb[..., 0] = 200
    jpg = load(write_image(tmp_path / "x.jpg", rgb))
    assert jpg.shape == (3, 10, 16)
    assert jpg[0].mean() > 150 and jpg[2].mean() < 50
    tif = load(write_image(tmp_path / "x.tif", rgb))
    np.testing.assert_array_equal(tif.numpy(), np.moveaxis(rgb, -1, 0).astype(np.float32))

    from PIL import Image

    palette = Image.fromarray(rgb).convert("P")
    palette.save(tmp_path / "p.png")
    assert load(str(tmp_path / "p.png")).shape == (3, 10, 16)
    rgba = np.dstack([rgb, np.full((10, 16), 255, np.uint8)])
    assert load(write_image(tmp_path / "a.png", rgba)).shape == (3, 10, 16)  # alpha dropped


def test_ct_dicom_is_in_hounsfield_units(load):
    path = dicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    image = load(path)
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert image.shape == (1, 128, 128)
    np.testing.assert_allclose(image[0].numpy(), expected)
    assert image.min() < -800 and image.max() > 1000  # air and bone in HU
    assert image.meta["Modality"] == "CT" and image.meta["PhotometricInterpretation"] == "MONOCHROME2"


def test_header_window_is_applied_when_asked():
    path = dicom_file("MR_small.dcm")
    ds = pydicom.dcmread(path)
    raw = ds.pixel_array.astype(np.float64)
    windowed = LoadMedicalImage(dicom_voi_lut=True)(path)[0].numpy()
    assert windowed.min() >= 0 and windowed.max() <= 1
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    inside = (raw > center - width / 2 + 1) & (raw < center + width / 2 - 1)
    # a linear window: monotone in the raw values, saturated above the window
    order = np.argsort(raw[inside])
    assert np.all(np.diff(windowed[inside][order]) >= -1e-6)
    assert np.allclose(windowed[raw >= center + width / 2], 1.0)
    assert LoadMedicalImage()(path).meta["WindowCenter"] == center


def test_monochrome1_is_inverted(load, monochrome1_dicom):
    plain = load(dicom_file("MR_small.dcm"))[0]
    ds = pydicom.dcmread(monochrome1_dicom)
    image = load(monochrome1_dicom)
    inverted = image[0]
    # around the theoretical range of the stored values (MR_small: 16 bits, signed), not the image's min/max
    lo, hi = -(2.0 ** (ds.BitsStored - 1)), 2.0 ** (ds.BitsStored - 1) - 1
    assert int(ds.PixelRepresentation) == 1
    torch.testing.assert_close(inverted, lo + hi - plain)
    assert image.meta["PhotometricInterpretation"] == "MONOCHROME2"
    assert image.meta["OriginalPhotometricInterpretation"] == "MONOCHROME1" and bool(image.meta["Inverted"])
    kept = LoadMedicalImage(invert_monochrome1=False)(monochrome1_dicom)
    torch.testing.assert_close(kept[0], plain)
    assert kept.meta["PhotometricInterpretation"] == "MONOCHROME1"


def _linear_window(x, center, width):
    """DICOM PS3.3 C.11.2.1.2 LINEAR window, scaled to [0, 1]."""
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def test_header_window_on_rescaled_ct_values(tmp_path):
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    assert float(ds.RescaleIntercept) != 0
    ds.WindowCenter, ds.WindowWidth = 40, 400
    path = tmp_path / "ct.dcm"
    ds.save_as(path)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    windowed = LoadMedicalImage(dicom_voi_lut=True)(str(path))[0].numpy().astype(np.float64)
    np.testing.assert_allclose(windowed, _linear_window(hu, 40.0, 400.0), atol=1e-6)
    assert np.all(windowed[hu < -160] == 0) and np.all(windowed[hu > 240] == 1)
    assert (hu < -160).any() and (hu > 240).any()
    # 40 HU in the middle of the window
    np.testing.assert_allclose(_linear_window(np.array([40.0]), 40.0, 400.0), 0.5, atol=2e-3)
    near = np.abs(hu - 40) <= 2
    if near.any():
        np.testing.assert_allclose(windowed[near], 0.5, atol=0.01)


def test_header_window_12_bit_unsigned_with_intercept(tmp_path):
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    stored = np.linspace(0, 4095, 64 * 64).reshape(64, 64).astype(np.uint16)
    ds.Rows, ds.Columns = 64, 64
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = stored.tobytes()
    ds.file_meta = FileMetaDataset(ds.file_meta)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID = generate_uid()
    path = tmp_path / "ct12.dcm"
    ds.save_as(path, enforce_file_format=True)
    hu = stored.astype(np.float64) - 1024
    windowed = LoadMedicalImage(dicom_voi_lut=True)(str(path))[0].numpy().astype(np.float64)
    np.testing.assert_allclose(windowed, _linear_window(hu, 40.0, 400.0), atol=1e-6)
    assert np.all(windowed[hu < -160] == 0) and np.all(windowed[hu > 240] == 1)


def test_monochrome1_series_is_inverted_consistently(tmp_path, load):
    series = os.path.join(os.path.dirname(dicom_file("CT_small.dcm")), "dicomdirtests", "77654033", "CT2")
    names = sorted(os.listdir(series))
    for i, name in enumerate(names):
        ds = pydicom.dcmread(os.path.join(series, name))
        plain_dir = tmp_path / "plain"
        plain_dir.mkdir(exist_ok=True)
        ds.save_as(plain_dir / f"{i:02d}.dcm")
        ds.PhotometricInterpretation = "MONOCHROME1"
        (tmp_path / "mono1").mkdir(exist_ok=True)
        ds.save_as(tmp_path / "mono1" / f"{i:02d}.dcm")
    ds = pydicom.dcmread(os.path.join(series, names[0]))
    plain = load(str(tmp_path / "plain"))[0]
    inverted = load(str(tmp_path / "mono1"))[0]
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    bits = int(ds.BitsStored)
    lo, hi = (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1) if int(ds.PixelRepresentation) else (0.0, 2.0**bits - 1)
    lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    # one mapping for every slice: the sum is the same constant everywhere, so no jumps between slices
    torch.testing.assert_close(plain + inverted, torch.full_like(plain, lo + hi))
    per_slice_min = [float(plain[..., z].min()) for z in range(plain.shape[-1])]
    assert len(set(per_slice_min)) > 1  # the slices really do have different ranges


def test_multiframe_dicom_frames_on_the_last_axis(load):
    path = dicom_file("rtdose.dcm")
    frames = pydicom.dcmread(path).pixel_array  # (15, 10, 10)
    image = load(path)
    assert image.shape == (1, 10, 10, 15)
    np.testing.assert_allclose(image[0, :, :, 3].numpy(), frames[3].astype(np.float32))
    colour = load(dicom_file("SC_rgb_rle_2frame.dcm"))
    assert colour.shape == (3, 100, 100, 2)
    assert colour.meta["NumberOfFrames"] == 2


def test_palette_and_ybr_colour_dicom_become_rgb(load):
    palette = load(dicom_file("examples_palette.dcm"))
    assert palette.shape[0] == 3 and palette.min() >= 0 and palette.max() <= 255
    ybr = load(dicom_file("SC_ybr_full_422_uncompressed.dcm"))
    assert ybr.shape == (3, 100, 100) and ybr.meta["PhotometricInterpretation"] == "RGB"


def test_dicom_series_folder_is_sorted_along_the_slice_normal(tmp_path, load):
    series = os.path.join(os.path.dirname(dicom_file("CT_small.dcm")), "dicomdirtests", "77654033", "CT2")
    names = sorted(os.listdir(series))
    # copy the files under names whose order is the reverse of their slice positions
    for i, name in enumerate(names):
        shutil.copy(os.path.join(series, name), tmp_path / f"{len(names) - i:02d}.dcm")
    volume = load(str(tmp_path))
    expected = [pydicom.dcmread(os.path.join(series, n)) for n in names]
    expected.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    assert volume.shape == (1, 16, 16, len(names))
    for z, ds in enumerate(expected):
        np.testing.assert_allclose(volume[0, :, :, z].numpy(), ds.pixel_array + float(ds.RescaleIntercept))


def test_nifti_3d_4d_and_2d(tmp_path, load):
    import nibabel as nib

    anatomical = load(nibabel_file("anatomical.nii"))
    assert anatomical.shape == (1, 33, 41, 25)
    np.testing.assert_allclose(
        anatomical[0].numpy(), np.asanyarray(nib.as_closest_canonical(nib.load(nibabel_file("anatomical.nii"))).dataobj)
    )
    with pytest.raises(ImageReadError, match=r"example4d.nii.gz' has 4 dimensions .*2 channels or volumes"):
        load(nibabel_file("example4d.nii.gz"))  # a time series: the one rule for bad images refuses it
    flat = np.arange(72, dtype=np.float32).reshape(8, 9)
    nib.save(nib.Nifti1Image(flat, np.eye(4)), tmp_path / "flat.nii.gz")
    image = load(str(tmp_path / "flat.nii.gz"))
    assert image.squeeze().shape == (8, 9)
    np.testing.assert_allclose(image.squeeze().numpy(), flat)


@pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader")  # MONAI's own DICOM readers, instantiated by LoadImage
def test_readers_register_with_monai_loadimage():
    path = dicom_file("CT_small.dcm")
    loaded = LoadImaged("image", reader=DicomReader(), ensure_channel_first=True)({"image": path})["image"]
    assert loaded.shape == (1, 128, 128) and loaded.min() < -800
    dictionary = LoadMedicalImaged("image", image_only=False)({"image": path})
    assert dictionary["image_meta_dict"]["Modality"] == "CT"


# ----------------------------------------------------------------------------------------------------------------
# failures: one sentence naming the file
# ----------------------------------------------------------------------------------------------------------------
def test_corrupt_png_and_truncated_jpeg(tmp_path, load):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    with pytest.raises(ImageReadError) as e:
        load(str(bad))
    assert str(e.value).startswith(f"Cannot read '{bad}': the file is corrupt or not a valid PNG image (")
    assert "\n" not in str(e.value) and str(e.value).count(str(bad)) == 1

    good = write_image(tmp_path / "good.jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(Path(good).read_bytes()[:400])
    with pytest.raises(
        ImageReadError, match=r"^Cannot read '.*truncated\.jpg': the file is corrupt or not a valid JPG"
    ):
        load(str(truncated))


def test_dicom_failures(tmp_path, load, monochrome1_dicom):
    noise = tmp_path / "noise.dcm"
    noise.write_bytes(os.urandom(500))
    with pytest.raises(ImageReadError) as e:
        load(str(noise))
    assert str(e.value) == f"Cannot read '{noise}': the file is corrupt or not DICOM (no DICOM header)."

    no_pixels = os.path.join(
        os.path.dirname(dicom_file("CT_small.dcm")), "dicomdirtests", "TINY_ALPHA", "PT000000", "ST000000"
    )
    no_pixels = os.path.join(no_pixels, "SE000000", "IM000000")
    with pytest.raises(ImageReadError) as e:
        load(no_pixels)
    assert str(e.value) == f"Cannot read '{no_pixels}': the DICOM file has no pixel data."

    ds = pydicom.dcmread(monochrome1_dicom)
    ds.PhotometricInterpretation = "ARGB"
    argb = tmp_path / "argb.dcm"
    ds.save_as(argb)
    with pytest.raises(ImageReadError) as e:
        load(str(argb))
    assert str(e.value) == (
        f"Cannot read '{argb}': photometric interpretation 'ARGB' is not supported (supported: MONOCHROME1, "
        "MONOCHROME2, RGB, YBR_FULL, YBR_FULL_422, YBR_ICT, YBR_RCT, PALETTE COLOR)."
    )

    truncated = dicom_file("MR_truncated.dcm")
    with pytest.raises(ImageReadError, match=r"^Cannot read '.*MR_truncated\.dcm': its pixel data cannot be decoded"):
        load(truncated)


def test_nifti_missing_and_unsupported_failures(tmp_path, load):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(Path(nibabel_file("example4d.nii.gz")).read_bytes()[:300])
    with pytest.raises(ImageReadError, match=r"^Cannot read '.*broken\.nii\.gz': the file is corrupt or not NIfTI \("):
        load(str(broken))

    with pytest.raises(FileNotFoundError) as e:
        load(str(tmp_path / "absent.png"))
    assert str(e.value) == f"Image file '{tmp_path / 'absent.png'}' does not exist."

    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(ImageReadError, match=r"^Cannot read '.*notes\.txt': unsupported file type '\.txt' \("):
        load(str(text))


def test_large_images_are_read_at_a_reduced_scale(tmp_path, monkeypatch):
    from PIL import Image, JpegImagePlugin

    from monai_cilmp.transforms.readers import PhotoReader

    rng = np.random.default_rng(0)
    photo = np.kron(rng.integers(0, 255, (45, 40, 3), dtype=np.uint8), np.ones((64, 64, 1), np.uint8))  # 2880x2560
    Image.fromarray(photo).save(tmp_path / "big.jpg", quality=95)
    Image.fromarray(photo[..., 0]).save(tmp_path / "big.png")
    opened = []
    original = JpegImagePlugin.JpegImageFile.draft

    def draft(self, mode, size):
        opened.append(size)
        return original(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", draft)
    jpeg = LoadMedicalImage()(str(tmp_path / "big.jpg"))
    assert jpeg.shape == (3, 1440, 1280) and opened == [(1280, 1440)]  # decoded at half scale by the JPEG decoder
    np.testing.assert_allclose(jpeg[:, 64:96, 64:96].mean().item(), photo[128:192, 128:192].mean(), atol=3)
    png = LoadMedicalImage()(str(tmp_path / "big.png"))
    assert png.shape == (1, 1440, 1280)
    assert PhotoReader(reduce_to=None)._reduction((2880, 2560)) == 1  # full resolution when asked
