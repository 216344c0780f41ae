"""Which MLP activation (QuickGELU for OpenAI's weights, GELU otherwise) a checkpoint file was trained with."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import open_clip

from .backbone_checkpoints import _is_torchscript
from .backbone_registry import _model_config

__all__: list[str] = []


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
