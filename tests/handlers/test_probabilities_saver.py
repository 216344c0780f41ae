"""Per-image calibrated probabilities and prediction sets saved from an evaluator's post-processed outputs."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.transforms import AsDiscreted, Compose, CopyItemsd

from monai_cilmp.engines import fit_calibration, predict_logits
from monai_cilmp.handlers import ProbabilitiesSaver
from monai_cilmp.transforms import CalibratedProbabilitiesd
from tests.engines.test_trainer import CLASSES, make_net, toy_data


def _unlabelled(n):
    return [
        {"image": MetaTensor(item["image"], meta={"filename_or_obj": f"in/{i}.png"})}
        for i, item in enumerate(toy_data(n, seed=4))
    ]


def _evaluate(net, loader, postprocessing, saver):
    SupervisedEvaluator(
        device="cpu", val_data_loader=loader, network=net, postprocessing=postprocessing, val_handlers=[saver]
    ).run()


def test_probabilities_and_sets_of_every_image_with_a_header(tmp_path):
    net = make_net().eval()
    loader = DataLoader(Dataset(_unlabelled(6)), batch_size=4, num_workers=0)
    logits, _ = predict_logits(net, loader, "cpu")
    calibration = fit_calibration(logits, np.array([0, 1, 0, 1, 0, 1]), alpha=0.3)
    post = Compose(
        [
            CalibratedProbabilitiesd("pred", calibration),
            CopyItemsd("pred", names="probabilities"),
            AsDiscreted("pred", argmax=True),
        ]
    )
    _evaluate(net, loader, post, ProbabilitiesSaver(tmp_path / "probabilities.csv", CLASSES))
    rows = list(csv.DictReader((tmp_path / "probabilities.csv").open()))
    assert [r["image"] for r in rows] == [f"in/{i}.png" for i in range(6)]
    probs = np.array([[float(r[f"p({c})"]) for c in CLASSES] for r in rows])
    expected = calibration.probabilities(logits)
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    assert [r["predicted"] for r in rows] == [CLASSES[i] for i in expected.argmax(1)]
    sets = calibration.prediction_sets(expected)
    assert [r["prediction_set"] for r in rows] == ["|".join(c for c, m in zip(CLASSES, s) if m) for s in sets]


def test_plain_softmax_has_no_set_column_and_a_missing_key_is_one_sentence(tmp_path):
    net = make_net().eval()
    loader = DataLoader(Dataset(_unlabelled(3)), batch_size=4, num_workers=0)
    post = Compose([CalibratedProbabilitiesd("pred"), CopyItemsd("pred", names="probabilities")])
    _evaluate(net, loader, post, ProbabilitiesSaver(tmp_path / "p.csv", CLASSES))
    header = (tmp_path / "p.csv").read_text().splitlines()[0]
    assert header == f"image,predicted,p({CLASSES[0]}),p({CLASSES[1]})"
    with pytest.raises(ValueError, match="has no 'probabilities'"):
        _evaluate(net, loader, None, ProbabilitiesSaver(tmp_path / "q.csv", CLASSES))
