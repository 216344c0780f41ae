"""One orientation for 2D views: the same phantom through every container gives the same network input, and
radiographs stay upright."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_cilmp.transforms import SelectSlice, get_preset
from monai_cilmp.transforms.readers import LoadMedicalImage

from . import phantom as ph
from .conftest import pydicom

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def containers(tmp_path_factory):
    return ph.write_all(tmp_path_factory.mktemp("phantom"))


def test_axial_view_is_as_radiologists_view_it(containers):
    """Anterior at the top, patient right on the image's left; superior at the top of coronal and sagittal views."""
    volume = LoadMedicalImage()(containers["DICOM series"])
    axial = SelectSlice(axis=2)(volume)[0].numpy()
    assert axial.shape == (24, 20)  # rows: anterior to posterior, columns: right to left
    assert axial[5, 4] > 900 and axial[18, 15] == pytest.approx(60 + 5)  # dense block top-left, soft tissue down-right
    coronal = SelectSlice(axis=1, index=11, strategy="index")(volume)[0].numpy()
    assert coronal.shape == (11, 20) and coronal[0, 9] > 400 and coronal[-1, 9] < 100  # marker at the top
    sagittal = SelectSlice(axis=0, index=9, strategy="index")(volume)[0].numpy()
    assert sagittal.shape == (11, 24) and sagittal[0, 11] > 400 and sagittal[-1, 11] < 100
    sagittal = SelectSlice(axis=0, index=4, strategy="index")(volume)[0].numpy()
    assert sagittal[5, 5] > 900 and sagittal[5, 18] < 100  # the anterior block is on the image's left


@pytest.mark.parametrize("preset", ["ct", "mri"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_every_container_gives_the_same_image(containers, preset, axis):
    options = {"windows": ("soft_tissue",)} if preset == "ct" else {}
    images = {}
    for name, path in containers.items():
        numpy = {"numpy_axcodes": "LPS"} if name.startswith("NumPy") else {}
        pipeline = get_preset(preset, slice_axis=axis, **options, **numpy).eval_transforms(keys=None, image_size=32)
        images[name] = torch.as_tensor(pipeline(path))
    reference = images.pop("DICOM series")
    assert reference.shape == (3, 32, 32) and float(reference.std()) > 0.1
    for name, image in images.items():
        np.testing.assert_allclose(image.numpy(), reference.numpy(), atol=1e-5, err_msg=name)


def test_context_slices_are_in_anatomical_order(containers):
    """2.5D neighbours run inferior to superior whatever the file's slice order."""
    for name in ("DICOM series", "NIfTI PRI", "enhanced DICOM"):
        picked = SelectSlice(axis=2, context=1)(LoadMedicalImage()(containers[name]))
        body = picked[:, 12, 10].numpy()  # water plus the slice index
        np.testing.assert_allclose(body, [4.0, 5.0, 6.0], err_msg=name)


def test_a_missing_slice_is_named(tmp_path):
    volume = ph.phantom()
    folder = ph.write_dicom_series(tmp_path / "gap", volume)
    files = sorted((tmp_path / "gap").iterdir())
    next(p for p in files if abs(float(pydicom.dcmread(p).ImagePositionPatient[2]) - 4) < 1e-6).unlink()
    with pytest.warns(UserWarning, match=r"unevenly spaced slices: 2 mm between slices 3 and 4 \(at 3 and 5 mm"):
        LoadMedicalImage()(folder)


def _radiograph(array: np.ndarray) -> object:
    ds = ph._dataset("1.2.840.10008.5.1.4.1.1.1.1", *array.shape, array, Modality="DX", PixelRepresentation=0)
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PatientOrientation = ["L", "F"]  # columns run to the patient's left, rows to the feet: an upright PA chest film
    return ds


def test_radiograph_reaches_the_network_upright(tmp_path):
    """Rows x columns as displayed: what is at the top-left of the film is at the top-left of the network's input."""
    film = np.full((64, 48), 200, np.uint16)
    film[2:14, 2:12] = 4000  # a bright marker top-left
    film[40:60, 30:44] = 1500
    path = tmp_path / "chest.dcm"
    _radiograph(film).save_as(path, enforce_file_format=True)
    image = get_preset("radiography", resize_mode="pad").eval_transforms(keys=None, image_size=64)(str(path))
    image = torch.as_tensor(image)[0]
    offset = (64 - 48 * 64 // 64) // 2  # padded to a square: columns are centred
    assert float(image[2:14, offset + 2 : offset + 12].mean()) > float(image[40:60, offset + 30 : offset + 44].mean())
    assert float(image[2:14, offset + 2 : offset + 12].mean()) > float(image[50:62, offset + 2 : offset + 12].mean())


def test_a_single_slice_volume_is_a_2d_image(tmp_path):
    import nibabel as nib

    data = np.random.default_rng(0).random((16, 12, 1)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "one.nii")
    volume = LoadMedicalImage()(str(tmp_path / "one.nii"))
    assert SelectSlice(axis=2)(volume).shape == (1, 12, 16)
    with pytest.raises(ValueError, match=r"one.nii' gives a 1x12 slice along axis 0 .* another axis"):
        SelectSlice(axis=0)(volume)


def test_frames_at_one_place_are_time_not_space(tmp_path):
    """A cine series (every frame at one position) keeps its frames as stored, on the last axis."""
    volume = ph.phantom()
    path = ph.write_multiframe(tmp_path / "cine.dcm", volume)
    ds = pydicom.dcmread(path)
    ds.SpacingBetweenSlices = 0.0
    ds.save_as(path)
    image = LoadMedicalImage()(path)
    assert image.shape == (1, 24, 20, 11) and "AnatomicalVolume" not in image.meta
