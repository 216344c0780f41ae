"""Array transforms accept what their ``backend`` declares (like MONAI's, they may answer a numpy input with a
MetaTensor); their dictionary variants and aliases exist."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.utils import TransformBackends

import monai_cilmp.transforms as T

ARRAY_TRANSFORMS = [
    (T.CTWindow(("lung", "bone")), np.linspace(-1000, 1000, 36, dtype=np.float32).reshape(1, 6, 6)),
    (T.InvertMonochrome1(invert=True), np.arange(36, dtype=np.float32).reshape(1, 6, 6)),
    (T.SpeckleRobustScaleIntensity(), np.arange(36, dtype=np.float32).reshape(1, 6, 6)),
    (T.ZScoreScaleIntensity(), np.arange(36, dtype=np.float32).reshape(1, 6, 6)),
    (T.ToGrayscale(), np.random.default_rng(0).random((3, 6, 6), dtype=np.float32)),
    (T.ToRGB(), np.random.default_rng(0).random((1, 6, 6), dtype=np.float32)),
    (T.PadToSquare(), np.random.default_rng(0).random((3, 4, 6), dtype=np.float32)),
    (T.ClipResize(8), np.random.default_rng(0).random((3, 4, 6), dtype=np.float32)),
    (T.FieldOfViewCrop(), np.random.default_rng(0).random((3, 6, 8), dtype=np.float32)),
    (T.SelectSlice(context=1), np.random.default_rng(0).random((1, 4, 5, 6), dtype=np.float32)),
    (T.HEStainNormalize(), np.random.default_rng(0).random((3, 8, 8), dtype=np.float32)),
]


@pytest.mark.parametrize("transform, array", ARRAY_TRANSFORMS, ids=lambda x: type(x).__name__)
def test_backends(transform, array):
    assert transform.backend
    from_tensor = transform(torch.from_numpy(array.copy()))
    assert isinstance(from_tensor, torch.Tensor)
    if TransformBackends.NUMPY in transform.backend:
        from_numpy = transform(array.copy())
        np.testing.assert_allclose(np.asarray(from_numpy), np.asarray(from_tensor), atol=1e-5)


def test_dictionary_variants_and_aliases():
    names = [n for n in T.__all__ if n.endswith("d") and n[:-1] in T.__all__]
    assert len(names) >= 13
    for name in names:
        assert getattr(T, f"{name[:-1]}D") is getattr(T, name) is getattr(T, f"{name[:-1]}Dict")
