"""Real test images shipped by pydicom and nibabel (not written by this project), and small image writers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
nibabel = pytest.importorskip("nibabel")

NIBABEL_DATA = Path(os.path.dirname(nibabel.__file__)) / "tests" / "data"


def dicom_file(name: str) -> str:
    """A file of pydicom's own test data (shipped inside the installed package)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom does not ship {name}")
    return str(path)


def nibabel_file(name: str) -> str:
    path = NIBABEL_DATA / name
    if not path.exists():
        pytest.skip(f"nibabel does not ship {name}")
    return str(path)


def write_image(path: Path, array: np.ndarray) -> str:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return str(path)


@pytest.fixture
def monochrome1_dicom(tmp_path) -> str:
    """pydicom's real MR_small.dcm, marked MONOCHROME1 (pydicom ships no MONOCHROME1 image)."""
    ds = pydicom.dcmread(dicom_file("MR_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    out = tmp_path / "mono1.dcm"
    ds.save_as(out)
    return str(out)


DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")),
]
