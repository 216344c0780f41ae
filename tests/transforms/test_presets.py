"""Modality presets on real files: pydicom's CT and MR, nibabel's MRI volume, PneumoniaMNIST chest X-rays."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset

from monai_cilmp.data import DATASETS
from monai_cilmp.transforms import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    PRESETS,
    ToRGB,
    get_preset,
    list_presets,
)

from .conftest import dicom_file, nibabel_file, write_image

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
MEAN, STD = torch.tensor(OPENAI_CLIP_MEAN)[:, None, None], torch.tensor(OPENAI_CLIP_STD)[:, None, None]


def unnormalise(x: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    """The [0, 1] image a preset produced before CLIP's normalisation."""
    return x.as_tensor() * std + mean if hasattr(x, "as_tensor") else x * std + mean


def assert_clip_ready(x: torch.Tensor, size: int = 224) -> torch.Tensor:
    assert tuple(x.shape) == (3, size, size) and x.dtype == torch.float32
    unit = unnormalise(x)
    assert float(unit.min()) >= -1e-5 and float(unit.max()) <= 1 + 1e-5
    return unit


def test_registry_presets_and_names():
    assert set(list_presets()) == set(PRESETS)
    for spec in DATASETS.values():
        assert get_preset(spec.preset).name == spec.preset
    assert get_preset("xray").name == "radiography" and get_preset("microscopy").name == "histopathology"
    with pytest.raises(ValueError, match="did you mean 'dermoscopy'"):
        get_preset("dermoskopy")


def test_ct_preset_on_a_real_ct_slice():
    preset = get_preset("ct")
    out = preset.eval_transforms()({"image": dicom_file("CT_small.dcm")})["image"]
    lung, mediastinum, bone = assert_clip_ready(out)
    # the three windows see different tissue: the wide lung window is the least saturated
    saturation = [float(((c < 1e-3) | (c > 1 - 1e-3)).float().mean()) for c in (lung, mediastinum, bone)]
    assert saturation[0] < saturation[1]
    assert not torch.allclose(lung, bone)
    other = get_preset("ct", windows="brain").eval_transforms(keys=None, image_size=64, mean=(0.5,) * 3, std=(0.5,) * 3)
    x = other(dicom_file("CT_small.dcm"))
    assert x.shape == (3, 64, 64) and float(x.min()) >= -1 and float(x.max()) <= 1
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # one window repeated to three channels


def test_ct_preset_on_a_real_series_with_2_5d(tmp_path):
    series = os.path.join(os.path.dirname(dicom_file("CT_small.dcm")), "dicomdirtests", "77654033", "CT2")
    preset = get_preset("ct", windows="abdomen", context=1, slice_strategy="largest_foreground")
    out = preset.eval_transforms(image_size=32)({"image": series})["image"]
    unit = assert_clip_ready(out, 32)
    assert not torch.allclose(unit[0], unit[2])  # three adjacent, different slices as channels
    with pytest.raises(ValueError, match="give one CT window, got 3"):
        get_preset("ct", context=1)


@pytest.mark.parametrize("normalization", ["percentile", "zscore"])
def test_mri_preset_on_real_dicom_and_nifti(normalization):
    preset = get_preset("mri", normalization=normalization)
    pipeline = preset.eval_transforms(image_size=96)
    for path in (dicom_file("MR_small.dcm"), nibabel_file("anatomical.nii")):
        unit = assert_clip_ready(pipeline({"image": path})["image"], 96)
        if normalization == "percentile":
            assert float(unit.max()) > 0.9 and float(unit.min()) < 0.1  # the full range is used
    if normalization == "zscore":  # MR_small has no background: its mean maps to the middle of the range
        unit = unnormalise(pipeline({"image": dicom_file("MR_small.dcm")})["image"])
        assert float(unit.mean()) == pytest.approx(0.5, abs=0.03)
    volume = get_preset("mri", normalization=normalization, context=1).eval_transforms(image_size=96)
    channels = assert_clip_ready(volume({"image": nibabel_file("anatomical.nii")})["image"], 96)
    assert not torch.allclose(channels[0], channels[1])


def test_radiography_preset_on_real_dicom_and_monochrome1(monochrome1_dicom):
    pipeline = get_preset("radiography").eval_transforms(image_size=64)
    plain = assert_clip_ready(pipeline({"image": dicom_file("MR_small.dcm")})["image"], 64)
    inverted = assert_clip_ready(pipeline({"image": monochrome1_dicom})["image"], 64)
    # symmetric percentiles: a MONOCHROME1 image reads as the negative of the same pixels in MONOCHROME2
    torch.testing.assert_close(inverted, 1 - plain, atol=1e-4, rtol=0)
    torch.testing.assert_close(plain[0], plain[1])  # gray repeated to three channels


def test_radiography_never_flips_and_photos_do():
    def flips(preset_name):
        pipeline = get_preset(preset_name).train_transforms()
        return sorted(
            {ax for t in pipeline.transforms if type(t).__name__ == "RandFlipd" for ax in [t.flipper.spatial_axis]}
        )

    assert flips("radiography") == [] and flips("ct") == [] and flips("mri") == []
    assert flips("dermoscopy") == [0, 1] and flips("histopathology") == [0, 1]
    assert flips("ultrasound") == [1] and flips("fundus") == [1]  # no vertical flips


def _pneumoniamnist():
    path = SHARED_DATA / "pneumoniamnist.npz"
    if not path.exists():
        pytest.skip(f"{path} is not available (it is only on development machines)")
    with np.load(path) as data:
        return data["train_images"], data["train_labels"].reshape(-1)


def test_real_chest_xrays_through_the_radiography_preset(tmp_path):
    images, labels = _pneumoniamnist()
    picks = [i for label in (0, 1) for i in np.flatnonzero(labels == label)[:6]]
    items = [{"image": write_image(tmp_path / f"{i}.png", images[i]), "label": int(labels[i])} for i in picks]
    preset = get_preset("radiography")
    loader = DataLoader(Dataset(items, preset.eval_transforms()), batch_size=4)
    batches = list(loader)
    assert [tuple(b["image"].shape) for b in batches] == [(4, 3, 224, 224)] * 3
    for batch in batches:
        for x in batch["image"]:
            unit = assert_clip_ready(x)
            assert float(unit.min()) < 0.05 and float(unit.max()) > 0.95  # percentiles stretch to the full range
    assert torch.cat([b["label"] for b in batches]).tolist() == [int(labels[i]) for i in picks]
    # the robust percentile scaling makes the output independent of exposure (gain and offset of the detector)
    array = preset.eval_transforms(keys=None, load=False)
    x = torch.from_numpy(images[picks[0]].astype(np.float32))[None]
    torch.testing.assert_close(array(x), array(x * 0.5 + 20), atol=1e-4, rtol=0)
    # training is seeded, augments, and keeps the output CLIP-ready
    train = preset.train_transforms(keys=None, load=False).set_random_state(0)
    outs = [train(x) for _ in range(4)]
    assert any(not torch.allclose(o, array(x)) for o in outs)
    for o in outs:
        assert_clip_ready(o)


@pytest.mark.parametrize("name", ["dermoscopy", "endoscopy", "fundus", "histopathology", "ultrasound"])
def test_photo_presets_on_png_and_jpg(tmp_path, name):
    rng = np.random.default_rng(0)
    photo = (rng.uniform(0, 1, (48, 64, 3)) * np.linspace(0.3, 1, 64)[None, :, None] * 255).astype(np.uint8)
    paths = [write_image(tmp_path / "a.png", photo), write_image(tmp_path / "b.jpg", photo)]
    preset = get_preset(name, **({"stain_normalization": True} if name == "histopathology" else {}))
    evaluate = preset.eval_transforms(image_size=32)
    train = preset.train_transforms(image_size=32)
    for path in paths:
        unit = assert_clip_ready(evaluate({"image": path})["image"], 32)
        assert float(unit.std()) > 0.01
        first = train.set_random_state(7)({"image": path})["image"]
        second = train.set_random_state(7)({"image": path})["image"]
        torch.testing.assert_close(first, second)
        assert_clip_ready(first, 32)


def test_presets_feed_a_cilmp_network(tmp_path, tiny_backbone, bank):
    """Datalist items -> preset built from the network's own size and normalisation -> logits."""
    from monai_cilmp.networks import CILMP
    from tests.conftest import CLASSES

    net = CILMP(CLASSES, bank, tiny_backbone).eval()
    items = [{"image": dicom_file("CT_small.dcm"), "label": 0}, {"image": nibabel_file("anatomical.nii"), "label": 1}]
    preset = get_preset("ct", windows=("lung", "mediastinum", "bone"))
    pipeline = preset.eval_transforms(image_size=net.image_size, mean=net.image_mean, std=net.image_std)
    batch = next(iter(DataLoader(Dataset(items, pipeline), batch_size=2)))
    with torch.no_grad():
        logits = net(batch["image"].as_tensor())
    assert logits.shape == (2, len(CLASSES)) and torch.isfinite(logits).all()


def test_to_rgb_is_the_last_channel_step():
    for name in list_presets():
        names = [type(t).__name__ for t in get_preset(name).eval_transforms().transforms]
        assert names[-3:] == ["ToRGBd", "NormalizeIntensityd", "EnsureTyped"]
        assert names[0] == "LoadMedicalImaged"
    assert ToRGB()(torch.zeros(1, 2, 2)).shape == (3, 2, 2)
