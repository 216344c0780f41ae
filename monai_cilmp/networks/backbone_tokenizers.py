"""A backbone's tokenizer, and the config and vocabulary of a Hugging Face text tower (packaged, local or cached)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import open_clip

from .backbone_registry import _MODEL_CONFIG_DIR
from .backbone_weights import BackboneWeightsNotFoundError, _hf_cache_hint, _hub_file

__all__: list[str] = []

#: Hugging Face text models whose config.json ships in ``model_configs/hf/<folder>`` (built without a download)
_PACKAGED_HF_MODELS = {
    "cilmp-tiny-bert": "cilmp-tiny-bert",
    "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract": "biomedbert-base-uncased-abstract",
}
_VOCABULARY_FILES = ("tokenizer.json", "vocab.txt")
_TOKENIZER_FILES = (*_VOCABULARY_FILES, "tokenizer_config.json", "special_tokens_map.json", "config.json")


def _tokenizer_for(source: str, context_length: int | None, cache_dir: str | None) -> Any:
    try:
        return open_clip.get_tokenizer(source, context_length=context_length, cache_dir=cache_dir)
    except TypeError:  # older open_clip without cache_dir
        return open_clip.get_tokenizer(source, context_length=context_length)


def _hf_text_model_folder(name: str, cache_dir: str | None, offline: bool) -> str:
    """A local folder with the ``config.json`` of Hugging Face text model ``name`` (packaged, local or cached).

    Raises:
        BackboneWeightsNotFoundError: not available (offline, or the download failed).
    """
    if name in _PACKAGED_HF_MODELS:
        return str(_MODEL_CONFIG_DIR / "hf" / _PACKAGED_HF_MODELS[name])
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    path = _hub_file(name, "config.json", cache_dir, offline)
    if path is None:
        raise BackboneWeightsNotFoundError(
            f"The configuration of the text model '{name}' is not available {'offline ' if offline else ''}: "
            f"download it once with `hf download {name} config.json` (it goes to the Hugging Face cache, "
            f"{_hf_cache_hint(cache_dir)})."
        )
    return os.path.dirname(path)


def _has_vocabulary(folder: str | Path) -> bool:
    return any((Path(folder) / f).is_file() for f in _VOCABULARY_FILES)


def _hf_tokenizer_folder(
    text_cfg: dict[str, Any], folders: list[str], hub_repos: list[str], cache_dir: str | None, offline: bool
) -> str:
    """A local folder with the vocabulary of a Hugging Face text tower.

    Looked up in ``folders`` (a backbone folder or hub snapshot), the packaged/local ``hf_tokenizer_name``, then the
    Hugging Face cache (or the hub unless offline) of ``hub_repos`` and ``hf_tokenizer_name``.

    Raises:
        BackboneWeightsNotFoundError: the vocabulary is nowhere; the message names the download.
    """
    name = str(text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name"))
    candidates = list(folders)
    if name in _PACKAGED_HF_MODELS:
        candidates.append(str(_MODEL_CONFIG_DIR / "hf" / _PACKAGED_HF_MODELS[name]))
    if Path(name).expanduser().is_dir():
        candidates.append(str(Path(name).expanduser()))
    for folder in candidates:
        if _has_vocabulary(folder):
            return folder
    for repo in [*hub_repos, name]:
        if Path(repo).expanduser().is_dir() or repo.count("/") != 1:
            continue
        found = [path for f in _TOKENIZER_FILES if (path := _hub_file(repo, f, cache_dir, offline)) is not None]
        if any(os.path.basename(path) in _VOCABULARY_FILES for path in found):
            return os.path.dirname(found[0])
    repo = hub_repos[0] if hub_repos else name
    files = "" if hub_repos else " config.json tokenizer_config.json vocab.txt"
    raise BackboneWeightsNotFoundError(
        f"The tokenizer vocabulary of '{name}' is not available {'offline ' if offline else ''}: download it once "
        f"with `hf download {repo}{files}` (it goes to the Hugging Face cache, {_hf_cache_hint(cache_dir)}) or put "
        "its vocab.txt/tokenizer.json next to the backbone's open_clip_config.json."
    )


def _hf_tokenizer(vocabulary: str, model_folder: str, text_cfg: dict[str, Any], context_length: int) -> Any:
    """open_clip's ``HFTokenizer`` over the files in ``vocabulary``.

    A folder with only a ``vocab.txt`` does not say which tokenizer reads it: the text model's type decides.

    Raises:
        ValueError: the files cannot be read as a tokenizer (one sentence).
    """
    from open_clip.tokenizer import HFTokenizer

    kwargs = dict(text_cfg.get("tokenizer_kwargs", {}))
    folder = Path(vocabulary)
    named = (folder / "config.json").is_file()
    if (folder / "tokenizer_config.json").is_file():
        with contextlib.suppress(ValueError):
            named = named or "tokenizer_class" in json.loads((folder / "tokenizer_config.json").read_text())
    if not named and not (folder / "tokenizer.json").is_file():
        model_type = json.loads((Path(model_folder) / "config.json").read_text(encoding="utf-8")).get("model_type")
        if model_type:
            kwargs.setdefault("tokenizer_type", model_type)
    try:
        return HFTokenizer(
            vocabulary, context_length=context_length, tokenizer_mode=text_cfg.get("tokenizer_mode"), **kwargs
        )
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"The tokenizer files in '{vocabulary}' could not be read ({reason}): put the text model's "
            "vocab.txt/tokenizer.json and tokenizer_config.json there, as `hf download` of the model leaves them."
        ) from e
