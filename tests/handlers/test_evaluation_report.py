"""The evaluation report written by a SupervisedEvaluator's handler: the same files and numbers as evaluate_split,
from the evaluator's own pass over the split."""

from __future__ import annotations

import json

import pytest
from ignite.metrics import Accuracy
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator

from monai_cilmp.engines import evaluate_split, scores_and_labels
from monai_cilmp.handlers import EvaluationReport, item_files
from tests.engines.test_trainer import CLASSES, make_net, toy_data


def _named(n, seed, folder):
    items = toy_data(n, seed=seed)
    for i, item in enumerate(items):
        item["image"] = MetaTensor(item["image"], meta={"filename_or_obj": f"{folder}/{i}.png"})
    return items


def _without_files(metrics):
    return {k: v for k, v in metrics.items() if k != "files"}


def test_the_handler_writes_what_evaluate_split_writes_in_one_pass(tmp_path):
    net = make_net().eval()
    test_items = _named(10, 2, "test")
    test = DataLoader(Dataset(test_items), batch_size=4, num_workers=0)
    val = DataLoader(Dataset(_named(8, 1, "val")), batch_size=4, num_workers=0)
    items = [{"image": f"test/{i}.png"} for i in range(10)]
    expected = evaluate_split(net, test, CLASSES, tmp_path / "split", items=items, calibration_loader=val, device="cpu")

    seen = []
    net.register_forward_hook(lambda module, args, out: seen.append(len(out)))
    report = EvaluationReport(CLASSES, tmp_path / "handler", calibration_loader=val)
    evaluator = SupervisedEvaluator(
        device="cpu",
        val_data_loader=test,
        network=net,
        key_val_metric={"accuracy": Accuracy(output_transform=scores_and_labels)},
        val_handlers=[report],
    )
    evaluator.run()
    assert sum(seen) == 10 + 8  # the test split once (the evaluator's pass), the validation split for calibration
    got = evaluator.state.evaluation_report
    assert got is report.report and _without_files(got) == _without_files(expected)
    assert got["accuracy"] == pytest.approx(evaluator.state.metrics["accuracy"])
    for name in ("test_metrics.json", "test_predictions.csv", "test_confusion.csv", "calibration.json"):
        ours, theirs = (tmp_path / "handler" / name).read_text(), (tmp_path / "split" / name).read_text()
        if name.endswith(".json"):
            ours, theirs = _without_files(json.loads(ours)), _without_files(json.loads(theirs))
        assert ours == theirs, name
    assert (tmp_path / "handler" / "test_reliability.png").is_file()
    assert (tmp_path / "handler" / "test_conformal.png").is_file()


def test_without_a_calibration_loader_the_stored_calibration_is_applied(tmp_path):
    net = make_net().eval()
    val = DataLoader(Dataset(_named(8, 1, "val")), batch_size=4, num_workers=0)
    evaluate_split(net, val, CLASSES, tmp_path, split="test", calibration_loader=val, device="cpu")  # calibration.json
    fitted = json.loads((tmp_path / "calibration.json").read_text())
    test = DataLoader(Dataset(_named(6, 3, "x")), batch_size=4, num_workers=0)
    report = EvaluationReport(CLASSES, tmp_path / "again", split="validation", calibration=tmp_path)
    SupervisedEvaluator(device="cpu", val_data_loader=test, network=net, val_handlers=[report]).run()
    assert report.report["calibration"]["temperature"] == pytest.approx(fitted["temperature"])
    assert not (tmp_path / "again" / "calibration.json").exists()  # validation is never calibrated on itself
    rows = (tmp_path / "again" / "validation_predictions.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[1].startswith("x/0.png,")


def test_item_files_reads_decollated_and_collated_batches():
    items = _named(3, 0, "f")
    assert item_files(items) == ["f/0.png", "f/1.png", "f/2.png"]
    assert item_files([{"image": 1}, {"image_meta_dict": {"filename_or_obj": "m.png"}}]) == [None, "m.png"]
    batch = next(iter(DataLoader(Dataset(items), batch_size=3)))
    assert item_files(batch) == ["f/0.png", "f/1.png", "f/2.png"]
