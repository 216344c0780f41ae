"""Loading open_clip backbones (model + tokenizer + preprocessing facts) from every source a user has.

Sources, in the order people meet them:

- a model name and a pretrained tag, ``load_backbone("ViT-B-16", "openai")`` (the paper's setting);
- a Hugging Face Hub id, ``load_backbone("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")``;
- a local checkpoint file, ``load_backbone("ViT-B-16", "/models/ViT-B-16.pt")``;
- a local folder holding ``open_clip_config.json`` and its weights, ``load_backbone("/models/my-clip")``;
- no weights at all, ``load_backbone("CILMP-Tiny", None)`` (random weights, for tests and benchmarks).

Every open_clip tower family the prompt methods support has a tiny offline configuration registered here:
``CILMP-Tiny`` (open_clip's own ViT and text transformer), ``CILMP-Tiny-Timm`` (a timm ViT trunk,
``cilmp_tiny_vit``, and open_clip's text transformer) and ``CILMP-Tiny-BERT`` (the timm trunk and a Hugging Face
BERT text encoder, the family of BiomedCLIP). ``BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`` is BiomedCLIP's
architecture at full size (random weights, or its hub id for the real ones).

Hugging Face text encoders are built from their ``config.json`` only (their weights come from the CLIP
checkpoint): the configurations of the encoders above ship with this package, others are looked up in the Hugging
Face cache (or downloaded unless offline). Their tokenizers need the real vocabulary files.

The MLP activation (QuickGELU for OpenAI's weights, GELU otherwise) follows the weights' provenance: the pretrained
tag, the hub or folder config, the ``open_clip_config.json`` next to a checkpoint file, or the Hugging Face cache
repository the file lies in. A checkpoint file with no provenance, for a model whose tags disagree, is refused
unless ``quick_gelu`` says which.

With ``offline=True`` nothing is downloaded: weights must already be in the cache or on disk. Missing weights
raise :class:`BackboneWeightsNotFoundError` with one sentence saying what to download and where it goes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import socket
import urllib.parse
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch

__all__ = [
    "DEFAULT_INIT_SEED",
    "PROJECT_PRETRAINED",
    "BIOMEDCLIP",
    "BIOMEDCLIP_ARCHITECTURE",
    "Backbone",
    "BackboneWeightsNotFoundError",
    "TINY_BACKBONE",
    "TINY_BACKBONES",
    "TINY_BERT_BACKBONE",
    "TINY_TIMM_BACKBONE",
    "TINY_TIMM_VIT",
    "load_backbone",
    "keep_project_pretrained",
    "project_pretrained_file",
    "project_weights_dir",
    "register_model_configs",
]

TINY_BACKBONE = "CILMP-Tiny"
#: seed of a backbone's random weights when it has no pretrained ones (recorded by runs as ``backbone_init_seed``)
DEFAULT_INIT_SEED = 0
TINY_TIMM_BACKBONE = "CILMP-Tiny-Timm"
TINY_BERT_BACKBONE = "CILMP-Tiny-BERT"
#: the tiny configuration of every tower family (tests and benchmarks run each method on each of them)
TINY_BACKBONES = (TINY_BACKBONE, TINY_TIMM_BACKBONE, TINY_BERT_BACKBONE)
#: BiomedCLIP's architecture at full size (registered here, random weights) and its Hugging Face Hub id
BIOMEDCLIP_ARCHITECTURE = "BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
BIOMEDCLIP = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
#: the timm ViT trunk of the tiny configurations (registered with timm; no pretrained weights)
TINY_TIMM_VIT = "cilmp_tiny_vit"
_TINY_VIT_ARGS = {"img_size": 64, "patch_size": 16, "embed_dim": 64, "depth": 12, "num_heads": 4}

#: weights this project makes, named like open_clip's pretrained tags: (model, tag) -> (file name, the command that
#: makes them); they are kept in :func:`project_weights_dir`
PROJECT_PRETRAINED = {
    (TINY_BACKBONE, "synthetic"): ("cilmp-tiny-synthetic.safetensors", "monai-cilmp demo"),
}
_MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
_OPEN_CLIP_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
#: Hugging Face text models whose config.json ships in ``model_configs/hf/<folder>`` (built without a download)
_PACKAGED_HF_MODELS = {
    "cilmp-tiny-bert": "cilmp-tiny-bert",
    "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract": "biomedbert-base-uncased-abstract",
}
_VOCABULARY_FILES = ("tokenizer.json", "vocab.txt")
_TOKENIZER_FILES = (*_VOCABULARY_FILES, "tokenizer_config.json", "special_tokens_map.json", "config.json")


class BackboneWeightsNotFoundError(FileNotFoundError):
    """Raised when the weights asked for are neither on disk nor (offline) allowed to be downloaded."""


@dataclass
class Backbone:
    """An open_clip model with what is needed to feed it.

    Attributes:
        model: the open_clip model (``CLIP`` or ``CustomTextCLIP``), in eval mode.
        tokenizer: the matching open_clip tokenizer.
        name: the model name or source it was loaded from.
        pretrained: the pretrained tag or file, ``None`` for random weights.
        image_size: input side length in pixels.
        mean: per-channel normalisation mean.
        std: per-channel normalisation standard deviation.
        interpolation: resize interpolation the weights were trained with.
        checkpoint: the resolved weights file, ``None`` for random weights.
    """

    model: torch.nn.Module
    tokenizer: Any
    name: str
    pretrained: str | None
    image_size: int
    mean: tuple[float, float, float] = open_clip.OPENAI_DATASET_MEAN
    std: tuple[float, float, float] = open_clip.OPENAI_DATASET_STD
    interpolation: str = "bicubic"
    checkpoint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def register_model_configs() -> None:
    """Make the project's open_clip configurations (:data:`TINY_BACKBONES`, :data:`BIOMEDCLIP_ARCHITECTURE`) and the
    tiny timm trunk known to open_clip and timm; safe to call twice."""
    _register_timm_models()
    known = set(open_clip.list_models())
    if any(name not in known for name in (*TINY_BACKBONES, BIOMEDCLIP_ARCHITECTURE)):
        open_clip.add_model_config(_MODEL_CONFIG_DIR)


def _register_timm_models() -> None:
    """Register :data:`TINY_TIMM_VIT` (CILMP-Tiny's image tower as a timm ``VisionTransformer``) with timm."""
    import timm

    if timm.is_model(TINY_TIMM_VIT):
        return
    from timm.models import build_model_with_cfg, register_model
    from timm.models.vision_transformer import VisionTransformer

    def cilmp_tiny_vit(pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
        if pretrained:
            raise ValueError(f"{TINY_TIMM_VIT} has no pretrained weights: build it with pretrained=False.")
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(key, None)
        cfg = {"input_size": (3, 64, 64), "num_classes": 0, "mean": open_clip.OPENAI_DATASET_MEAN}
        cfg["std"] = open_clip.OPENAI_DATASET_STD
        return build_model_with_cfg(
            VisionTransformer, TINY_TIMM_VIT, False, pretrained_cfg=cfg, **{**_TINY_VIT_ARGS, **kwargs}
        )

    cilmp_tiny_vit.__name__ = TINY_TIMM_VIT
    register_model(cilmp_tiny_vit)


def project_weights_dir() -> Path:
    """Where the project's own backbone weights are kept: ``$MONAI_CILMP_HOME/backbones`` (default
    ``~/.cache/monai-cilmp/backbones``)."""
    home = os.environ.get("MONAI_CILMP_HOME") or Path.home() / ".cache" / "monai-cilmp"
    return Path(home).expanduser() / "backbones"


def _name_pointer(file_name: str) -> Path:
    """The file that says which content file a project weights name stands for (``<stem>.json``)."""
    return project_weights_dir() / f"{Path(file_name).stem}.json"


def keep_project_pretrained(name: str, tag: str, weights: str | os.PathLike) -> Path:
    """Keep the file ``weights`` as the project's pretrained weights ``tag`` of model ``name``.

    Weights are stored by content: ``<stem>-<first 16 hex digits of their SHA-256>.safetensors`` in
    :func:`project_weights_dir`, written once and never rewritten; the name then points at that file (``<stem>.json``).
    Weights made again with other settings get a file of their own and take the name over, while the file a run was
    trained on stays as it was (the run records it and its hash, and is rebuilt from it).

    Returns:
        the content file.
    """
    import hashlib
    import shutil

    from monai_cilmp.utils.files import atomic_write, write_json

    file_name = PROJECT_PRETRAINED[(name, tag)][0]
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    sha256 = digest.hexdigest()
    target = project_weights_dir() / f"{Path(file_name).stem}-{sha256[:16]}{Path(file_name).suffix}"
    if not target.is_file():  # same name, same content: an existing file is never written again
        atomic_write(target, lambda tmp: shutil.copyfile(weights, tmp))
    write_json(_name_pointer(file_name), {"model": name, "tag": tag, "file": target.name, "sha256": sha256})
    return target


def project_pretrained_file(name: str, tag: str, required: bool = False) -> Path | None:
    """The file of the project's pretrained weights ``tag`` of model ``name`` (see :data:`PROJECT_PRETRAINED`): the
    content file the name points at (:func:`keep_project_pretrained`), else a file of the name itself kept by earlier
    versions.

    Args:
        name: model name.
        tag: the weights' name.
        required: raise when they have not been made yet (else return ``None``).

    Raises:
        BackboneWeightsNotFoundError: ``required`` and the file does not exist; the message names the command that
            makes it.
    """
    if (name, tag) not in PROJECT_PRETRAINED:
        return None
    file_name, command = PROJECT_PRETRAINED[(name, tag)]
    pointer = _name_pointer(file_name)
    if pointer.is_file():
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            target = json.loads(pointer.read_text(encoding="utf-8")).get("file")
            if isinstance(target, str) and Path(target).name == target and (project_weights_dir() / target).is_file():
                return project_weights_dir() / target
    path = project_weights_dir() / file_name
    if path.is_file():
        return path
    if required:
        raise BackboneWeightsNotFoundError(
            f"The '{tag}' weights of {name} are made by `{command}` (offline, a few minutes on a CPU): run it once; "
            f"it keeps them in {path.parent} (set MONAI_CILMP_HOME to keep them elsewhere)."
        )
    return None


def _tags_of(name: str) -> list[str]:
    """open_clip's pretrained tags of ``name`` and the project's own."""
    return [*open_clip.list_pretrained_tags_by_model(name), *(t for n, t in PROJECT_PRETRAINED if n == name)]


def _hf_cache_hint(cache_dir: str | None) -> str:
    if cache_dir:
        return str(cache_dir)
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


@functools.lru_cache(maxsize=8)
def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the host of ``url`` answers a TCP connection within ``timeout`` seconds (asked once per process).

    Without a network, the hub client would retry each file for about a minute before failing; this check makes a
    missing-weights error come within seconds.
    """
    parsed = urllib.parse.urlparse(url)
    if not parsed.hostname:
        return False
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_file(repo_id: str, filename: str, cache_dir: str | None, offline: bool) -> str | None:
    """``filename`` of ``repo_id`` from the cache (or the hub unless offline), ``None`` when not available."""
    from huggingface_hub import constants, hf_hub_download

    for local_only in (True, False):
        if not local_only and (offline or constants.HF_HUB_OFFLINE or not _reachable(constants.ENDPOINT)):
            return None
        try:
            return hf_hub_download(repo_id, filename, cache_dir=cache_dir, local_files_only=local_only)
        except Exception as e:  # hub, network and cache errors all mean "not available here"
            logging.getLogger(__name__).debug("could not get %s/%s: %s", repo_id, filename, e)
    return None


def _download_from_hub(
    repo_id: str, filenames: tuple[str, ...], cache_dir: str | None, offline: bool, whole_repo: bool = False
) -> str:
    """First of ``filenames`` found in ``repo_id`` (cache only when offline), or raise the one-sentence error.

    ``whole_repo``: the message asks for the whole repository (a hub backbone also needs its tokenizer files).
    """
    for filename in filenames:
        path = _hub_file(repo_id, filename, cache_dir, offline)
        if path is not None:
            return path
    where = _hf_cache_hint(cache_dir)
    command = f"hf download {repo_id}" if whole_repo else f"hf download {repo_id} {filenames[-1]}"
    raise BackboneWeightsNotFoundError(
        f"The weights of '{repo_id}' are not available{' offline' if offline else ' here'}: download them once with "
        f"`{command}` (they go to the Hugging Face cache, {where}) "
        "or pass the path of a local checkpoint file instead."
    )


def _safetensors_first(filename: str) -> tuple[str, ...]:
    stem, ext = os.path.splitext(filename)
    return (f"{stem}.safetensors", filename) if ext in (".bin", ".pth", ".pt") else (filename,)


def _resolve_tag(model_name: str, tag: str, cache_dir: str | None, offline: bool) -> tuple[str, dict]:
    """Weights file and pretrained config of an open_clip tag such as ``ViT-B-16`` + ``openai``."""
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    hub = cfg.get("hf_hub", "")
    if hub:
        repo_id, filename = os.path.split(hub.rstrip("/") + ("/" if hub.endswith("/") else ""))
        filenames = _safetensors_first(filename) if filename else _OPEN_CLIP_WEIGHT_FILES
        return _download_from_hub(repo_id, filenames, cache_dir, offline), cfg
    url = cfg.get("url", "")
    target = Path(cache_dir or Path.home() / ".cache" / "clip") / os.path.basename(url)
    if target.is_file():
        return str(target), cfg
    if offline:
        raise BackboneWeightsNotFoundError(
            f"The '{tag}' weights of {model_name} are not available offline: download {url} to {target} "
            "or pass the path of a local checkpoint file instead."
        )
    if not _reachable(url):
        raise BackboneWeightsNotFoundError(
            f"The '{tag}' weights of {model_name} cannot be downloaded here (no connection to {url}): download it to "
            f"{target} on a machine with internet access, or pass the path of a local checkpoint file instead."
        )
    try:
        return open_clip.download_pretrained_from_url(url, cache_dir=str(target.parent)), cfg
    except Exception as e:
        raise BackboneWeightsNotFoundError(
            f"The '{tag}' weights of {model_name} could not be downloaded ({e}): download {url} to {target} "
            "by hand and run again with offline=True."
        ) from e


def _tokenizer_for(source: str, context_length: int | None, cache_dir: str | None) -> Any:
    try:
        return open_clip.get_tokenizer(source, context_length=context_length, cache_dir=cache_dir)
    except TypeError:  # older open_clip without cache_dir
        return open_clip.get_tokenizer(source, context_length=context_length)


def _model_config(source: str) -> dict[str, Any]:
    """open_clip's model config of a registered name or a ``local-dir:`` folder."""
    if source.startswith("local-dir:"):
        with open(Path(source[len("local-dir:") :]) / "open_clip_config.json", encoding="utf-8") as f:
            return dict(json.load(f).get("model_cfg", {}))
    return dict(open_clip.get_model_config(source) or {})


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


def _quick_gelu_from_provenance(model_name: str, checkpoint: str) -> bool | None:
    """QuickGELU or not for a checkpoint *file* of ``model_name``, from what is known about where it comes from.

    In order: the Hugging Face cache repository the file lies in, matched to a pretrained tag of ``model_name``;
    OpenAI's release (its file name, or any TorchScript archive); an ``open_clip_config.json`` next to the file (as
    ``hf download`` of an open_clip repository leaves it); the model's tags when they all agree (or it has none: its
    config decides). ``None``: ambiguous.
    """
    path = Path(checkpoint).resolve()
    tags = [open_clip.get_pretrained_cfg(model_name, t) for t in open_clip.list_pretrained_tags_by_model(model_name)]
    # a file in the Hugging Face cache lies under models--<org>--<name>/ (the snapshot may be a link into blobs/)
    parts = (*Path(checkpoint).absolute().parts, *path.parts)
    repos = {p[len("models--") :].replace("--", "/") for p in parts if p.startswith("models--")}
    for cfg in tags:
        if "/".join(cfg.get("hf_hub", "").split("/")[:2]) in repos:
            return bool(cfg.get("quick_gelu", False))
    if path.name in {os.path.basename(cfg.get("url", "")) for cfg in tags if cfg.get("quick_gelu")}:
        return True  # OpenAI's own release file name (e.g. ViT-B-16.pt) of an OpenAI tag
    if _is_torchscript(checkpoint):
        return True  # OpenAI's original release (a TorchScript archive) was trained with QuickGELU
    sibling = Path(checkpoint).parent / "open_clip_config.json"
    if sibling.is_file():
        with contextlib.suppress(OSError, ValueError):
            cfg = json.loads(sibling.read_text(encoding="utf-8")).get("model_cfg")
            if isinstance(cfg, dict):
                return bool(cfg.get("quick_gelu", False))
    flags = {bool(cfg.get("quick_gelu", False)) for cfg in tags}
    if not flags:  # no published weights: the model's own config is the only word on it
        return bool(_model_config(model_name).get("quick_gelu", False))
    return flags.pop() if len(flags) == 1 else None


def _is_torchscript(checkpoint: str) -> bool:
    """Whether ``checkpoint`` is a TorchScript archive (how OpenAI released CLIP), not a plain state dict."""
    import zipfile

    try:
        with zipfile.ZipFile(checkpoint) as archive:
            return any(n.split("/", 2)[1:2] == ["code"] for n in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def load_backbone(
    name: str = "ViT-B-16",
    pretrained: str | None = "openai",
    *,
    offline: bool = False,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    quick_gelu: bool | None = None,
    init_seed: int = DEFAULT_INIT_SEED,
) -> Backbone:
    """Load an open_clip model, its tokenizer and preprocessing facts.

    Args:
        name: an open_clip model name (``"ViT-B-16"``, ``"CILMP-Tiny"``), ``"hf-hub:org/repo"``, or a local folder
            (optionally prefixed ``"local-dir:"``) that holds ``open_clip_config.json`` and a weights file.
        pretrained: a pretrained tag of ``name`` (``"openai"``; or one of the project's own, such as ``"synthetic"``
            of ``CILMP-Tiny``, made by ``monai-cilmp demo``: :data:`PROJECT_PRETRAINED`), a checkpoint file, or
            ``None`` (also ``"none"``) for random weights.
            Ignored for hub ids and folders, which carry their own weights.
        offline: never download; weights must already be in the cache or on disk.
        cache_dir: where downloads go and cached weights are looked up (default: the Hugging Face cache).
        device: device the model is moved to.
        precision: open_clip precision string (``"fp32"``, ``"bf16"``, ``"fp16"``, ...).
        quick_gelu: force the QuickGELU activation on or off; ``None`` follows the weights' provenance: the
            pretrained tag (OpenAI's weights need it), the hub or folder config, and for a checkpoint file the
            ``open_clip_config.json`` beside it, the Hugging Face cache repository it lies in, or the model's tags
            when they agree (else the file is refused). timm and Hugging Face towers keep their own activations.
        init_seed: seed of random weights (no ``pretrained``), drawn apart from the global random state, so that a
            run on random weights is rebuilt with the very same weights by evaluation (:data:`DEFAULT_INIT_SEED`).

    Returns:
        the loaded :class:`Backbone`, model in eval mode.

    Raises:
        BackboneWeightsNotFoundError: the weights are not available (offline or download failed).
        FileNotFoundError: a local checkpoint file or folder does not exist.
        ValueError: the model name or the pretrained tag is unknown, or a checkpoint file's activation is ambiguous.
    """
    register_model_configs()
    if isinstance(pretrained, str) and pretrained.strip().lower() in ("", "none", "random"):
        pretrained = None  # command lines and bundle overrides cannot say None
    cache_dir = None if cache_dir is None else str(cache_dir)
    name = str(name)
    # pretrained_text=False: never fetch a Hugging Face text tower's own weights (the CLIP weights replace them)
    create_kwargs: dict[str, Any] = {
        "precision": precision,
        "device": device,
        "cache_dir": cache_dir,
        "pretrained_text": False,
    }
    preprocess: dict[str, Any] = {}
    checkpoint: str | None = None
    folders: list[str] = []  # where a Hugging Face tokenizer may find its vocabulary
    hub_repos: list[str] = []

    local_dir = name[len("local-dir:") :] if name.startswith("local-dir:") else name
    if name.startswith("hf-hub:"):
        repo_id = name[len("hf-hub:") :]
        config_file = _download_from_hub(repo_id, ("open_clip_config.json",), cache_dir, offline, whole_repo=True)
        checkpoint = _download_from_hub(repo_id, _OPEN_CLIP_WEIGHT_FILES, cache_dir, offline, whole_repo=True)
        source = f"local-dir:{os.path.dirname(config_file)}"
        folders, hub_repos = [os.path.dirname(config_file)], [repo_id]
        pretrained = None
    elif name.startswith("local-dir:") or os.sep in name or Path(name).is_dir():
        folder = Path(local_dir).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise FileNotFoundError(
                f"Backbone folder '{folder}' has no open_clip_config.json: point to a folder saved by open_clip "
                "(config plus weights) or use a model name with a pretrained tag or checkpoint file."
            )
        weights = [folder / f for f in _OPEN_CLIP_WEIGHT_FILES if (folder / f).is_file()]
        if not weights and pretrained is not None:
            raise BackboneWeightsNotFoundError(
                f"Backbone folder '{folder}' has open_clip_config.json but no weights "
                f"({' or '.join(_OPEN_CLIP_WEIGHT_FILES)}): download them into it (`hf download <repo> --local-dir "
                f"{folder}`) or pass pretrained=None for random weights."
            )
        source = f"local-dir:{folder}"
        checkpoint = str(weights[0]) if weights else None
        folders = [str(folder)]
        pretrained = None
    else:
        source = name
        if name not in open_clip.list_models():
            raise ValueError(
                f"Unknown backbone '{name}': use an open_clip model name (see open_clip.list_models(), e.g. "
                f"'ViT-B-16' or '{TINY_BACKBONE}'), an 'hf-hub:' id or a local folder."
            )
        if pretrained:
            if (name, pretrained) in PROJECT_PRETRAINED:
                checkpoint = str(project_pretrained_file(name, pretrained, required=True))
            elif open_clip.get_pretrained_cfg(name, pretrained):
                checkpoint, tag_cfg = _resolve_tag(name, pretrained, cache_dir, offline)
                # open_clip only warns when a tag was trained with QuickGELU (OpenAI's weights) and the
                # config is not; the activations would silently be wrong, so follow the tag instead.
                quick_gelu = bool(tag_cfg.get("quick_gelu", False)) if quick_gelu is None else quick_gelu
                preprocess = {k: tag_cfg[k] for k in ("mean", "std", "interpolation") if k in tag_cfg}
            else:
                path = Path(pretrained).expanduser()
                if not path.is_file():
                    tags = ", ".join(_tags_of(name)) or "none"
                    raise FileNotFoundError(
                        f"Pretrained weights '{pretrained}' for {name} are neither a known tag ({tags}) nor an "
                        "existing checkpoint file: give a tag or the path of a downloaded checkpoint."
                    )
                checkpoint = str(path)
                if quick_gelu is None:
                    quick_gelu = _quick_gelu_from_provenance(name, checkpoint)
                    if quick_gelu is None:
                        raise ValueError(
                            f"Checkpoint '{checkpoint}' does not say which MLP activation {name} was trained with "
                            "(its pretrained tags differ): pass quick_gelu=True (--quick-gelu true) for OpenAI-trained "
                            "weights such as the 'openai' tag's, or quick_gelu=False for open_clip-trained ones."
                        )

    model_cfg = _model_config(source)
    if quick_gelu is not None:
        create_kwargs["force_quick_gelu"] = quick_gelu
        if not quick_gelu and model_cfg.get("quick_gelu"):
            create_kwargs["quick_gelu"] = False  # force_quick_gelu can only switch it on
    text_cfg = dict(model_cfg.get("text_cfg", {}))
    vocabulary = None
    if text_cfg.get("hf_model_name"):  # a Hugging Face text tower: its architecture config and its vocabulary
        folder = _hf_text_model_folder(str(text_cfg["hf_model_name"]), cache_dir, offline)
        vocabulary = _hf_tokenizer_folder(text_cfg, folders, hub_repos, cache_dir, offline)
        create_kwargs["text_cfg"] = {**text_cfg, "hf_model_name": folder, "hf_model_pretrained": False}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*QuickGELU mismatch.*")
        if source.startswith("local-dir:"):
            model = open_clip.create_model(source, load_weights=checkpoint is not None, **create_kwargs)
        elif checkpoint is not None:
            model = _create_from_checkpoint(source, checkpoint, create_kwargs)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(init_seed)
                model = open_clip.create_model(source, pretrained=None, **{**create_kwargs, "device": "cpu"})
            model = model.to(device)
    model.eval()

    context_length = getattr(model, "context_length", None)
    if vocabulary is not None:
        tokenizer = _hf_tokenizer(vocabulary, folder, text_cfg, int(text_cfg.get("context_length") or 77))
    else:
        tokenizer = _tokenizer_for(source, context_length, cache_dir)
    image_size = model.visual.image_size
    image_size = int(image_size[0] if isinstance(image_size, (tuple, list)) else image_size)
    visual_pp = getattr(model.visual, "preprocess_cfg", {}) or {}
    mean = tuple(preprocess.get("mean", visual_pp.get("mean", open_clip.OPENAI_DATASET_MEAN)))
    std = tuple(preprocess.get("std", visual_pp.get("std", open_clip.OPENAI_DATASET_STD)))
    interpolation = preprocess.get("interpolation", visual_pp.get("interpolation", "bicubic"))
    return Backbone(
        model=model,
        tokenizer=tokenizer,
        name=name,
        pretrained=pretrained,
        image_size=image_size,
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        interpolation=interpolation,
        checkpoint=checkpoint,
    )


def _torchscript_state_dict(checkpoint: str) -> dict[str, torch.Tensor]:
    """The weights of a TorchScript archive (OpenAI's CLIP release format), read without Python's pickle.

    ``torch.jit.load`` reads the archive's pickles with TorchScript's own unpickler (C++,
    ``torch/csrc/jit/serialization/unpickler.cpp``), which only rebuilds tensors, containers, a fixed set of torch types
    and the TorchScript classes compiled from the archive's code: a global such as ``posix.system`` is an "unknown type"
    error, never a call. Nothing of the module is run here but its parameters read.
    """
    try:
        scripted = torch.jit.load(checkpoint, map_location="cpu")
    except Exception as e:
        raise ValueError(
            f"Checkpoint '{checkpoint}' looks like a TorchScript archive but could not be read as one ({e}): use the "
            "archive as released, or a state dict saved with safetensors."
        ) from None
    state = {k: v.detach().clone() for k, v in scripted.state_dict().items()}
    for key in ("input_resolution", "context_length", "vocab_size"):  # OpenAI's archives keep these as buffers
        state.pop(key, None)
    return state


def _check_weights_only(checkpoint: str) -> None:
    """Refuse a checkpoint whose pickle holds anything but tensors and plain containers, before open_clip reads it
    (open_clip before 3.x reads with ``torch.load`` without ``weights_only``): what passes torch's ``weights_only``
    unpickler calls only torch's allow-listed functions however it is read again."""
    import pickle

    try:
        torch.load(checkpoint, map_location="meta", weights_only=True)
    except pickle.UnpicklingError as e:
        found = next(iter(re.findall(r"GLOBAL ([\w.]+)", str(e))), "")
        raise ValueError(
            f"Checkpoint '{checkpoint}' holds Python objects besides tensors{f' ({found})' if found else ''}, which "
            "are never loaded (unpickling them could run code): save the weights as a state dict, with safetensors "
            "or torch.save(model.state_dict())."
        ) from None
    except Exception:  # not a pickle at all (a truncated or foreign file): open_clip's own error says so
        return


def _create_from_checkpoint(name: str, checkpoint: str, create_kwargs: dict[str, Any]) -> torch.nn.Module:
    """Build ``name`` with the weights in ``checkpoint``: a state dict (safetensors, or a ``torch.save`` file of
    tensors only, read by open_clip) or a TorchScript archive as OpenAI released CLIP (its weights read without
    Python's pickle, see :func:`_torchscript_state_dict`, into ``name`` built by open_clip)."""
    if _is_torchscript(checkpoint):
        from open_clip.model import convert_to_custom_text_state_dict

        state = _torchscript_state_dict(checkpoint)
        model = open_clip.create_model(name, pretrained=None, **create_kwargs)
        if hasattr(model, "text"):  # a model with its own text tower names the text weights text.*
            state = convert_to_custom_text_state_dict(state)
        # buffers open_clip recomputes (the causal attention mask) are not weights, whatever the archive kept
        computed = {name for name, _ in model.named_buffers()} - set(model.state_dict())
        state = {k: v for k, v in state.items() if k not in computed}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(
                f"The TorchScript archive '{checkpoint}' holds weights of another architecture than {name} "
                f"({' '.join(str(e).split())[:300]}): give the model name the archive was released for."
            ) from None
        return model
    if not checkpoint.endswith(".safetensors"):
        _check_weights_only(checkpoint)
    try:
        return open_clip.create_model(name, pretrained=checkpoint, **create_kwargs)
    except Exception as error:
        problem = f"{error}"
    raise ValueError(
        f"Checkpoint '{checkpoint}' could not be loaded into {name} ({problem}): check that it is an open_clip or "
        f"OpenAI CLIP checkpoint of the {name} architecture."
    )
