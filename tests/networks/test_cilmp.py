"""The CILMP network: the method of docs/method.md, exactly, and everything around it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_cilmp.knowledge import KnowledgeBank, KnowledgeClassMismatchError
from monai_cilmp.networks import CILMP, IVLP, load_backbone
from tests.conftest import CLASSES, random_bank


def build(backbone, bank, **kwargs) -> CILMP:
    torch.manual_seed(1)
    return CILMP(CLASSES[: len(bank)], bank, backbone, **kwargs)


def images(n=4, size=64, seed=0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ----- a naive, loop-per-sample/class/position reading of docs/method.md, at the full 77-token context ---------------


def _phi(module, h: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
    """phi(h; z) = h + (W [h ; a(z) * h] + b - h R) R^T  (dropout off)."""
    r = module.rotation
    if z is None:
        source = module.source.weight @ h + module.source.bias
    else:
        a = module.condition[1](module.condition[0](z))
        source = module.source.weight @ torch.cat([h, a * h]) + module.source.bias
    return h + (source - h @ r) @ r.T


def naive_logits(
    net: CILMP, backbone, bank: KnowledgeBank | None, x: torch.Tensor, p: int = 4, s: int = 4
) -> torch.Tensor:
    visual, tower = backbone.model.visual, net.text_tower
    tokenizer = backbone.tokenizer
    depth_v = 0 if net.vision_prompts is None else net.vision_prompts.shape[0]
    logits = torch.zeros(x.shape[0], len(net.class_names))
    for b in range(x.shape[0]):
        # image: CLS + patches + positions, prompts appended before ln_pre, replaced at layers 1..depth-1
        seq = visual.conv1(x[b : b + 1]).flatten(2).transpose(1, 2)
        seq = torch.cat([visual.class_embedding.view(1, 1, -1), seq], dim=1) + visual.positional_embedding
        n_v = 0 if net.vision_prompts is None else net.vision_prompts.shape[1]
        if n_v:
            seq = torch.cat([seq, net.vision_prompts[0][None]], dim=1)
        seq = visual.ln_pre(seq)
        for j, block in enumerate(visual.transformer.resblocks):
            if n_v and 0 < j < depth_v:
                seq = torch.cat([seq[:, :-n_v], net.vision_prompts[j][None]], dim=1)
            seq = block(seq)
        z = F.normalize(visual.ln_post(seq[:, 0]) @ visual.proj, dim=-1)[0]
        for c, name in enumerate(net.class_names):
            knowledge = bank[name] if bank is not None else torch.zeros(0, 1)
            length = knowledge.shape[0]
            ids = [tokenizer.sot_token_id] + [0] * (net.n_ctx + length) + tokenizer.encode(f"{name}.")
            ids = ids + [tokenizer.eot_token_id]
            eot = len(ids) - 1
            ids = ids + [0] * (77 - len(ids))
            text = backbone.model.token_embedding(torch.tensor(ids))[None]
            for j, block in enumerate(tower.transformer.resblocks):
                if j < net.text_prompt_depth:
                    start = 1 + net.n_ctx
                    text = text.clone()
                    text[0, 1:start] = net.text_prompts[j]
                if j < net.text_prompt_depth and bank is not None and j < net.knowledge_depth:
                    layer = net.knowledge.layers[j]
                    tokens = []
                    for pos in range(length):
                        h = knowledge[pos]
                        zz = z if net.conditional else None
                        if pos < min(p, length):
                            h = _phi(layer.prefix, h, zz)
                        elif pos >= length - s:
                            h = _phi(layer.suffix, h, zz)
                        tokens.append(layer.projection.up @ (layer.projection.down @ h))
                    text[0, start : start + length] = torch.stack(tokens)
                if j == 0:
                    text = text + tower.positional_embedding
                text = block(text, attn_mask=backbone.model.attn_mask)
            t = F.normalize(tower.ln_final(text)[0, eot] @ tower.text_projection, dim=-1)
            logits[b, c] = net.logit_scale.exp() * z @ t
    return logits


@pytest.mark.parametrize("conditional", [True, False])
def test_matches_naive_reading_of_the_method(tiny_backbone, conditional):
    # uneven lengths, including one shorter than prefix + suffix and the reference's NaN case (equal first/last)
    bank = random_bank(lengths=(16, 3, 9, 16))
    net = build(tiny_backbone, bank, conditional=conditional).eval()
    x = images(2)
    with torch.no_grad():
        expected = naive_logits(net, tiny_backbone, bank, x)
        got = net(x)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_shallow_knowledge_and_no_knowledge_match_the_naive_reading(tiny_backbone):
    """``knowledge_depth=1``: knowledge tokens only at the input; ``knowledge=None`` (IVLP): context prompts only."""
    bank = random_bank(lengths=(6, 3, 9, 5))
    x = images(2)
    shallow = build(tiny_backbone, bank, knowledge_depth=1, text_prompt_depth=4, vision_prompt_depth=3).eval()
    assert len(shallow.knowledge.layers) == 1
    ivlp = IVLP(CLASSES, tiny_backbone, text_prompt_depth=4, vision_prompt_depth=3).eval()
    assert ivlp.knowledge is None and not ivlp.conditional and ivlp.knowledge_metadata == {}
    with torch.no_grad():
        torch.testing.assert_close(shallow(x), naive_logits(shallow, tiny_backbone, bank, x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ivlp(x), naive_logits(ivlp, tiny_backbone, None, x), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"knowledge_depth must be between 1 and text_prompt_depth \(4\)"):
        build(tiny_backbone, bank, knowledge_depth=5, text_prompt_depth=4)


def test_output_shape_finite_and_exposed_attributes(tiny_backbone, bank):
    net = build(tiny_backbone, bank)
    out = net(images(3))
    assert out.shape == (3, 4) and torch.isfinite(out).all()
    assert net.class_names == CLASSES and net.image_size == 64
    assert len(net.image_mean) == 3 and len(net.image_std) == 3


def test_only_intended_parameters_train_and_backbone_is_unchanged(tiny_backbone, bank):
    net = build(tiny_backbone, bank)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable, "nothing to train"
    assert all(n in ("text_prompts", "vision_prompts") or n.startswith("knowledge.layers.") for n in trainable)
    frozen_before = {n: p.detach().clone() for n, p in net.named_parameters() if not p.requires_grad}
    assert any(n.startswith("text_tower.") for n in frozen_before)
    assert any(n.startswith("vision_tower.") for n in frozen_before)
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    trained_before = net.trainable_state_dict()
    for _ in range(2):
        loss = F.cross_entropy(net(images(4)), torch.tensor([0, 1, 2, 3]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for n, p in net.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen_before[n]), f"frozen parameter {n} changed"
    assert any(not torch.equal(v, trained_before[k]) for k, v in net.trainable_state_dict().items())


def test_clip_is_not_duplicated(tiny_backbone, bank):
    net = build(tiny_backbone, bank)
    clip_params = sum(p.numel() for p in tiny_backbone.model.parameters())
    frozen = sum(p.numel() for p in net.parameters() if not p.requires_grad)
    assert frozen <= clip_params
    assert net.text_tower.transformer is tiny_backbone.model.transformer
    assert net.vision_tower.visual is tiny_backbone.model.visual


def test_gradients_reach_every_trainable_group(tiny_backbone, bank):
    net = build(tiny_backbone, bank)
    loss = F.cross_entropy(net(images(4)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for name, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_conditional_prompts_depend_on_the_image_and_unconditional_do_not(tiny_backbone, bank):
    x = images(2)
    net = build(tiny_backbone, bank, conditional=True).eval()
    with torch.no_grad():
        text = net.encode_prompts(net.encode_image(x))
    assert text.shape[:2] == (2, 4)
    assert not torch.allclose(text[0], text[1])

    flat = build(tiny_backbone, bank, conditional=False).eval()
    with torch.no_grad():
        shared = flat.encode_prompts(None)
        logits = flat(x)
    assert shared.shape[:2] == (1, 4)
    torch.testing.assert_close(logits, flat.logit_scale.exp() * flat.encode_image(x) @ shared[0].T)
    assert sum(p.numel() for p in flat.parameters() if p.requires_grad) < sum(
        p.numel() for p in net.parameters() if p.requires_grad
    )


@pytest.mark.parametrize("lengths", [(1, 1, 1, 1), (2, 30, 5, 8), (16, 16, 16, 16)])
def test_variable_knowledge_lengths(tiny_backbone, lengths):
    bank = random_bank(lengths=lengths)
    net = build(tiny_backbone, bank)
    out = net(images(2))
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_padding_never_reaches_the_prompt(tiny_backbone):
    """Garbage beyond a class's length must not change anything: the reference read uninitialised padding."""
    bank = random_bank(lengths=(16, 3, 9, 12))
    net = build(tiny_backbone, bank).eval()
    x = images(2)
    with torch.no_grad():
        before = net(x)
        net.knowledge.bank[~net.knowledge.valid] = float("nan")
        after = net(x)
    torch.testing.assert_close(after, before)


def test_truncated_context_gives_identical_logits(tiny_backbone, bank):
    truncated = build(tiny_backbone, bank).eval()
    full = build(tiny_backbone, bank, truncate_context=False).eval()
    full.load_trainable_state_dict(truncated.trainable_state_dict())
    assert truncated.prompt_embeddings.shape[1] < full.prompt_embeddings.shape[1] == 77
    x = images(3)
    with torch.no_grad():
        torch.testing.assert_close(truncated(x), full(x), rtol=1e-5, atol=1e-5)


def test_trainable_state_round_trip(tiny_backbone, bank, tmp_path):
    from safetensors.torch import load_file, save_file

    net = build(tiny_backbone, bank).eval()
    save_file(net.trainable_state_dict(), tmp_path / "state.safetensors")
    torch.manual_seed(2)  # another initialisation of what trains (the random backbone's weights have their own seed)
    other = CILMP(CLASSES[: len(bank)], bank, load_backbone("CILMP-Tiny", None)).eval()
    frozen = {k: v for k, v in net.state_dict().items() if k not in net.trainable_state_dict()}
    other.load_state_dict(frozen, strict=False)
    x = images(2)
    assert not torch.allclose(other(x), net(x))
    other.load_trainable_state_dict(load_file(tmp_path / "state.safetensors"))
    torch.testing.assert_close(other(x), net(x))


def test_trainable_state_mismatch_is_explained(tiny_backbone, bank):
    net = build(tiny_backbone, bank)
    state = net.trainable_state_dict()
    state.pop("text_prompts")
    state["extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing \['text_prompts'\], unexpected \['extra'\]"):
        net.load_trainable_state_dict(state)


def test_bank_class_mismatch_lists_missing_and_unexpected(tiny_backbone, bank):
    with pytest.raises(KnowledgeClassMismatchError, match=r"missing \['melanoma'\], unexpected \['covid'\]"):
        CILMP(["normal lung", "bacterial pneumonia", "viral pneumonia", "melanoma"], bank, tiny_backbone)


def test_bank_from_path_and_any_hidden_size(tiny_backbone, tmp_path):
    bank = random_bank(dim=7)
    path = bank.save(tmp_path / "kb.safetensors")
    net = CILMP(CLASSES, str(path), tiny_backbone)
    assert net(images(1)).shape == (1, 4)


def test_hyper_parameter_errors(tiny_backbone, bank):
    with pytest.raises(ValueError, match="text_prompt_depth must be between 1 and the text encoder's 12 layers"):
        build(tiny_backbone, bank, text_prompt_depth=13)
    with pytest.raises(ValueError, match="ctx_init 'a photo of a' has 4 tokens but n_ctx is 2"):
        build(tiny_backbone, bank, n_ctx=2)
    with pytest.raises(ValueError, match="needs .* tokens .* context is 77"):
        build(tiny_backbone, random_bank(lengths=(80, 3, 3, 3)))


def test_shallow_and_prompt_free_variants(tiny_backbone, bank):
    net = build(tiny_backbone, bank, text_prompt_depth=1, vision_prompt_depth=0, ctx_init=None)
    assert net.vision_prompts is None and len(net.knowledge.layers) == 1
    assert net(images(2)).shape == (2, 4)


def test_paper_parameter_count_at_vit_b16_shape():
    """About 3.85 M trainable parameters for ViT-B/16 with a 4096-wide LLM, independent of the class count."""
    backbone = load_backbone("ViT-B-16", None)
    counts = []
    for n_cls in (2, 5):
        classes = [f"class {i}" for i in range(n_cls)]
        bank = KnowledgeBank.from_tensors({c: torch.zeros(8, 4096) for c in classes})
        net = CILMP(classes, bank, backbone)
        counts.append(sum(p.numel() for p in net.parameters() if p.requires_grad))
    assert counts[0] == counts[1]
    assert 3.80e6 < counts[0] < 3.90e6


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_runs_under_cpu_autocast(tiny_backbone, bank, dtype):
    net = build(tiny_backbone, bank)
    with torch.autocast("cpu", dtype=dtype):
        out = net(images(2))
        loss = F.cross_entropy(out.float(), torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(out.float()).all()
    assert net.text_prompts.grad is not None and torch.isfinite(net.text_prompts.grad).all()


def test_frozen_towers_stay_in_eval_mode(tiny_backbone, bank):
    net = build(tiny_backbone, bank).train()
    assert net.training and net.knowledge.training
    assert not net.text_tower.training and not net.vision_tower.training


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_matches_cpu(tiny_backbone, bank):
    net = build(tiny_backbone, bank).eval()
    x = images(2)
    with torch.no_grad():
        cpu = net(x)
        gpu = net.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)


# ----- speed levers: each exact against the unoptimised, full-context reading ---------------------------------------


@pytest.mark.parametrize("conditional", [True, False])
@pytest.mark.parametrize("truncate", [True, False])
@pytest.mark.parametrize("shared", [True, False])
def test_speed_levers_within_1e_5_of_the_naive_reading(tiny_backbone, conditional, truncate, shared):
    """One index_copy per layer, knowledge tokens of the valid positions only, image-independent factors once, the
    shared start of the prompts run once (or not)."""
    bank = random_bank(lengths=(16, 3, 9, 5))
    kwargs = {"conditional": conditional, "truncate_context": truncate, "shared_prefix": shared}
    net = build(tiny_backbone, bank, **kwargs).eval()
    assert net.shared_prefix == shared
    x = images(3)
    with torch.no_grad():
        torch.testing.assert_close(net(x), naive_logits(net, tiny_backbone, bank, x), rtol=1e-5, atol=1e-5)


def test_knowledge_tokens_equal_the_projected_interventions(tiny_backbone):
    """Per valid position: projection(phi(h; z)), phi run densely by ConditionalLoReFT.forward (the D-sized edit)."""
    bank = random_bank(lengths=(16, 3, 9, 5))
    net = build(tiny_backbone, bank).eval()
    knowledge = net.knowledge
    with torch.no_grad():
        z = net.encode_image(images(3))
    for j, layer in enumerate(knowledge.layers):
        with torch.no_grad():
            tokens = knowledge(j, z)
            prefix = layer.prefix(knowledge.prefix_inputs, z)  # (B, C, p, D)
            suffix = layer.suffix(knowledge.suffix_inputs, z)
        for i, (c, pos) in enumerate(zip(knowledge.token_class.tolist(), knowledge.token_position.tolist())):
            length = int(knowledge.valid[c].sum())
            if pos < min(4, length):
                h = prefix[:, c, pos]
            elif pos >= length - 4:
                h = suffix[:, c, pos - (length - 4)]
            else:
                h = knowledge.bank[c, pos].expand(3, -1)
            torch.testing.assert_close(tokens[:, i], layer.projection(h), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("depths", [(12, 12), (6, 2), (3, 1)])
def test_shared_prefix_gives_the_same_logits_and_gradients(tiny_backbone, depths):
    text_depth, knowledge_depth = depths
    kwargs = {"text_prompt_depth": text_depth, "knowledge_depth": knowledge_depth}
    nets = [build(tiny_backbone, random_bank(), shared_prefix=s, **kwargs).train() for s in (True, False)]
    nets[1].load_trainable_state_dict(nets[0].trainable_state_dict())
    outputs = []
    for net in nets:
        net.knowledge.eval()  # no dropout: the two runs draw their masks in a different order
        logits = net(images(3))
        F.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
        outputs.append((logits.detach(), {n: p.grad for n, p in net.trainable_parameters().items()}))
    torch.testing.assert_close(outputs[0][0], outputs[1][0], rtol=1e-5, atol=1e-5)
    for name, grad in outputs[1][1].items():
        torch.testing.assert_close(outputs[0][1][name], grad, rtol=1e-4, atol=2e-5, msg=name)


def test_shared_prefix_only_where_the_tower_supports_it_and_by_default_where_it_pays(family_backbones):
    for name, backbone in family_backbones.items():
        causal = name != "CILMP-Tiny-BERT"
        torch.manual_seed(1)
        net = CILMP(CLASSES, random_bank(), backbone)
        assert net.shared_prefix is (None if causal else False)
        assert net.uses_shared_prefix("cuda") is causal and net.uses_shared_prefix("cpu") is False
        assert CILMP(CLASSES, random_bank(), backbone, shared_prefix=True).uses_shared_prefix("cpu") is causal
        assert CILMP(CLASSES, random_bank(), backbone, shared_prefix=False).uses_shared_prefix("cuda") is False


def _logits_and_gradients(net):
    net.knowledge.eval()  # no dropout: the two paths draw their masks in a different order
    logits = net(images(3))
    F.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    return [logits.detach()] + [p.grad for p in net.trainable_parameters().values()]


@pytest.mark.parametrize("pays", [False, True])
def test_default_shared_prefix_follows_the_device_bitwise(tiny_backbone, monkeypatch, pays):
    """shared_prefix=None runs exactly the forced path of the device's choice: on the CPU the unshared one, so the
    CPU's results are those of shared_prefix=False bit for bit; where it pays (CUDA) the shared one."""
    from monai_cilmp.networks.nets import cilmp

    monkeypatch.setattr(cilmp, "shared_prefix_pays", lambda device: pays)
    nets = [build(tiny_backbone, random_bank(), shared_prefix=s).train() for s in (None, pays)]
    nets[1].load_trainable_state_dict(nets[0].trainable_state_dict())
    auto, forced = (_logits_and_gradients(net) for net in nets)
    assert all(torch.equal(a, b) for a, b in zip(auto, forced, strict=True))


def test_dropout_acts_on_the_edited_knowledge_in_training(tiny_backbone):
    net = build(tiny_backbone, random_bank(), dropout=0.5).train()
    with torch.no_grad():
        z = net.encode_image(images(2))
    torch.manual_seed(0)
    first = net.knowledge(0, z)
    second = net.knowledge(0, z)
    evaluated = net.eval().knowledge(0, z)
    unchanged = net.knowledge.group_sizes[0]
    assert not torch.equal(first[:, unchanged:], second[:, unchanged:])  # a new mask per call
    torch.testing.assert_close(first[:, :unchanged], evaluated[:, :unchanged])  # unedited positions: no dropout


@pytest.mark.parametrize("family", ["CILMP-Tiny", "CILMP-Tiny-Timm", "CILMP-Tiny-BERT"])
def test_frozen_weights_in_the_compute_dtype_are_bitwise_equal_under_autocast(family):
    backbone = load_backbone(family, None, offline=True)  # its own copy: the cast changes the backbone's modules
    names = CLASSES[:4]
    torch.manual_seed(1)
    net = CILMP(names, random_bank(), backbone)
    x = images(2, size=net.image_size)
    labels = torch.tensor([0, 3])

    def step() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        net.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = net(x)
        F.cross_entropy(logits.float(), labels).backward()
        return logits.detach(), {n: p.grad.clone() for n, p in net.trainable_parameters().items()}

    before, grads_before = step()
    frozen = [p for p in net.parameters() if not p.requires_grad]
    assert net.to_compute_dtype(torch.float32) is net and all(p.dtype == torch.float32 for p in frozen)
    net.to_compute_dtype(torch.bfloat16)
    assert any(p.dtype == torch.bfloat16 for p in frozen) and any(p.dtype == torch.float32 for p in frozen)
    assert all(p.dtype == torch.float32 for p in net.trainable_parameters().values())
    after, grads_after = step()
    assert torch.equal(after, before)
    for name, grad in grads_before.items():
        assert torch.equal(grads_after[name], grad), name
