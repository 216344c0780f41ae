"""Loading open_clip backbones (model + tokenizer + preprocessing facts) from every source a user has.

Sources, in the order people meet them:

- a model name and a pretrained tag, ``load_backbone("ViT-B-16", "openai")`` (the paper's setting);
- a Hugging Face Hub id, ``load_backbone("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")``;
- a local checkpoint file, ``load_backbone("ViT-B-16", "/models/ViT-B-16.pt")``;
- a local folder holding ``open_clip_config.json`` and its weights, ``load_backbone("/models/my-clip")``;
- no weights at all, ``load_backbone("CILMP-Tiny", None)`` (random weights, for tests and benchmarks).

With ``offline=True`` nothing is downloaded: weights must already be in the cache or on disk. Missing weights
raise :class:`BackboneWeightsNotFoundError` with one sentence saying what to download and where it goes.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch

__all__ = [
    "DEFAULT_INIT_SEED",
    "Backbone",
    "BackboneWeightsNotFoundError",
    "TINY_BACKBONE",
    "load_backbone",
    "register_model_configs",
]

TINY_BACKBONE = "CILMP-Tiny"
#: seed of a backbone's random weights when it has no pretrained ones (recorded by runs as ``backbone_init_seed``)
DEFAULT_INIT_SEED = 0
_MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
_OPEN_CLIP_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


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
    """Make the project's open_clip configurations (``CILMP-Tiny``) known to open_clip; safe to call twice."""
    if TINY_BACKBONE not in open_clip.list_models():
        open_clip.add_model_config(_MODEL_CONFIG_DIR)


def _hf_cache_hint(cache_dir: str | None) -> str:
    if cache_dir:
        return str(cache_dir)
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _download_from_hub(repo_id: str, filenames: tuple[str, ...], cache_dir: str | None, offline: bool) -> str:
    """First of ``filenames`` found in ``repo_id`` (cache only when offline), or raise the one-sentence error."""
    from huggingface_hub import hf_hub_download

    for filename in filenames:
        try:
            return hf_hub_download(repo_id, filename, cache_dir=cache_dir, local_files_only=offline)
        except Exception as e:  # hub, network and cache errors all mean "not available here"
            logging.getLogger(__name__).debug("could not get %s/%s: %s", repo_id, filename, e)
    where = _hf_cache_hint(cache_dir)
    raise BackboneWeightsNotFoundError(
        f"The weights of '{repo_id}' are not available {'offline ' if offline else ''}: download them once with "
        f"`hf download {repo_id} {filenames[-1]}` (they go to the Hugging Face cache, {where}) "
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
        pretrained: a pretrained tag of ``name`` (``"openai"``), a checkpoint file, or ``None`` (also ``"none"``) for
            random weights.
            Ignored for hub ids and folders, which carry their own weights.
        offline: never download; weights must already be in the cache or on disk.
        cache_dir: where downloads go and cached weights are looked up (default: the Hugging Face cache).
        device: device the model is moved to.
        precision: open_clip precision string (``"fp32"``, ``"bf16"``, ``"fp16"``, ...).
        quick_gelu: force the QuickGELU activation on or off; ``None`` follows the pretrained tag (OpenAI's weights
            need it) or the model config.
        init_seed: seed of random weights (no ``pretrained``), drawn apart from the global random state, so that a
            run on random weights is rebuilt with the very same weights by evaluation (:data:`DEFAULT_INIT_SEED`).

    Returns:
        the loaded :class:`Backbone`, model in eval mode.

    Raises:
        BackboneWeightsNotFoundError: the weights are not available (offline or download failed).
        FileNotFoundError: a local checkpoint file or folder does not exist.
        ValueError: the model name or the pretrained tag is unknown.
    """
    register_model_configs()
    if isinstance(pretrained, str) and pretrained.strip().lower() in ("", "none", "random"):
        pretrained = None  # command lines and bundle overrides cannot say None
    cache_dir = None if cache_dir is None else str(cache_dir)
    name = str(name)
    create_kwargs: dict[str, Any] = {"precision": precision, "device": device, "cache_dir": cache_dir}
    preprocess: dict[str, Any] = {}
    checkpoint: str | None = None

    local_dir = name[len("local-dir:") :] if name.startswith("local-dir:") else name
    if name.startswith("hf-hub:"):
        repo_id = name[len("hf-hub:") :]
        config_file = _download_from_hub(repo_id, ("open_clip_config.json",), cache_dir, offline)
        checkpoint = _download_from_hub(repo_id, _OPEN_CLIP_WEIGHT_FILES, cache_dir, offline)
        source = f"local-dir:{os.path.dirname(config_file)}"
        pretrained = None
    elif name.startswith("local-dir:") or os.sep in name or Path(name).is_dir():
        folder = Path(local_dir).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise FileNotFoundError(
                f"Backbone folder '{folder}' has no open_clip_config.json: point to a folder saved by open_clip "
                "(config plus weights) or use a model name with a pretrained tag or checkpoint file."
            )
        source = f"local-dir:{folder}"
        checkpoint = str(folder)
        pretrained = None
    else:
        source = name
        if name not in open_clip.list_models():
            raise ValueError(
                f"Unknown backbone '{name}': use an open_clip model name (see open_clip.list_models(), e.g. "
                f"'ViT-B-16' or '{TINY_BACKBONE}'), an 'hf-hub:' id or a local folder."
            )
        if pretrained:
            if open_clip.get_pretrained_cfg(name, pretrained):
                checkpoint, tag_cfg = _resolve_tag(name, pretrained, cache_dir, offline)
                # open_clip only warns when a tag was trained with QuickGELU (OpenAI's weights) and the
                # config is not; the activations would silently be wrong, so follow the tag instead.
                create_kwargs["force_quick_gelu"] = bool(tag_cfg.get("quick_gelu", False))
                preprocess = {k: tag_cfg[k] for k in ("mean", "std", "interpolation") if k in tag_cfg}
            else:
                path = Path(pretrained).expanduser()
                if not path.is_file():
                    tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
                    raise FileNotFoundError(
                        f"Pretrained weights '{pretrained}' for {name} are neither a known tag ({tags}) nor an "
                        "existing checkpoint file: give a tag or the path of a downloaded checkpoint."
                    )
                checkpoint = str(path)

    if quick_gelu is not None:
        create_kwargs["force_quick_gelu"] = quick_gelu
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*QuickGELU mismatch.*")
        if source.startswith("local-dir:"):
            model = open_clip.create_model(source, **create_kwargs)
        elif checkpoint is not None:
            model = _create_from_checkpoint(source, checkpoint, create_kwargs)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(init_seed)
                model = open_clip.create_model(source, pretrained=None, **{**create_kwargs, "device": "cpu"})
            model = model.to(device)
    model.eval()

    context_length = getattr(model, "context_length", None)
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


def _create_from_checkpoint(name: str, checkpoint: str, create_kwargs: dict[str, Any]) -> torch.nn.Module:
    """Build ``name`` with the weights in ``checkpoint``; OpenAI's TorchScript archives are converted by open_clip."""
    try:
        return open_clip.create_model(name, pretrained=checkpoint, **create_kwargs)
    except Exception as first_error:
        try:  # the original OpenAI release is a TorchScript archive that a plain state-dict load cannot read
            model = open_clip.load_openai_model(checkpoint, device=create_kwargs["device"], jit=False)
        except Exception:
            raise ValueError(
                f"Checkpoint '{checkpoint}' could not be loaded into {name} ({first_error}): check that it is an "
                f"open_clip or OpenAI CLIP checkpoint of the {name} architecture."
            ) from first_error
        return model.float() if create_kwargs.get("precision", "fp32") == "fp32" else model
