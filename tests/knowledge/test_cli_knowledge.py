"""``monai-cilmp knowledge``: sub-commands with tiny models, and one-sentence errors."""

from __future__ import annotations

import json

import pytest

from monai_cilmp.cli import main
from monai_cilmp.knowledge import KnowledgeBank


def test_help_lists_the_subcommands(capsys):
    assert main(["knowledge"]) == 0
    out = capsys.readouterr().out
    assert all(word in out for word in ("extract", "show", "attributes"))
    assert main([]) == 0 and "knowledge" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["extract", "--dataset", "kvasr", "--out", "x"],
            "Unknown dataset 'kvasr'",
        ),
        (["extract", "--dataset", "busi", "--classes", "cyst", "--out", "x"], "valid classes: 'normal', 'malignant'"),
        (["extract", "--out", "x"], "Say which classes"),
        (["extract", "--dataset", "busi", "--descriptions", "d.json", "--out", "x"], "not both"),
        (["extract", "--descriptions", "d.json", "--generate", "--out", "x"], "--generate writes the descriptions"),
        (["extract", "--classes", "a", "--model", "./no/such/model", "--out", "x"], "Model folder './no/such/model'"),
        (["extract", "--classes", "a", "--mode", "layers", "--layer", "2", "--out", "x"], "--mode tokens only"),
        (["show", "missing.safetensors"], "does not exist"),
        (["attributes", "--classes", "a", "--mlm", "m", "--vqa", "v", "--out", "x"], "--vqa and --images go together"),
    ],
)
def test_errors_are_one_sentence(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.json").write_text(json.dumps({"a": "text"}))
    assert main(["knowledge", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("monai-cilmp knowledge: error: ") and message in err and err.count("\n") == 1


def test_extract_with_a_causal_llm_and_show(tiny_models, tmp_path, capsys):
    out = tmp_path / "kb.safetensors"
    argv = ["knowledge", "extract", "--classes", "polyp", "covid", "--model", str(tiny_models["llama"])]
    argv += ["--out", str(out), "--chat-template", "--layer", "2", "--max-length", "3", "--device", "cpu"]
    assert main(argv) == 0
    assert "chat template" in capsys.readouterr().out
    bank = KnowledgeBank.load(out)
    assert bank.lengths == [3, 3] and bank.dim == 24 and bank.metadata["layer"] == 2
    assert bank.metadata["chat_template"] and bank.metadata["context"]["max_length"] == 3
    assert main(["knowledge", "show", str(out), "--tokens"]) == 0
    shown = capsys.readouterr().out
    assert "tokens at layer 2 of 0..3" in shown and str(tiny_models["llama"]) in shown and "      [" in shown
    assert main(["knowledge", "show", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layer"] == 2


def test_generate_through_the_cli(tiny_models, tmp_path, capsys):
    out = tmp_path / "kb.safetensors"
    argv = ["knowledge", "extract", "--dataset", "odir2", "--generate", "--max-new-tokens", "5"]
    argv += ["--model", str(tiny_models["llama"]), "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    assert "the model writes each description first" in capsys.readouterr().out
    meta = KnowledgeBank.load(out).metadata
    assert meta["generation"]["prompts"]["cataract"] == (
        "In a colour fundus photograph, describe the distinctive visual features of cataract."
    )
    assert set(meta["description_sources"].values()) == {f"generated:{tiny_models['llama']}"}


def test_attributes_then_extract_from_them(tiny_models, images, tmp_path, capsys):
    out = tmp_path / "attributes.json"
    argv = ["knowledge", "attributes", "--dataset", "kvasir", "--classes", "polyps", "normal cecum", "--synonyms"]
    argv += ["--mlm", str(tiny_models["mlm"]), "--vqa", str(tiny_models["blip"]), "--images", str(images)]
    argv += ["--out", str(out), "--cache", str(tmp_path / "cache"), "--top-k", "2", "--device", "cpu"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "hybrid with VQA" in printed and f"Wrote {out}" in printed
    result = json.loads(out.read_text())
    assert list(result["classes"]) == ["polyps", "normal cecum"]
    assert result["classes"]["polyps"]["noun"] == "bump"  # the first curated synonym
    assert len(result["classes"]["polyps"]["images"]) == 3 and len(result["classes"]["polyps"]["prompts"]) == 2
    assert any((tmp_path / "cache").rglob("*.json"))

    bank_path = tmp_path / "kb.safetensors"
    argv = ["knowledge", "extract", "--descriptions", str(out), "--model", str(tiny_models["bert"])]
    assert main([*argv, "--out", str(bank_path), "--device", "cpu"]) == 0
    bank = KnowledgeBank.load(bank_path)
    assert bank.metadata["texts"] == {n: e["description"] for n, e in result["classes"].items()}
    assert set(bank.metadata["description_sources"].values()) == {"file:attributes.json"}


def test_extract_keeps_hostile_class_names_as_data(tiny_models, tmp_path, monkeypatch):
    """Class names that look like MONAI config code (or contain quotes and non-ASCII letters) are only names."""
    monkeypatch.chdir(tmp_path)
    names = ["$__import__('os').system('touch PWNED')", '@recipe %m #id "q" naïve']
    descriptions = tmp_path / "descriptions.json"
    descriptions.write_text(json.dumps({n: f"the look of {n}" for n in names}, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "kb.safetensors"
    argv = ["knowledge", "extract", "--descriptions", str(descriptions), "--model", str(tiny_models["llama"])]
    assert main([*argv, "--out", str(out), "--max-length", "4", "--device", "cpu"]) == 0
    assert KnowledgeBank.load(out).class_names == names
    assert main(["knowledge", "show", str(out)]) == 0
    assert not list(tmp_path.rglob("PWNED"))
