"""Knowledge extraction: hidden states of a language model for each class's description, as a knowledge bank.

Two readings of CILMP's knowledge (``docs/method.md``), selectable and recorded in the bank:

- ``tokens`` (default): the hidden states of the description's own tokens at one layer (default the last), so
  ``L_c`` is the description's token count, capped so that CILMP's prompt fits CLIP's context
  (:func:`~monai_cilmp.knowledge.context.knowledge_length_cap`). Special tokens (BOS, CLS, SEP) and the tokens of
  a chat template around the description are not part of it.
- ``layers``: the hidden state of the last input token after every block (``L_c`` = number of blocks). The
  embedding layer's output is *not* included: it is a context-free lookup of one token, not knowledge about the
  class.

Layers are numbered like transformers' ``hidden_states``: ``0`` is the embedding output, ``i`` the output of block
``i``, ``-1`` the last. Any model of transformers works (causal LLMs such as Llama-3 or Mistral, encoders such as
PubMedBERT; the encoder of encoder-decoder models), with any hidden size. Texts are batched with right padding and
an attention mask, so a text's states do not depend on the batch (up to floating-point rounding).

Optionally the LLM writes the description first (``generate``), prompted with "In a {modality}, describe the
distinctive visual features of {class}." and greedy decoding with a fixed ``max_new_tokens``, all recorded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.utils import StrEnum, look_up_option

from monai_cilmp.data.registry import get_dataset

from .bank import KnowledgeBank
from .context import CLIP_CONTEXT_LENGTH, DEFAULT_N_CTX, clip_tokenizer, knowledge_length_cap
from .descriptions import ClassDescription, describe
from .loading import library_versions, load_pretrained

__all__ = [
    "GENERATION_PROMPT",
    "ExtractionMode",
    "KnowledgeExtractor",
    "extract_knowledge",
    "generation_prompt",
]

GENERATION_PROMPT = "In {article} {modality}, describe the distinctive visual features of {class_name}."
"""The prompt of ``generate`` (docs/method.md's wording; the registry's modality words already name the image kind)."""

DEFAULT_MODALITY = "medical image"


class ExtractionMode(StrEnum):
    """What a class's knowledge matrix holds: its description's tokens at one layer, or its last token per layer."""

    TOKENS = "tokens"
    LAYERS = "layers"


def generation_prompt(class_name: str, modality: str | None = None) -> str:
    """The prompt that asks an LLM to describe a class: :data:`GENERATION_PROMPT` filled in."""
    modality = modality or DEFAULT_MODALITY
    article = "an" if modality[:1].lower() in "aeiou" else "a"
    return GENERATION_PROMPT.format(article=article, modality=modality, class_name=class_name.replace("_", " "))


@dataclass
class _Encoded:
    """A text as the model sees it: the input string, its token ids and where the text's own tokens are."""

    text: str
    model_input: str
    ids: list[int]
    positions: list[int]


class KnowledgeExtractor:
    """Hidden states of a Hugging Face model for class descriptions.

    Args:
        model: a transformers model in eval mode (``AutoModel`` for extraction; ``AutoModelForCausalLM`` to also
            generate descriptions); encoder-decoder models use their encoder.
        tokenizer: its tokenizer; it must be a fast tokenizer (character offsets locate the description's tokens).
        provenance: what was loaded (see :func:`~monai_cilmp.knowledge.loading.load_pretrained`); recorded in banks.

    Raises:
        ValueError: a slow tokenizer.
    """

    def __init__(self, model: Any, tokenizer: Any, provenance: Mapping[str, Any] | None = None) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"{type(tokenizer).__name__} is not a fast tokenizer; knowledge extraction needs one (its character "
                "offsets locate the description's tokens): save the model with a tokenizer.json."
            )
        self.model, self.tokenizer = model, tokenizer
        # the base model gives the same hidden states as a model with a head, without computing vocabulary logits
        is_seq2seq = getattr(model.config, "is_encoder_decoder", False)
        self.encoder = model.get_encoder() if is_seq2seq else getattr(model, "base_model", model)
        self.provenance = dict(provenance or {"source_model": getattr(model, "name_or_path", type(model).__name__)})
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        # padded positions are masked out and never read, so any valid id will do as padding
        self.pad_token_id = int(pad) if pad is not None else 0

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike | None = None,
        *,
        generate: bool = False,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = "auto",
        revision: str | None = None,
        trust_remote_code: bool = False,
        offline: bool = False,
        cache_dir: str | os.PathLike | None = None,
    ) -> KnowledgeExtractor:
        """Load a model: a local folder, a Hugging Face id, or ``None`` for the embedded all-MiniLM-L6-v2.

        Args:
            name_or_path: the model.
            generate: load it with its language-model head (``AutoModelForCausalLM``) to write descriptions.
            device: torch device or ``"auto"`` (a GPU when there is one).
            dtype: ``auto`` (bf16 on a GPU, fp32 on CPU), ``fp32``, ``bf16``, ``fp16`` or a torch dtype.
            revision: Hub revision.
            trust_remote_code: allow model code from the Hub.
            offline: never download.
            cache_dir: Hugging Face cache folder.

        Raises:
            FileNotFoundError: the model cannot be found or downloaded.
            ValueError: the embedded model fails its hash check.
        """
        import transformers

        auto_class = transformers.AutoModelForCausalLM if generate else transformers.AutoModel
        model, tokenizer, provenance = load_pretrained(
            name_or_path,
            auto_class,
            device=device,
            dtype=dtype,
            revision=revision,
            trust_remote_code=trust_remote_code,
            offline=offline,
            cache_dir=cache_dir,
        )
        return cls(model, tokenizer, provenance)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ----- tokenisation ------------------------------------------------------------------------------------------

    def _model_input(self, text: str, chat_template: bool) -> tuple[str, int]:
        """The string the tokenizer sees, and where ``text`` starts in it."""
        if not chat_template:
            return text, 0
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                f"The tokenizer of {self.provenance.get('source_model')} has no chat template: leave out "
                "--chat-template (chat_template=False) or use a chat/instruct model."
            )
        model_input = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        start = model_input.find(text)
        if start < 0:
            raise ValueError("The chat template changed the description's text, so its tokens cannot be located.")
        return model_input, start

    def encode(self, text: str, chat_template: bool = False) -> _Encoded:
        """Tokenise a description (inside the chat template if asked) and locate its own tokens.

        Raises:
            ValueError: an empty text, a text without tokens of its own, or no chat template.
        """
        text = str(text).strip()
        if not text:
            raise ValueError("Cannot extract knowledge from an empty description.")
        model_input, start = self._model_input(text, chat_template)
        end = start + len(text)
        # a chat template writes its own special tokens (BOS included), as in apply_chat_template(tokenize=True)
        enc = self.tokenizer(
            model_input,
            add_special_tokens=not chat_template,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
        special = set(self.tokenizer.all_special_ids)
        positions = [
            i
            for i, (token, (a, b), is_special) in enumerate(
                zip(enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"])
            )
            if not is_special and token not in special and b > a and a < end and b > start
        ]
        if not positions:
            raise ValueError(f"The description {text!r} has no tokens of its own for this tokenizer.")
        return _Encoded(text, model_input, list(enc["input_ids"]), positions)

    # ----- forward -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _run(
        self,
        encoded: Sequence[_Encoded],
        select: Callable[[Sequence[torch.Tensor], int, int], torch.Tensor],
        batch_size: int,
        progress: bool,
        desc: str,
    ) -> list[torch.Tensor]:
        """Run the model over right-padded batches (longest first); ``select(hidden_states, row, text_index)``."""
        from tqdm.auto import tqdm  # disable=None: no bar when stderr is not a terminal (logs)

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i].ids))
        out: list[torch.Tensor | None] = [None] * len(encoded)
        device = self.device
        with tqdm(total=len(encoded), desc=desc, unit="text", disable=None if progress else True) as bar:
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                width = max(len(encoded[i].ids) for i in rows)
                ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, i in enumerate(rows):
                    ids[r, : len(encoded[i].ids)] = torch.tensor(encoded[i].ids)
                    mask[r, : len(encoded[i].ids)] = 1
                result = self.encoder(
                    input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True
                )
                states = result.hidden_states
                for r, i in enumerate(rows):
                    out[i] = select(states, r, i).float().cpu()
                bar.update(len(rows))
        return out  # type: ignore[return-value]

    # ----- generation --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate_descriptions(
        self,
        class_names: Sequence[str],
        modality: str | None = None,
        *,
        chat_template: bool = False,
        max_new_tokens: int = 64,
        batch_size: int = 8,
        progress: bool = False,
    ) -> tuple[dict[str, ClassDescription], dict[str, Any]]:
        """Let the model describe each class (greedy decoding), with the prompt of :func:`generation_prompt`.

        Args:
            class_names: the classes.
            modality: modality words for the prompt (e.g. ``"chest X-ray"``); default ``"medical image"``.
            chat_template: wrap the prompt in the tokenizer's chat template (instruct models).
            max_new_tokens: length limit of each description.
            batch_size: prompts per batch (left-padded, as generation needs).
            progress: show a progress bar.

        Returns:
            ``({class: description}, decoding settings)``; the descriptions' source is ``generated:<model>``, the
            settings go into the bank's ``generation`` record.

        Raises:
            ValueError: the model cannot generate, or it generated an empty description.
        """
        from tqdm.auto import tqdm
        from transformers import GenerationConfig

        if not (hasattr(self.model, "can_generate") and self.model.can_generate()):
            raise ValueError(
                f"{type(self.model).__name__} cannot generate text: load a causal LM with generate=True "
                "(--generate) or give descriptions instead."
            )
        prompts = {c: generation_prompt(c, modality) for c in class_names}
        inputs = {}
        for c, prompt in prompts.items():
            model_input, _ = self._model_input(prompt, chat_template)
            inputs[c] = self.tokenizer(model_input, add_special_tokens=not chat_template)["input_ids"]
        eos = self.model.generation_config.eos_token_id
        config = GenerationConfig(
            do_sample=False,
            num_beams=1,
            max_new_tokens=int(max_new_tokens),
            pad_token_id=self.pad_token_id,
            eos_token_id=eos,
        )
        out: dict[str, ClassDescription] = {}
        source = f"generated:{self.provenance.get('source_model')}"
        names = list(prompts)
        with tqdm(total=len(names), desc="generate", unit="class", disable=not progress) as bar:
            for start in range(0, len(names), batch_size):
                batch = names[start : start + batch_size]
                width = max(len(inputs[c]) for c in batch)
                ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for r, c in enumerate(batch):
                    ids[r, width - len(inputs[c]) :] = torch.tensor(inputs[c])
                    mask[r, width - len(inputs[c]) :] = 1
                generated = self.model.generate(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device), generation_config=config
                )
                for r, c in enumerate(batch):
                    text = self.tokenizer.decode(generated[r, width:], skip_special_tokens=True).strip()
                    if not text:
                        raise ValueError(
                            f"{self.provenance.get('source_model')} generated an empty description for '{c}'; give "
                            "descriptions instead of --generate or try --chat-template."
                        )
                    out[c] = ClassDescription(c, text, source=source)
                bar.update(len(batch))
        settings = {
            "prompt_template": GENERATION_PROMPT,
            "modality": modality or DEFAULT_MODALITY,
            "prompts": prompts,
            "model_inputs": {c: self._model_input(p, chat_template)[0] for c, p in prompts.items()},
            "chat_template": bool(chat_template),
            "do_sample": False,
            "num_beams": 1,
            "max_new_tokens": int(max_new_tokens),
            "eos_token_id": eos,
            "batch_size": int(batch_size),
            "padding_side": "left",
        }
        return out, settings

    # ----- extraction --------------------------------------------------------------------------------------------

    def extract(
        self,
        descriptions: Mapping[str, str | ClassDescription],
        *,
        mode: str = ExtractionMode.TOKENS,
        layer: int = -1,
        chat_template: bool = False,
        n_ctx: int = DEFAULT_N_CTX,
        context_length: int = CLIP_CONTEXT_LENGTH,
        max_length: int | None = None,
        batch_size: int = 8,
        progress: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> KnowledgeBank:
        """The knowledge bank of the given descriptions.

        Args:
            descriptions: class name -> description text (or :class:`ClassDescription`), in the bank's class order.
            mode: ``"tokens"`` or ``"layers"`` (see the module docstring).
            layer: hidden-state index for ``tokens`` (``0`` embeddings, ``-1`` last); ``layers`` takes every block.
            chat_template: feed each description as a user message of the tokenizer's chat template.
            n_ctx: CILMP's number of context tokens, for the context cap.
            context_length: CLIP's context length, for the context cap.
            max_length: a further cap on ``L_c`` in ``tokens`` mode.
            batch_size: descriptions per forward pass.
            progress: show a progress bar.
            metadata: more provenance to record (e.g. ``dataset``, ``generation``).

        Returns:
            a :class:`~monai_cilmp.knowledge.KnowledgeBank` whose metadata records the model (id or path, revision,
            weight hashes), mode, layer, the exact texts and model inputs, the token strings, truncations, the
            context caps, device, dtype and library versions.

        Raises:
            ValueError: no descriptions, an unknown mode, a layer out of range, a length cap below 1, or (``layers``)
                more blocks than a class's context cap.
        """
        mode = look_up_option(mode, ExtractionMode)
        if not descriptions:
            raise ValueError("Give at least one class description.")
        if mode == ExtractionMode.LAYERS and layer != -1:
            raise ValueError("A layer applies to mode 'tokens' only; mode 'layers' takes every block's output.")
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}.")
        names = [str(n) for n in descriptions]
        texts = {n: d.text if isinstance(d, ClassDescription) else str(d) for n, d in descriptions.items()}
        clip = clip_tokenizer()
        caps = {n: knowledge_length_cap(n, n_ctx, context_length, clip) for n in names}
        encoded = [self.encode(texts[n], chat_template) for n in names]
        texts = {n: enc.text for n, enc in zip(names, encoded)}
        kept: dict[int, list[int]] = {}
        seen: dict[str, int] = {}

        def select(states: Sequence[torch.Tensor], row: int, index: int) -> torch.Tensor:
            seen["states"] = len(states)
            enc = encoded[index]
            if mode == ExtractionMode.LAYERS:
                return torch.stack([s[row, len(enc.ids) - 1] for s in states[1:]])
            if not -len(states) <= layer < len(states):
                raise ValueError(
                    f"layer {layer} is out of range: {self.provenance.get('source_model')} has {len(states)} hidden "
                    f"states (0 = embeddings, {len(states) - 1} = last block); use -{len(states)} to {len(states) - 1}."
                )
            kept[index] = enc.positions[: min(caps[names[index]], max_length or caps[names[index]])]
            return states[layer][row, kept[index]]

        matrices = self._run(encoded, select, batch_size, progress, desc=f"extract ({mode})")
        num_states = seen["states"]
        if mode == ExtractionMode.LAYERS:
            too_long = {n: caps[n] for n in names if caps[n] < num_states - 1}
            if too_long:
                raise ValueError(
                    f"Mode 'layers' gives {num_states - 1} knowledge tokens per class, more than the CLIP context "
                    f"leaves for {too_long}: use mode 'tokens' or a model with fewer layers."
                )
        tokens, truncated = {}, {}
        for i, (n, enc) in enumerate(zip(names, encoded)):
            if mode == ExtractionMode.LAYERS:
                tokens[n] = self.tokenizer.convert_ids_to_tokens(enc.ids[-1:])
                truncated[n] = 0
            else:
                tokens[n] = self.tokenizer.convert_ids_to_tokens([enc.ids[p] for p in kept[i]])
                truncated[n] = len(enc.positions) - len(kept[i])
        record: dict[str, Any] = {
            **self.provenance,
            "mode": mode.value,
            "layer": None if mode == ExtractionMode.LAYERS else int(layer) % num_states,
            "layer_requested": None if mode == ExtractionMode.LAYERS else int(layer),
            "layers": (
                f"1..{num_states - 1} (every block's output; the embedding output 0 is not included)"
                if mode == ExtractionMode.LAYERS
                else None
            ),
            "num_hidden_states": num_states,
            "layer_convention": "hidden_states[0] is the embedding output, hidden_states[i] the output of block i",
            "pooled_token": "last input token" if mode == ExtractionMode.LAYERS else None,
            "texts": texts,
            "model_inputs": {n: enc.model_input for n, enc in zip(names, encoded)},
            "tokens": tokens,
            "truncated": truncated,
            "description_sources": {
                n: d.source if isinstance(d, ClassDescription) else "given" for n, d in descriptions.items()
            },
            "chat_template": bool(chat_template),
            "context": {
                "n_ctx": int(n_ctx),
                "context_length": int(context_length),
                "caps": caps,
                "max_length": max_length,
            },
            "batch_size": int(batch_size),
            "padding_side": "right",
            "library_versions": library_versions(),
        }
        record.update(metadata or {})
        return KnowledgeBank.from_tensors(dict(zip(names, matrices)), **record)


def extract_knowledge(
    class_names: Sequence[str] | None = None,
    *,
    dataset: str | None = None,
    descriptions: Mapping[str, str | ClassDescription] | None = None,
    model: str | os.PathLike | KnowledgeExtractor | None = None,
    mode: str = ExtractionMode.TOKENS,
    layer: int = -1,
    chat_template: bool = False,
    generate: bool = False,
    modality: str | None = None,
    max_new_tokens: int = 64,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    n_ctx: int = DEFAULT_N_CTX,
    max_length: int | None = None,
    batch_size: int = 8,
    revision: str | None = None,
    trust_remote_code: bool = False,
    offline: bool = False,
    progress: bool = False,
) -> KnowledgeBank:
    """Build a knowledge bank in one call: describe the classes (or let the model), load the model, extract.

    Args:
        class_names: the classes; with ``dataset`` a subset of its classes, without it looked up in the curated
            descriptions (see :func:`~monai_cilmp.knowledge.describe`).
        dataset: a registered dataset: its curated descriptions (all classes when ``class_names`` is ``None``).
        descriptions: class -> text, instead of the two above.
        model: a model id or folder, an already built :class:`KnowledgeExtractor`, or ``None`` for the embedded
            all-MiniLM-L6-v2.
        mode: ``"tokens"`` or ``"layers"``.
        layer: hidden-state index for ``tokens``.
        chat_template: use the tokenizer's chat template.
        generate: let the model write each description (needs a causal LM); ``descriptions`` must then be ``None``.
        modality: modality words for generated and generic descriptions (default: the dataset's).
        max_new_tokens: length limit of generated descriptions.
        device: torch device or ``"auto"``.
        dtype: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        n_ctx: CILMP's context tokens, for the context cap.
        max_length: a further cap on ``L_c`` (``tokens``).
        batch_size: texts per forward pass.
        revision: Hub revision.
        trust_remote_code: allow model code from the Hub.
        offline: never download.
        progress: show progress bars.

    Raises:
        ValueError: conflicting or missing inputs, unknown dataset or class (listing the valid ones), or any error
            of :meth:`KnowledgeExtractor.extract`.
        FileNotFoundError: the model cannot be found.
    """

    if descriptions is not None and (generate or dataset is not None or class_names is not None):
        raise ValueError("Give either descriptions or class names/dataset (optionally with generate), not both.")
    spec = get_dataset(dataset) if dataset is not None else None
    modality = modality or (spec.modality if spec else None)
    extractor = (
        model
        if isinstance(model, KnowledgeExtractor)
        else KnowledgeExtractor.from_pretrained(
            model,
            generate=generate,
            device=device,
            dtype=dtype,
            revision=revision,
            trust_remote_code=trust_remote_code,
            offline=offline,
        )
    )
    metadata: dict[str, Any] = {"dataset": spec.name if spec else None}
    if generate:
        names = list(describe(class_names, dataset, modality))  # checks the names against the dataset
        descriptions, metadata["generation"] = extractor.generate_descriptions(
            names, modality, chat_template=chat_template, max_new_tokens=max_new_tokens, progress=progress
        )
    elif descriptions is None:
        descriptions = describe(class_names, dataset, modality)
    return extractor.extract(
        descriptions,
        mode=mode,
        layer=layer,
        chat_template=chat_template,
        n_ctx=n_ctx,
        max_length=max_length,
        batch_size=batch_size,
        progress=progress,
        metadata=metadata,
    )
