"""Colour (channels, jitter, stain normalisation) and spatial (slices, field of view, resize) transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_cilmp.transforms import (
    ClipResize,
    ClipResized,
    FieldOfViewCrop,
    HEStainNormalize,
    LoadMedicalImage,
    PadToSquare,
    RandColorJitter,
    RandColorJitterd,
    SelectSlice,
    SelectSliced,
    ToGrayscale,
    ToRGB,
)

from .conftest import DEVICES, nibabel_file


def test_channel_conversions():
    gray = torch.rand(1, 4, 5)
    assert torch.equal(ToRGB()(gray), gray.repeat(3, 1, 1))
    rgba = torch.rand(4, 4, 5)
    assert torch.equal(ToRGB()(rgba), rgba[:3])
    two = ToRGB()(torch.stack([torch.zeros(4, 5), torch.ones(4, 5)]))
    assert torch.allclose(two[2], torch.full((4, 5), 0.5))
    rgb = torch.zeros(3, 2, 2)
    rgb[1] = 1.0  # pure green
    assert torch.allclose(ToGrayscale()(rgb), torch.full((1, 2, 2), 0.587))
    with pytest.raises(ValueError, match="ToRGB expects 1 to 4 channels, got 5"):
        ToRGB()(torch.zeros(5, 2, 2))


def test_color_jitter_is_seeded_bounded_and_spares_gray():
    image = torch.rand(3, 16, 16)
    a = RandColorJitter(prob=1.0, hue=0.1).set_random_state(3)(image)
    b = RandColorJitter(prob=1.0, hue=0.1).set_random_state(3)(image)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, image) and a.min() >= 0 and a.max() <= 1
    gray = torch.full((3, 8, 8), 0.4)  # saturation and hue leave a gray image gray
    out = RandColorJitter(prob=1.0, brightness=0.0, contrast=0.0, saturation=0.5, hue=0.3).set_random_state(0)(gray)
    torch.testing.assert_close(out, gray)
    never = RandColorJitter(prob=0.0)(image)
    torch.testing.assert_close(never, image)
    d = RandColorJitterd(["a", "b"], prob=1.0).set_random_state(1)({"a": image, "b": image.clone()})
    torch.testing.assert_close(d["a"], d["b"])  # one draw for all keys


def test_stain_normalisation_changes_stained_tissue_and_spares_blank_tiles():
    rng = np.random.default_rng(0)
    # an H&E-like tile: purple nuclei and pink stroma on white, as absorbances of two stain vectors
    h, e = np.array([0.65, 0.70, 0.29]), np.array([0.07, 0.99, 0.11])
    conc = rng.uniform(0, 1.5, (2, 32 * 32))
    rgb = 240 * np.exp(-(np.outer(h, conc[0]) + np.outer(e, conc[1]))).T.reshape(32, 32, 3)
    tile = torch.from_numpy(np.moveaxis(rgb, -1, 0) / 255.0).float()
    out = HEStainNormalize()(tile)
    assert out.shape == tile.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, tile, atol=0.02)
    blank = torch.ones(3, 16, 16)
    assert HEStainNormalize()(blank) is blank


def _volume():
    volume = torch.zeros(1, 8, 9, 10)
    for z in range(10):
        volume[0, : z % 6 + 1, :, z] = 100.0 + z  # slice 5 has the largest foreground (6 rows)
    return volume


def test_select_slice_strategies():
    volume = _volume()
    assert torch.equal(SelectSlice()(volume), volume[..., 5])
    assert torch.equal(SelectSlice("index", index=-1)(volume), volume[..., 9])
    assert torch.equal(SelectSlice("largest_foreground", threshold=50)(volume), volume[..., 5])
    assert torch.equal(SelectSlice("largest_foreground", axis=0, threshold=50)(volume), volume[:, 0])
    context = SelectSlice("index", index=0, context=1)(volume)  # clamped at the first slice
    assert torch.equal(context, torch.cat([volume[..., 0], volume[..., 0], volume[..., 1]]))
    flat = torch.rand(1, 5, 6)
    assert SelectSlice(context=1)(flat).shape == (3, 5, 6)
    assert SelectSliced("image")({"image": flat})["image"] is flat


def test_select_slice_errors():
    with pytest.raises(ValueError, match="Slice index 10 is out of range for a volume of 10 slices along axis 2"):
        SelectSlice("index", index=10)(_volume())
    with pytest.raises(ValueError, match="needs a slice index"):
        SelectSlice("index")
    with pytest.raises(ValueError, match="did you mean 'middle'"):
        SelectSlice("midle")


def test_select_slice_of_a_real_mri_volume():
    volume = LoadMedicalImage()(nibabel_file("anatomical.nii"))
    picked = SelectSlice("largest_foreground")(volume)
    index = picked.meta["SliceIndex"]
    area = (volume[0] > volume.mean()).sum(dim=(0, 1))
    assert int(area[index]) == int(area.max())
    assert picked.shape == (1, 41, 33)  # axial, displayed: rows run anterior to posterior (docs/data.md)
    # the volume's affine does not describe a slice: it is dropped (MONAI then assumes the identity)
    assert not torch.equal(volume.affine, picked.affine) and torch.equal(
        picked.affine, torch.eye(4, dtype=torch.float64)
    )


def test_clip_resize_modes():
    image = torch.rand(3, 30, 60)
    assert ClipResize(20)(image).shape == (3, 20, 40)  # shorter side, aspect kept
    assert ClipResize(20, "pad")(image).shape == (3, 20, 20)
    assert ClipResize(20, "stretch")(image).shape == (3, 20, 20)
    small = ClipResized("image", 64)({"image": torch.rand(1, 28, 28)})["image"]
    assert small.shape == (1, 64, 64) and small.min() >= 0 and small.max() <= 1  # bilinear: no overshoot
    with pytest.raises(ValueError, match="ClipResize expects a 2D image"):
        ClipResize(20)(torch.rand(1, 4, 4, 4))


def test_field_of_view_crop_centres_the_disc():
    image = torch.zeros(3, 60, 100)
    yy, xx = torch.meshgrid(torch.arange(60), torch.arange(100), indexing="ij")
    image[:, ((yy - 30) ** 2 + (xx - 30) ** 2) < 25**2] = 0.8  # an off-centre disc of radius 25
    image[:, 0:2, 95:100] = 0.01  # faint noise below the threshold
    out = FieldOfViewCrop()(image)
    assert out.shape[1] == out.shape[2] and abs(out.shape[1] - 49) <= 2
    centre = out.shape[1] // 2
    assert float(out[0, centre, centre]) == pytest.approx(0.8)
    assert float(out[0, 0, 0]) == 0.0
    assert PadToSquare()(torch.zeros(1, 3, 7)).shape == (1, 7, 7)


@pytest.mark.parametrize("device", DEVICES)
def test_color_jitter_hue_on_device(device):
    image = torch.rand(3, 8, 9)
    jitter = RandColorJitter(prob=1.0, hue=0.2).set_random_state(5)
    jitter.randomize()
    expected = jitter(image, randomize=False)
    assert jitter.factors[3] != 0
    out = jitter(image.to(device), randomize=False)
    assert out.device.type == device and out.dtype == torch.float32
    torch.testing.assert_close(out.cpu(), expected)


def test_hue_matrix_follows_device_and_dtype():
    from monai_cilmp.transforms.color import _hue_matrix

    matrix = _hue_matrix(0.1, "cpu", torch.float64)
    assert matrix.dtype == torch.float64 and matrix.shape == (3, 3)
    torch.testing.assert_close(_hue_matrix(0.0, "cpu", torch.float64), torch.eye(3, dtype=torch.float64))
