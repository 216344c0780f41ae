"""Tiny random Hugging Face models with small tokenizers trained offline, saved like downloaded checkpoints.

Built once per session: a Llama-style causal LM (byte-level BPE tokenizer with a chat template), a BERT encoder, a
BERT masked LM whose output bias ranks chosen words first (to test the fill-mask filter), and a BLIP VQA model
with its processor. All weights are random; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

CORPUS = [
    "the lung is clear and dark on a normal chest x-ray",
    "bacterial pneumonia shows a dense white patch in one lobe",
    "viral pneumonia shows hazy streaks in both lungs",
    "a red round polyp in the colon is a pink bump",
    "what color is this polyp? where is this polyp located? what is the shape of this polyp?",
    "the typical color of a polyp is red. the typical shape of a polyp is round. the location of a polyp is at colon",
    "the typical texture of a polyp is smooth, melanoma is dark brown and irregular",
    "eosinophil neutrophil lymphocyte monocyte basophil cells are purple with granules",
]

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# words the tiny masked LM ranks first, best first: a sub-word piece, a stop-word, punctuation, a special token,
# then real words (one of them a word of the colour template, one the class name)
MLM_RANKING = ["<piece>", "the", ",", "[SEP]", "red", "color", "polyp", "round", "of", "pink", "smooth", "dark"]


def bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<mask>"]
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 3, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
        additional_special_tokens=["<|user|>", "<|assistant|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def wordpiece_tokenizer():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(
        CORPUS * 3, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials, show_progress=False)
    )
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads; on a shared 2-core machine, spinning thread pools cost seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Folders of the tiny models: ``llama`` (causal LM), ``bert`` (encoder), ``mlm`` (masked LM), ``blip`` (VQA)."""
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        BertModel,
        BlipConfig,
        BlipForQuestionAnswering,
        BlipImageProcessor,
        BlipProcessor,
        LlamaConfig,
        LlamaForCausalLM,
    )

    root = tmp_path_factory.mktemp("tiny_models")
    bpe, wordpiece = bpe_tokenizer(), wordpiece_tokenizer()

    torch.manual_seed(0)
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(bpe),
            hidden_size=24,
            intermediate_size=48,
            num_hidden_layers=3,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=256,
            bos_token_id=bpe.bos_token_id,
            eos_token_id=bpe.eos_token_id,
        )
    )
    llama.save_pretrained(root / "llama")
    bpe.save_pretrained(root / "llama")

    bert_config = BertConfig(
        vocab_size=len(wordpiece),
        hidden_size=20,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=40,
        max_position_embeddings=128,
    )
    torch.manual_seed(1)
    BertModel(bert_config).save_pretrained(root / "bert")
    wordpiece.save_pretrained(root / "bert")

    torch.manual_seed(2)
    mlm = BertForMaskedLM(bert_config)
    vocab = wordpiece.get_vocab()
    piece = next(t for t in sorted(vocab) if t.startswith("##") and t[2:].isalpha())
    with torch.no_grad():
        bias = mlm.get_output_embeddings().bias
        bias.zero_()
        for rank, word in enumerate(MLM_RANKING):
            bias[vocab[piece if word == "<piece>" else word]] = 40.0 - rank
    mlm.save_pretrained(root / "mlm")
    wordpiece.save_pretrained(root / "mlm")

    torch.manual_seed(3)
    text_config = {
        "vocab_size": len(wordpiece),
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": 64,
        "encoder_hidden_size": 16,
        "bos_token_id": wordpiece.cls_token_id,
        "sep_token_id": wordpiece.sep_token_id,
        "pad_token_id": wordpiece.pad_token_id,
    }
    vision_config = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 16,
    }
    blip = BlipForQuestionAnswering(BlipConfig(text_config=text_config, vision_config=vision_config, projection_dim=16))
    blip.save_pretrained(root / "blip")
    BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=wordpiece
    ).save_pretrained(root / "blip")
    return {"llama": root / "llama", "bert": root / "bert", "mlm": root / "mlm", "blip": root / "blip", "piece": piece}


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> Path:
    """An image folder: two polyp images in ``polyps/``, one image shared by every class at the top."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    (root / "polyps").mkdir()
    for name in ("polyps/a.png", "polyps/b.png", "shared.jpg"):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / name)
    return root
