"""Image-specific attribute words from a visual-question-answering model, with answers cached on disk.

For each image the model is asked "What color is this {c}?", "What is the shape of this {c}?", "Where is this {c}
located?" (Qin et al., ICLR 2023). Generative VQA models (BLIP: ``BlipForQuestionAnswering``) and answer
classifiers (ViLT: ``ViltForQuestionAnswering``) both work through transformers' ``AutoModelForVisualQuestionAnswering``
and ``AutoProcessor``. Answers are cached per image (keyed by the image file's SHA-256, the model and the question),
so re-running over a dataset only asks about new images.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_cilmp.data.datalist import normalise_class_name
from monai_cilmp.utils.files import write_json

from .attributes import Attribute, AttributeValue
from .embedded import sha256_file
from .loading import load_pretrained

__all__ = [
    "IMAGE_SUFFIXES",
    "VQA_QUESTIONS",
    "VQAAnswerCache",
    "VQAAttributes",
    "collect_images",
    "default_cache_dir",
    "normalise_answer",
]

VQA_QUESTIONS: dict[str, str] = {
    Attribute.COLOUR.value: "What color is this {name}?",
    Attribute.SHAPE.value: "What is the shape of this {name}?",
    Attribute.LOCATION.value: "Where is this {name} located?",
    Attribute.TEXTURE.value: "What is the texture of this {name}?",
}
"""Questions per attribute (``{name}`` is the class name)."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_UNINFORMATIVE = frozenset({"yes", "no", "none", "unknown", "nothing", "not sure", "unanswerable", "n a", "na"})


def default_cache_dir() -> Path:
    """``$MONAI_CILMP_CACHE/vqa``, default ``~/.cache/monai_cilmp/vqa``."""
    root = os.environ.get("MONAI_CILMP_CACHE") or Path.home() / ".cache" / "monai_cilmp"
    return Path(root) / "vqa"


def normalise_answer(answer: str | None) -> str | None:
    """Lower case, no punctuation except hyphens, single spaces, no leading article; ``None`` when uninformative.

    ``"The  Pink."`` -> ``"pink"``; ``"in the stomach"`` stays; ``"yes"``, ``"unknown"`` and empty answers -> ``None``.
    """
    if answer is None:
        return None
    text = unicodedata.normalize("NFKC", str(answer)).lower()
    text = re.sub(r"[^\w\s-]|_", " ", text)
    text = re.sub(r"\s+", " ", text).strip(" -")
    text = re.sub(r"^(?:a|an|the) ", "", text)
    return text if text and text not in _UNINFORMATIVE else None


def collect_images(directory: str | os.PathLike, class_names: Sequence[str]) -> dict[str, list[Path]]:
    """Image files per class from a folder.

    Images in a sub-folder named like a class (ignoring case, ``_``, ``-`` and extra spaces) belong to that class;
    images directly in ``directory`` are asked about every class. Files are sorted by name.

    Raises:
        FileNotFoundError: ``directory`` does not exist.
        ValueError: a sub-folder that is not a class (the message lists the classes), or no images at all.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"Image folder '{directory}' does not exist.")

    key = normalise_class_name
    classes = {key(c): c for c in class_names}
    out: dict[str, list[Path]] = {c: [] for c in class_names}
    shared = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    for sub in sorted(p for p in directory.iterdir() if p.is_dir()):
        if key(sub.name) not in classes:
            raise ValueError(
                f"Sub-folder '{sub.name}' of '{directory}' is not one of the classes "
                f"{', '.join(repr(c) for c in class_names)}; name sub-folders after classes or put images directly in "
                "the folder."
            )
        files = sorted(p for p in sub.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        out[classes[key(sub.name)]].extend(files)
    for c in class_names:
        out[c] = shared + out[c]
    if not any(out.values()):
        raise ValueError(f"No images ({', '.join(IMAGE_SUFFIXES)}) found in '{directory}'.")
    return out


class VQAAnswerCache:
    """Raw VQA answers on disk: one JSON file per (model, image), holding ``{question: {answer, score}}``.

    Args:
        directory: cache root; default :func:`default_cache_dir`.
        model_key: identifies the model (name and weights); answers of different models never mix.
    """

    def __init__(self, directory: str | os.PathLike | None, model_key: str) -> None:
        self.model_key = model_key
        model_hash = hashlib.sha256(model_key.encode("utf-8")).hexdigest()[:16]
        self.directory = Path(directory or default_cache_dir()) / model_hash

    def _file(self, image_sha256: str) -> Path:
        return self.directory / f"{image_sha256}.json"

    def get(self, image_sha256: str) -> dict[str, dict[str, Any]]:
        """The cached answers of an image, by question (empty when none)."""
        path = self._file(image_sha256)
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}  # a damaged cache entry is re-computed, not fatal
        return dict(data.get("answers", {})) if data.get("model") == self.model_key else {}

    def put(self, image_sha256: str, answers: Mapping[str, Mapping[str, Any]]) -> None:
        """Add answers of an image (atomically replacing its file)."""
        merged = {**self.get(image_sha256), **{q: dict(a) for q, a in answers.items()}}
        write_json(self._file(image_sha256), {"model": self.model_key, "answers": merged}, indent=1)


class VQAAttributes:
    """Attribute values of single images from a VQA model.

    Args:
        model: ``AutoModelForVisualQuestionAnswering`` model in eval mode (generative like BLIP, or a classifier
            over an answer vocabulary like ViLT).
        processor: its ``AutoProcessor`` (images + question text).
        provenance: what was loaded (see :func:`~monai_cilmp.knowledge.loading.load_pretrained`).
        cache_dir: answer cache root (default :func:`default_cache_dir`); ``False`` disables caching.
        questions: attribute -> question with ``{name}``; default :data:`VQA_QUESTIONS`.
        max_new_tokens: answer length limit of generative models (greedy decoding).
        batch_size: (image, question) pairs per forward pass.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        provenance: Mapping[str, Any] | None = None,
        cache_dir: str | os.PathLike | bool | None = None,
        questions: Mapping[str, str] | None = None,
        max_new_tokens: int = 10,
        batch_size: int = 8,
    ) -> None:
        self.model, self.processor = model, processor
        self.provenance = dict(provenance or {"source_model": getattr(model, "name_or_path", type(model).__name__)})
        self.questions = dict(questions or VQA_QUESTIONS)
        self.max_new_tokens, self.batch_size = int(max_new_tokens), int(batch_size)
        weights = json.dumps(self.provenance.get("weights_sha256"), sort_keys=True)
        key = f"{self.provenance.get('source_model')}|{self.provenance.get('revision')}|{weights}"
        self.cache = None if cache_dir is False else VQAAnswerCache(None if cache_dir is True else cache_dir, key)
        self._hashes: dict[str, str] = {}

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = "fp32",
        revision: str | None = None,
        trust_remote_code: bool = False,
        offline: bool = False,
        cache_dir: str | os.PathLike | bool | None = None,
        **kwargs: Any,
    ) -> VQAAttributes:
        """Load a VQA model and its processor (a local folder or Hugging Face id, e.g. ``Salesforce/blip-vqa-base``).

        Raises:
            FileNotFoundError: the model cannot be found or downloaded.
        """
        from transformers import AutoModelForVisualQuestionAnswering

        model, processor, provenance = load_pretrained(
            name_or_path,
            AutoModelForVisualQuestionAnswering,
            processor=True,
            device=device,
            dtype=dtype,
            revision=revision,
            trust_remote_code=trust_remote_code,
            offline=offline,
        )
        return cls(model, processor, provenance, cache_dir, **kwargs)

    def describe(self, attributes: Sequence[str]) -> dict[str, Any]:
        """Provenance of the answers: the model, the questions asked, the decoding and the cache."""
        return {
            **self.provenance,
            "questions": {a: self.questions[a] for a in attributes},
            "decoding": {"do_sample": False, "num_beams": 1, "max_new_tokens": self.max_new_tokens},
            "cache_dir": str(self.cache.directory) if self.cache else None,
        }

    def image_hash(self, path: str | os.PathLike) -> str:
        """SHA-256 of an image file (memoised per path)."""
        key = str(Path(path).resolve())
        if key not in self._hashes:
            self._hashes[key] = sha256_file(path)
        return self._hashes[key]

    @torch.no_grad()
    def _ask(self, paths: Sequence[Path], questions: Sequence[str]) -> list[tuple[str, float | None]]:
        """Raw answers and scores of the model for (image, question) pairs, in one batch."""
        from PIL import Image

        images = []
        for path in paths:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        device = next(self.model.parameters()).device
        dtype = next(self.model.parameters()).dtype
        inputs = self.processor(images=images, text=list(questions), return_tensors="pt", padding=True).to(device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        decode = getattr(self.processor, "batch_decode", None) or self.processor.tokenizer.batch_decode
        if self.model.can_generate():
            out = self.model.generate(
                **inputs,
                do_sample=False,
                num_beams=1,
                max_new_tokens=self.max_new_tokens,
                output_scores=True,
                return_dict_in_generate=True,
            )
            steps = len(out.scores)
            scorer = getattr(self.model, "text_decoder", self.model)
            logprobs = scorer.compute_transition_scores(out.sequences, out.scores, normalize_logits=True).float()
            generated = out.sequences[:, -steps:]
            pad = self.model.generation_config.pad_token_id
            pad = getattr(getattr(self.model.config, "text_config", None), "pad_token_id", None) if pad is None else pad
            valid = generated != pad if pad is not None else torch.ones_like(generated, dtype=torch.bool)
            valid &= torch.isfinite(logprobs)
            mean = (logprobs.where(valid, 0).sum(1) / valid.sum(1).clamp(min=1)).exp()
            texts = decode(generated, skip_special_tokens=True)
            return [(t.strip(), round(float(s), 6)) for t, s in zip(texts, mean)]
        probs = self.model(**inputs).logits.float().softmax(-1)
        score, index = probs.max(-1)
        labels = self.model.config.id2label
        return [(str(labels[int(i)]), round(float(s), 6)) for i, s in zip(index, score)]

    def answer(self, pairs: Sequence[tuple[str | os.PathLike, str]], progress: bool = False) -> list[dict[str, Any]]:
        """Raw answers ``{"answer", "score"}`` for (image file, question) pairs, from the cache where possible.

        Args:
            pairs: (image file, question) pairs.
            progress: show a progress bar over the pairs not in the cache.
        """
        from tqdm.auto import tqdm

        pairs = [(Path(p), q) for p, q in pairs]
        hashes = [self.image_hash(p) for p, _ in pairs]
        cached = {h: self.cache.get(h) if self.cache else {} for h in set(hashes)}
        todo = [i for i, ((_, q), h) in enumerate(zip(pairs, hashes)) if q not in cached[h]]
        bar = tqdm(total=len(todo), desc="VQA", unit="question", disable=not progress or not todo)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            results = self._ask([pairs[i][0] for i in chunk], [pairs[i][1] for i in chunk])
            new: dict[str, dict[str, dict[str, Any]]] = {}
            for i, (text, score) in zip(chunk, results):
                record = {"answer": text, "score": score}
                cached[hashes[i]][pairs[i][1]] = record
                new.setdefault(hashes[i], {})[pairs[i][1]] = record
            if self.cache:
                for h, answers in new.items():
                    self.cache.put(h, answers)
            bar.update(len(chunk))
        bar.close()
        return [dict(cached[h][q]) for (_, q), h in zip(pairs, hashes)]

    def image_attributes(
        self,
        paths: Sequence[str | os.PathLike],
        class_name: str,
        attributes: Sequence[str] = (Attribute.COLOUR.value, Attribute.SHAPE.value, Attribute.LOCATION.value),
        progress: bool = False,
    ) -> list[dict[str, AttributeValue | None]]:
        """Normalised attribute values of images of ``class_name`` (``None`` for uninformative answers).

        Args:
            paths: image files.
            class_name: the class the questions ask about.
            attributes: which attributes to ask for.
            progress: show a progress bar.

        Returns:
            one ``{attribute: AttributeValue or None}`` per image.

        Raises:
            ValueError: an attribute without a question.
        """
        unknown = [a for a in attributes if a not in self.questions]
        if unknown:
            raise ValueError(
                f"No VQA question for the attributes {unknown}; questions exist for {list(self.questions)}."
            )
        name = class_name.replace("_", " ")
        questions = [self.questions[a].format(name=name) for a in attributes]
        raw = self.answer([(p, q) for p in paths for q in questions], progress=progress)
        out = []
        for i in range(len(paths)):
            values: dict[str, AttributeValue | None] = {}
            for a, r in zip(attributes, raw[i * len(attributes) : (i + 1) * len(attributes)]):
                value = normalise_answer(r["answer"])
                values[a] = AttributeValue(value, "vqa", r["score"]) if value else None
            out.append(values)
        return out
