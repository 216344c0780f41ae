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

This module assembles a :class:`Backbone`; each concept it uses lives in a module of its own (their public names stay
importable from here): ``backbone_registry`` (the project's model configs), ``backbone_weights`` (where weights are
found), ``backbone_tokenizers`` (tokenizers and Hugging Face text configs), ``backbone_activation`` (QuickGELU or not
from provenance) and ``backbone_checkpoints`` (reading a checkpoint file safely).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch

from monai_cilmp.utils.logs import drop_log_messages

from .backbone_activation import _quick_gelu_from_provenance
from .backbone_checkpoints import _create_from_checkpoint
from .backbone_registry import (
    BIOMEDCLIP,
    BIOMEDCLIP_ARCHITECTURE,
    TINY_BACKBONE,
    TINY_BACKBONES,
    TINY_BERT_BACKBONE,
    TINY_TIMM_BACKBONE,
    TINY_TIMM_VIT,
    _model_config,
    register_model_configs,
)
from .backbone_tokenizers import _hf_text_model_folder, _hf_tokenizer, _hf_tokenizer_folder, _tokenizer_for
from .backbone_weights import (
    _OPEN_CLIP_WEIGHT_FILES,
    PROJECT_PRETRAINED,
    BackboneWeightsNotFoundError,
    _download_from_hub,
    _resolve_tag,
    _tags_of,
    keep_project_pretrained,
    project_pretrained_file,
    project_weights_dir,
)

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

#: seed of a backbone's random weights when it has no pretrained ones (recorded by runs as ``backbone_init_seed``)
DEFAULT_INIT_SEED = 0


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
            # random weights are what was asked for (their seed is recorded): open_clip's warning would say otherwise
            random_init = drop_log_messages("", "No pretrained weights loaded for model")
            with torch.random.fork_rng(devices=[]), random_init:
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
