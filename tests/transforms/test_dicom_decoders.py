"""Every image among pydicom's own test files reads, or fails with one sentence naming the transfer syntax (and what
to install when no decoder is there)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from monai_cilmp.transforms import readers
from monai_cilmp.transforms.readers import ImageReadError, LoadMedicalImage

from .conftest import dicom_file, pydicom


def _image_files() -> list[str]:
    from pydicom.data import get_testdata_files

    found = []
    for path in sorted(get_testdata_files()):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, defer_size="1 KB", force=True)
        except Exception:  # not DICOM at all (pydicom also ships other files)
            continue
        if any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            found.append(path)
    return found


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_every_image_among_pydicoms_test_files_reads_or_says_why():
    files = _image_files()
    assert len(files) > 50
    load = LoadMedicalImage()
    read, refused = 0, {}
    for path in files:
        try:
            image = load(path)
        except ImageReadError as e:
            refused[path.rsplit("/", 1)[-1]] = message = str(e)
            assert path in message and "\n" not in message and "Traceback" not in message, message
            continue
        read += 1
        assert image.ndim in (3, 4) and bool(np.isfinite(image.numpy()).all()), path
    # with the decoders installed every compressed transfer syntax a PACS exports is read; what is refused is refused
    # for a reason of its own (corrupt or non-conformant data, a missing header element, a 3x3 image, a SEG object)
    assert read >= len(files) - 12, refused
    assert "segmentation (SEG), not an image" in refused["liver_1frame.dcm"]
    for name in ("JPEG-lossy.dcm", "JPEG2000-embedded-sequence-delimiter.dcm"):
        if name in refused:  # non-conformant files that pydicom's plugins reject
            assert "1.2.840.10008.1.2.4.5" in refused[name] or "1.2.840.10008.1.2.4.9" in refused[name]
            assert "python-gdcm" in refused[name]
    reasons = ("transfer syntax", "compressed as", "degenerate", "header", "not an image")
    for message in refused.values():
        assert any(reason in message for reason in reasons), message


@pytest.mark.parametrize(
    "name, syntax",
    [
        ("MR_small_jpeg_ls_lossless.dcm", "JPEG-LS lossless"),
        ("MR_small_jp2klossless.dcm", "JPEG 2000 lossless"),
        ("MR_small_RLE.dcm", "RLE"),
    ],
)
def test_lossless_syntaxes_give_the_uncompressed_values(name, syntax):
    load = LoadMedicalImage()
    np.testing.assert_array_equal(load(dicom_file(name)).numpy(), load(dicom_file("MR_small.dcm")).numpy(), syntax)


@pytest.mark.parametrize("name", ["JPGExtended.dcm", "SC_rgb_jpeg_gdcm.dcm", "JPEGLSNearLossless_16.dcm"])
def test_12_bit_jpeg_jpeg_lossless_and_jpeg_ls_near_lossless_decode(name):
    image = LoadMedicalImage()(dicom_file(name))
    assert image.ndim == 3 and float(image.max()) > float(image.min())


def test_a_missing_decoder_is_named_with_what_to_install(monkeypatch, tmp_path):
    uid = "1.2.840.10008.1.2.4.80"
    monkeypatch.setitem(readers.COMPRESSED_TRANSFER_SYNTAXES, uid, ("JPEG-LS Lossless", ("absent_codec",)))
    monkeypatch.setitem(readers.DECODER_PACKAGES, "absent_codec", "absent-codec")
    ds = pydicom.dcmread(dicom_file("MR_small_jpeg_ls_lossless.dcm"))
    message = readers._decode_failure(ds, "x.dcm", RuntimeError("no plugin"))
    assert message == (
        "Cannot read 'x.dcm': its pixel data is compressed as JPEG-LS Lossless (1.2.840.10008.1.2.4.80) and no "
        "decoder for it is installed: pip install absent-codec."
    )
