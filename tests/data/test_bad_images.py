"""One rule for bad images: ``prepare --check``, ``train``, ``evaluate`` and ``predict`` refuse the same image with the
same sentence (the MONAI Label app reads through the same ``LoadMedicalImage``, so it applies the same rule)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from monai_cilmp.cli import main
from monai_cilmp.transforms import get_preset
from monai_cilmp.transforms.checks import image_problem
from monai_cilmp.transforms.readers import ImageReadError, LoadMedicalImage
from tests.test_faults import make_data, train_args

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def _restore_logging():
    """The commands configure logging from the bundle's logging.conf, whose handlers keep the stream of this test's
    captured stderr: put the loggers back as they were, so that later tests do not log into a closed stream."""
    import logging

    names = [None, *logging.root.manager.loggerDict]
    saved = {name: (list(logging.getLogger(name).handlers), logging.getLogger(name).disabled) for name in names}
    yield
    for name in [None, *logging.root.manager.loggerDict]:
        logger = logging.getLogger(name)
        logger.handlers, logger.disabled = saved.get(name, ([], False))


def write_bad_images(folder: Path) -> dict[str, str]:
    """``{file name: a fragment of the sentence that refuses it}``, written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((48, 48), 7, np.uint8)).save(folder / "blank.png")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(folder / "dot.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1, 64), dtype=np.uint8)).save(folder / "line.png")
    rng = np.random.default_rng(1)
    nib.save(nib.Nifti1Image(rng.random((16, 16, 4, 3)).astype(np.float32), np.eye(4)), folder / "time.nii.gz")
    nan = rng.random((16, 16, 4)).astype(np.float32)
    nan[2, 2, 2] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), folder / "nan.nii.gz")
    (folder / "text.png").write_text("not an image")
    np.save(folder / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return {
        "blank.png": "single intensity value",
        "dot.png": "degenerate image of 1x1",
        "line.png": "degenerate image of 1x64",
        "time.nii.gz": "has 4 dimensions",
        "nan.nii.gz": "NaN or infinite",
        "text.png": "corrupt or not a valid PNG",
        "pickled.npy": "pickled Python objects",
    }


def reader_sentence(path: Path) -> str:
    with pytest.raises(ImageReadError) as caught:
        LoadMedicalImage()(str(path))
    return str(caught.value)


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("monai-cilmp")]


def test_image_problem_rule():
    assert image_problem(np.random.rand(16, 16), "a.png") is None
    assert image_problem(np.random.rand(16, 16, 1), "one-slice.nii") is None  # a volume of one slice is a 2-D image
    assert image_problem(np.random.rand(3, 16, 16, 5), "clip.dcm", channel_dim=0) is None  # a colour clip
    assert "degenerate" in image_problem(np.random.rand(16, 2, 1), "thin.nii")
    assert "4 dimensions" in image_problem(np.random.rand(16, 16, 4, 2), "t.npy")
    assert "single intensity" in image_problem(np.zeros((16, 16)), "z.png")
    assert "NaN or infinite" in image_problem(np.full((16, 16), np.inf), "i.png")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    make_data(root)
    bad = write_bad_images(root / "bad")
    sentences = {name: reader_sentence(root / "bad" / name) for name in bad}
    for name, fragment in bad.items():
        assert str(root / "bad" / name) in sentences[name] and fragment in sentences[name], sentences[name]
    return root, sentences


def test_prepare_check_says_what_the_readers_say(project, capsys):
    root, sentences = project
    images = root / "check"
    shutil.copytree(root / "images", images)
    for name in sentences:
        shutil.copy(root / "bad" / name, images / "round red lesion" / name)
    out = root / "checked.json"
    capsys.readouterr()
    assert main(["prepare", "folder", str(images), "--out", str(out), "--check"]) == 2
    err = capsys.readouterr().err
    assert f"{len(sentences)} of {16 + len(sentences)} images" in err and not out.exists()
    for name, sentence in sentences.items():  # the pickled .npy is no longer left out silently
        assert sentence.replace(str(root / "bad"), str(images / "round red lesion")) in err, (name, err)


@pytest.mark.slow  # trains a run through the CLI
@pytest.mark.parametrize("name", ["blank.png", "time.nii.gz"])
def test_train_and_evaluate_refuse_with_the_same_sentence(project, name, capsys):
    root, sentences = project
    listing = json.loads((root / "datalist.json").read_text())
    bad = {"image": str(root / "bad" / name), "label": 0}
    (root / f"train-{name}.json").write_text(json.dumps(dict(listing, training=[*listing["training"], bad])))
    capsys.readouterr()
    assert main(train_args(root, root / f"run-{name}", root / f"train-{name}.json", "--batch-size", "32")) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].endswith(sentences[name]), lines
    # evaluate a trained run on a datalist whose test split holds the bad image
    run = root / "run"
    if not (run / "checkpoints" / "final.pt").exists():
        assert main(train_args(root, run)) == 0
    (root / f"test-{name}.json").write_text(json.dumps(dict(listing, test=[*listing["test"], bad])))
    capsys.readouterr()
    evaluate = ["evaluate", "--run", str(run), "--datalist", str(root / f"test-{name}.json"), "--threads", "1"]
    assert main(evaluate) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].endswith(sentences[name]), lines


@pytest.mark.slow  # trains a run through the CLI
def test_predict_skips_with_the_same_sentence(project, capsys):
    root, sentences = project
    run = root / "run"
    if not (run / "checkpoints" / "final.pt").exists():
        assert main(train_args(root, run)) == 0
    capsys.readouterr()
    assert main(["predict", "--run", str(run), str(root / "bad"), "--threads", "1"]) == 1
    err = capsys.readouterr().err
    assert "applying transform" not in err and "object at 0x" not in err
    for name, sentence in sentences.items():
        assert f"skipped: {sentence}" in err, (name, err)


def test_presets_refuse_what_the_reader_refuses(project):
    root, sentences = project
    pipeline = get_preset("ct").eval_transforms(keys=None, image_size=32)
    with pytest.raises(RuntimeError) as caught:
        pipeline(str(root / "bad" / "blank.png"))
    from monai_cilmp.transforms.readers import reader_error

    assert str(reader_error(caught.value)) == sentences["blank.png"]


def test_classes_in_another_order_are_refused(project, capsys):
    root, _ = project
    args = train_args(root, root / "order", None, "--classes", "round red lesion", "flat blue lesion")
    assert main(args) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "in another order" in lines[0] and "give them in that order" in lines[0], lines
