"""KnowledgeBank: construction, safetensors + JSON storage, class checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import monai_cilmp
from monai_cilmp.knowledge import KnowledgeBank, KnowledgeClassMismatchError
from tests.conftest import CLASSES, random_bank


def test_round_trip_keeps_tensors_order_and_metadata(tmp_path):
    bank = random_bank(lengths=(5, 1, 9, 2), dim=384)
    path = bank.save(tmp_path / "sub" / "kb.safetensors")
    loaded = KnowledgeBank.load(path)
    assert loaded.class_names == CLASSES
    assert loaded.lengths == [5, 1, 9, 2] and loaded.dim == 384
    for name in CLASSES:
        assert torch.equal(loaded[name], bank[name])
    assert loaded.metadata["source_model"] == "random"
    assert loaded.metadata["texts"]["covid"] == "a description of covid"
    assert loaded.metadata["package_version"] == monai_cilmp.__version__
    assert loaded.metadata["path"] == str(path)
    assert [p.name for p in path.parent.iterdir()] == ["kb.safetensors"], "temporary file left behind"


def test_file_is_plain_safetensors_with_json_metadata(tmp_path):
    from safetensors import safe_open

    path = random_bank().save(tmp_path / "kb.safetensors")
    with safe_open(str(path), framework="np") as f:
        meta = json.loads(f.metadata()["monai_cilmp.knowledge"])
        assert sorted(f.keys()) == [f"knowledge.{i}" for i in range(4)]
    assert meta["class_names"] == CLASSES and meta["dim"] == 32


def test_from_numpy_and_padding():
    bank = KnowledgeBank.from_tensors({"b": np.ones((2, 3)), "a": np.zeros((4, 3), dtype=np.float16)}, mode="layers")
    padded, lengths = bank.padded(["a", "b"])
    assert padded.shape == (2, 4, 3) and padded.dtype == torch.float32
    assert lengths.tolist() == [4, 2]
    assert padded[1, 2:].abs().sum() == 0 and padded[1, :2].sum() == 6


def test_class_mismatch_message_lists_both_sides():
    bank = random_bank()
    with pytest.raises(KnowledgeClassMismatchError) as e:
        bank.check_classes(["normal lung", "melanoma"])
    msg = str(e.value)
    assert "missing ['melanoma']" in msg and "unexpected ['bacterial pneumonia', 'viral pneumonia', 'covid']" in msg


@pytest.mark.parametrize(
    "tensors, match",
    [
        ({}, "at least one class"),
        ({"a": torch.zeros(0, 4)}, "non-empty"),
        ({"a": torch.zeros(4)}, "non-empty"),
        ({"a": torch.zeros(2, 4), "b": torch.zeros(2, 5)}, "one hidden size"),
        ({"a": torch.full((2, 4), float("nan"))}, "NaN"),
    ],
)
def test_invalid_tensors_are_refused(tensors, match):
    with pytest.raises(ValueError, match=match):
        KnowledgeBank.from_tensors(tensors)


def test_missing_and_corrupt_files_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist: create it with `monai-cilmp knowledge extract"):
        KnowledgeBank.load(tmp_path / "nope.safetensors")
    corrupt = tmp_path / "bad.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="is not a monai-cilmp knowledge bank in safetensors format"):
        KnowledgeBank.load(corrupt)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="no monai_cilmp knowledge metadata"):
        KnowledgeBank.load(foreign)


def test_failed_save_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = random_bank(seed=1).save(tmp_path / "kb.safetensors")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        random_bank(seed=2).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["kb.safetensors"]


def test_a_bank_whose_header_size_starts_with_the_pickle_byte_loads(tmp_path):
    """A safetensors file begins with its header's size (8 bytes, little-endian): when the lowest byte is 0x80, the
    file starts like a pickle and must still load as the bank it is."""
    path = tmp_path / "kb.safetensors"
    for pad in range(256):  # the header grows by one byte per padding character: one length ends in 0x80
        bank = KnowledgeBank.from_tensors(
            {"a": torch.ones(2, 4), "b": torch.zeros(3, 4)}, source_model="random", texts={"a": "x" * pad, "b": "y"}
        )
        bank.save(path)
        if path.read_bytes()[:1] == b"\x80":
            break
    else:
        pytest.fail("no padding gave a header size whose lowest byte is 0x80")
    loaded = KnowledgeBank.load(path)
    assert loaded.class_names == ["a", "b"] and torch.equal(loaded["b"], torch.zeros(3, 4))
