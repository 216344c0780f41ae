"""Intensity transforms: CT windows, MONOCHROME1 inversion, speckle-robust and z-score scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_cilmp.transforms import (
    CT_WINDOWS,
    CTWindow,
    CTWindowd,
    InvertMonochrome1,
    InvertMonochrome1d,
    LoadMedicalImage,
    SpeckleRobustScaleIntensity,
    SpeckleRobustScaleIntensityd,
    ZScoreScaleIntensity,
)

from .conftest import DEVICES, dicom_file


def test_ct_windows_map_hounsfield_units():
    hu = torch.tensor([[[-1000.0, -600.0, 40.0, 400.0, 3000.0]]])
    lung, mediastinum, bone = CTWindow(("lung", "mediastinum", "bone"))(hu)
    level, width = CT_WINDOWS["lung"]
    expected = np.clip((np.array([-1000, -600, 40, 400, 3000]) - (level - width / 2)) / width, 0, 1)
    np.testing.assert_allclose(lung[0].numpy(), expected, atol=1e-6)
    assert mediastinum[0, 2] == pytest.approx((40 - (50 - 175)) / 350)
    assert bone[0, 0] == 0 and bone[0, -1] == 1
    custom = CTWindow((40, 80))(hu)  # the brain window as a (level, width) pair
    torch.testing.assert_close(custom, CTWindow("brain")(hu))


def test_ct_window_on_a_real_ct_slice():
    hu = LoadMedicalImage()(dicom_file("CT_small.dcm"))
    out = CTWindowd("image", windows=["lung", "Soft tissue", "bone"])({"image": hu})["image"]
    assert out.shape == (3, 128, 128) and out.min() >= 0 and out.max() <= 1
    # soft tissue saturates where the lung window still resolves: more pixels at 0 or 1 in the narrow window
    saturated = [float(((c == 0) | (c == 1)).float().mean()) for c in out]
    assert saturated[1] > saturated[0]


def test_ct_window_errors():
    with pytest.raises(ValueError, match="did you mean 'lung'"):
        CTWindow("lunh")
    with pytest.raises(ValueError, match="Give 1 to 3 CT windows"):
        CTWindow(["lung", "bone", "brain", "liver"])
    with pytest.raises(ValueError, match="must have a positive width"):
        CTWindow((40, 0))
    with pytest.raises(ValueError, match="need a one-channel image"):
        CTWindow(["lung", "bone"])(torch.zeros(3, 4, 4))
    assert CTWindow("lung")(torch.zeros(3, 4, 4)).shape == (3, 4, 4)  # one window: every channel (2.5D)


def test_invert_monochrome1_follows_metadata():
    x = MetaTensor(torch.tensor([[[0.0, 1.0, 4.0]]]), meta={"PhotometricInterpretation": "MONOCHROME1"})
    out = InvertMonochrome1()(x)
    torch.testing.assert_close(out.as_tensor(), torch.tensor([[[4.0, 3.0, 0.0]]]))
    assert out.meta["PhotometricInterpretation"] == "MONOCHROME2"
    plain = MetaTensor(torch.tensor([[[0.0, 1.0, 4.0]]]), meta={"PhotometricInterpretation": "MONOCHROME2"})
    assert InvertMonochrome1()(plain) is plain
    forced = InvertMonochrome1d("image", invert=True)({"image": np.array([[[0.0, 2.0]]])})["image"]
    np.testing.assert_array_equal(forced, [[[2.0, 0.0]]])


def test_speckle_robust_scaling_ignores_background_and_speckle():
    rng = np.random.default_rng(0)
    sector = rng.uniform(50, 150, (1, 64, 64)).astype(np.float32)
    sector[:, :, :16] = 0  # black background beside the sector
    speckled = sector.copy()
    speckled[0, rng.integers(0, 64, 20), rng.integers(16, 64, 20)] = 255  # isolated bright speckle
    scale = SpeckleRobustScaleIntensity(lower=1, upper=99)
    clean_out, speckled_out = scale(torch.from_numpy(sector)), scale(torch.from_numpy(speckled))
    assert clean_out.min() == 0 and clean_out.max() == 1
    inside = sector[0, :, 16:] > 0
    # the tissue range is set by the tissue: the median tissue value lands mid-range despite the background
    assert 0.35 < float(np.median(clean_out[0].numpy()[:, 16:][inside])) < 0.65
    # 20 speckle pixels barely move the scaling of the other pixels
    mask = speckled == sector
    np.testing.assert_allclose(speckled_out.numpy()[mask], clean_out.numpy()[mask], atol=0.03)
    d = SpeckleRobustScaleIntensityd("image")({"image": sector})["image"]
    assert isinstance(d, np.ndarray) and d.shape == sector.shape


def test_zscore_keeps_background_at_zero():
    x = torch.zeros(1, 10, 10)
    x[0, 2:8, 2:8] = torch.linspace(100, 300, 36).reshape(6, 6)
    out = ZScoreScaleIntensity(clip=3.0)(x)
    assert float(out[0, 0, 0]) == 0.0
    foreground = out[0, 2:8, 2:8]
    assert 0 < float(foreground.min()) < 0.5 < float(foreground.max()) < 1
    assert float(foreground.mean()) == pytest.approx(0.5, abs=1e-5)
    with pytest.raises(ValueError, match="clip must be positive"):
        ZScoreScaleIntensity(clip=0)


def test_speckle_percentiles_match_numpy():
    from monai_cilmp.transforms.intensity import _percentiles

    values = torch.from_numpy(np.random.default_rng(0).gamma(2.0, 30.0, 1001).astype(np.float32))
    q = (0.0, 1.0, 37.5, 99.0, 100.0)
    np.testing.assert_allclose(_percentiles(values, q), np.percentile(values.numpy(), q), rtol=1e-6)
    image = torch.from_numpy(np.random.default_rng(1).gamma(2.0, 30.0, (1, 40, 40)).astype(np.float32))
    scaled = SpeckleRobustScaleIntensity(lower=2, upper=98, radius=0, ignore_zeros=False)(image)
    low, high = np.percentile(image.numpy(), [2, 98])
    np.testing.assert_allclose(scaled.numpy(), np.clip((image.numpy() - low) / (high - low), 0, 1), atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_speckle_scaling_on_device(device):
    image = torch.from_numpy(np.random.default_rng(2).gamma(2.0, 30.0, (1, 32, 32)).astype(np.float32))
    image[:, :4] = 0
    expected = SpeckleRobustScaleIntensity()(image)
    out = SpeckleRobustScaleIntensity()(image.to(device))
    assert out.device.type == device
    torch.testing.assert_close(out.cpu(), expected, atol=1e-5, rtol=1e-5)
