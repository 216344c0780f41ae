"""Knowledge extraction with tiny random causal-LM and encoder models: modes, layers, caps, templates, provenance."""

from __future__ import annotations

import shutil

import pytest
import torch

from monai_cilmp.knowledge import (
    KnowledgeBank,
    KnowledgeExtractor,
    extract_knowledge,
    generation_prompt,
    knowledge_length_cap,
)
from monai_cilmp.knowledge.embedded import sha256_file

TEXTS = {
    "bacterial pneumonia": "bacterial pneumonia shows a dense white patch in one lobe",
    "viral pneumonia": "viral pneumonia shows hazy streaks",
    "polyp": "a red round polyp",
}


@pytest.fixture(scope="module")
def llama(tiny_models) -> KnowledgeExtractor:
    return KnowledgeExtractor.from_pretrained(tiny_models["llama"], device="cpu")


@pytest.fixture(scope="module")
def bert(tiny_models) -> KnowledgeExtractor:
    return KnowledgeExtractor.from_pretrained(tiny_models["bert"], device="cpu")


def _states(extractor: KnowledgeExtractor, ids: list[int]) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return extractor.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states


@pytest.mark.parametrize("which, width, specials", [("llama", 24, {"<s>"}), ("bert", 20, {"[CLS]", "[SEP]"})])
def test_tokens_mode_holds_the_description_tokens_only(which, width, specials, request):
    extractor = request.getfixturevalue(which)
    bank = extractor.extract(TEXTS)
    assert bank.class_names == list(TEXTS) and bank.dim == width
    for name, text in TEXTS.items():
        own = extractor.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert bank.metadata["tokens"][name] == extractor.tokenizer.convert_ids_to_tokens(own)
        assert bank[name].shape == (len(own), width)
        assert not specials & set(bank.metadata["tokens"][name])


def test_layer_choice_indexes_hidden_states(llama):
    text = TEXTS["polyp"]
    ids = llama.tokenizer(text)["input_ids"]
    assert llama.tokenizer.convert_ids_to_tokens(ids[0]) == "<s>"
    states = _states(llama, ids)
    assert len(states) == 4  # embeddings + 3 blocks
    for layer in (0, 1, 2, -1, -4):
        bank = llama.extract({"polyp": text}, layer=layer)
        torch.testing.assert_close(bank["polyp"], states[layer][0, 1:])
        assert bank.metadata["layer"] == layer % 4 and bank.metadata["layer_requested"] == layer
    embeddings = llama.model.get_input_embeddings()(torch.tensor(ids[1:]))
    torch.testing.assert_close(llama.extract({"polyp": text}, layer=0)["polyp"], embeddings.detach())
    assert not torch.allclose(llama.extract({"polyp": text}, layer=1)["polyp"], embeddings.detach())
    with pytest.raises(ValueError, match="layer 4 is out of range.*4 hidden states"):
        llama.extract({"polyp": text}, layer=4)


def test_layers_mode_takes_the_last_token_of_every_block(llama, bert):
    for extractor, blocks in ((llama, 3), (bert, 2)):
        bank = extractor.extract(TEXTS, mode="layers")
        assert bank.lengths == [blocks] * 3 and bank.metadata["mode"] == "layers"
        assert "embedding output 0 is not included" in bank.metadata["layers"]
        ids = extractor.tokenizer(TEXTS["polyp"])["input_ids"]
        states = _states(extractor, ids)
        torch.testing.assert_close(bank["polyp"], torch.stack([s[0, -1] for s in states[1:]]))
        assert bank.metadata["tokens"]["polyp"] == extractor.tokenizer.convert_ids_to_tokens(ids[-1:])
    with pytest.raises(ValueError, match="mode 'tokens' only"):
        llama.extract(TEXTS, mode="layers", layer=2)


def test_context_cap_and_max_length(llama):
    name, text = "polyp", " ".join([TEXTS["bacterial pneumonia"]] * 6)
    total = len(llama.tokenizer(text, add_special_tokens=False)["input_ids"])
    cap = knowledge_length_cap(name)
    assert total > cap
    full = llama.extract({name: text})
    assert full.lengths == [cap] and full.metadata["truncated"][name] == total - cap
    assert full.metadata["context"]["caps"][name] == cap
    wide = llama.extract({name: text}, n_ctx=40)
    assert wide.lengths == [knowledge_length_cap(name, n_ctx=40)]
    short = llama.extract({name: text}, max_length=5)
    assert short.lengths == [5]
    torch.testing.assert_close(short[name], full[name][:5])  # causal: the first tokens do not see the cut
    with pytest.raises(ValueError, match="max_length must be at least 1"):
        llama.extract({name: text}, max_length=0)


def test_chat_template_wraps_the_text_but_keeps_only_its_tokens(llama, bert):
    plain = llama.extract(TEXTS)
    chat = llama.extract(TEXTS, chat_template=True)
    name = "viral pneumonia"
    model_input = chat.metadata["model_inputs"][name]
    assert model_input == f"<s><|user|>\n{TEXTS[name]}</s><|assistant|>\n" and chat.metadata["chat_template"]
    assert chat.metadata["tokens"] == plain.metadata["tokens"]
    ids = llama.tokenizer(model_input, add_special_tokens=False)["input_ids"]
    states = _states(llama, ids)
    start = ids.index(llama.tokenizer.convert_tokens_to_ids("<|user|>")) + 2  # after "<|user|>" and the newline
    torch.testing.assert_close(chat[name], states[-1][0, start : start + chat.lengths[1]])
    assert not torch.allclose(chat[name], plain[name])  # the template is context for a causal LM
    with pytest.raises(ValueError, match="has no chat template"):
        bert.extract(TEXTS, chat_template=True)


@pytest.mark.parametrize("which", ["llama", "bert"])
@pytest.mark.parametrize("mode", ["tokens", "layers"])
def test_batched_equals_unbatched(which, mode, request):
    extractor = request.getfixturevalue(which)
    one = extractor.extract(TEXTS, mode=mode, batch_size=1)
    many = extractor.extract(TEXTS, mode=mode, batch_size=3)
    for name in TEXTS:
        torch.testing.assert_close(many[name], one[name], atol=1e-5, rtol=1e-5)


def test_two_runs_are_identical_and_record_provenance(tiny_models, tmp_path):
    folder = tiny_models["llama"]
    banks = [extract_knowledge(descriptions=TEXTS, model=folder, device="cpu") for _ in range(2)]
    for name in TEXTS:
        assert torch.equal(banks[0][name], banks[1][name])
    path = banks[0].save(tmp_path / "kb.safetensors")
    meta = KnowledgeBank.load(path).metadata
    assert meta == {**banks[1].metadata, "path": str(path)}
    assert meta["source_model"] == str(folder) and meta["model_path"] == str(folder.resolve())
    assert meta["weights_sha256"] == {"model.safetensors": sha256_file(folder / "model.safetensors")}
    assert meta["model_class"] == "LlamaModel" and meta["model_type"] == "llama"
    assert (meta["mode"], meta["layer"], meta["num_hidden_states"]) == ("tokens", 3, 4)
    assert meta["texts"] == TEXTS and meta["description_sources"] == dict.fromkeys(TEXTS, "given")
    assert set(meta["library_versions"]) >= {"torch", "transformers", "monai_cilmp"}
    assert (meta["device"], meta["dtype"]) == ("cpu", "fp32")


def test_generate_writes_descriptions_deterministically(tiny_models):
    classes = ["polyp", "viral pneumonia"]
    banks = [
        extract_knowledge(classes, model=tiny_models["llama"], generate=True, max_new_tokens=6, device="cpu")
        for _ in range(2)
    ]
    meta = banks[0].metadata
    generation = meta["generation"]
    assert generation["prompts"] == {c: generation_prompt(c) for c in classes}
    assert generation["prompts"]["polyp"] == "In a medical image, describe the distinctive visual features of polyp."
    assert (generation["do_sample"], generation["num_beams"], generation["max_new_tokens"]) == (False, 1, 6)
    assert meta["texts"] == banks[1].metadata["texts"] and all(meta["texts"].values())
    assert meta["description_sources"]["polyp"] == f"generated:{tiny_models['llama']}"
    for c in classes:
        assert torch.equal(banks[0][c], banks[1][c])
        assert len(llama_tokens := meta["tokens"][c]) == banks[0][c].shape[0] and llama_tokens


def test_generate_needs_a_language_model_head(llama):
    with pytest.raises(ValueError, match="cannot generate text"):
        llama.generate_descriptions(["polyp"])


def test_bf16_loading_gives_float32_knowledge(tiny_models):
    bank = extract_knowledge(descriptions=TEXTS, model=tiny_models["bert"], device="cpu", dtype="bf16")
    assert bank.metadata["dtype"] == "bf16" and bank["polyp"].dtype == torch.float32


def test_missing_model_folder_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="Model folder .* does not exist"):
        KnowledgeExtractor.from_pretrained(tmp_path / "nope")


def test_hub_model_from_the_cache_records_commit_and_blob_hashes(tiny_models, tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--tiny-bert"
    snapshot, blobs = repo / "snapshots" / commit, repo / "blobs"
    for folder in (repo / "refs", snapshot, blobs):
        folder.mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    for file in tiny_models["bert"].iterdir():
        blob = blobs / sha256_file(file)
        shutil.copy(file, blob)
        (snapshot / file.name).symlink_to(blob)
    extractor = KnowledgeExtractor.from_pretrained("org/tiny-bert", offline=True, cache_dir=tmp_path, device="cpu")
    meta = extractor.provenance
    assert (meta["source_model"], meta["revision"], meta["model_path"]) == ("org/tiny-bert", commit, str(snapshot))
    assert meta["weights_sha256"] == {"model.safetensors": sha256_file(tiny_models["bert"] / "model.safetensors")}
    with pytest.raises(FileNotFoundError, match="Could not load 'org/absent'.*download it first"):
        KnowledgeExtractor.from_pretrained("org/absent", offline=True, cache_dir=tmp_path)
