"""Where a backbone's weights are found: open_clip's pretrained tags, the Hugging Face Hub and cache, and the
project's own weights (made by ``monai-cilmp demo``), with one sentence saying what to download when they are missing.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import socket
import urllib.parse
from pathlib import Path

import open_clip

from monai_cilmp.utils.files import atomic_write, write_json

from .backbone_registry import TINY_BACKBONE

__all__ = [
    "PROJECT_PRETRAINED",
    "BackboneWeightsNotFoundError",
    "keep_project_pretrained",
    "project_pretrained_file",
    "project_weights_dir",
]

#: weights this project makes, named like open_clip's pretrained tags: (model, tag) -> (file name, the command that
#: makes them); they are kept in :func:`project_weights_dir`
PROJECT_PRETRAINED = {
    (TINY_BACKBONE, "synthetic"): ("cilmp-tiny-synthetic.safetensors", "monai-cilmp demo"),
}
_OPEN_CLIP_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class BackboneWeightsNotFoundError(FileNotFoundError):
    """Raised when the weights asked for are neither on disk nor (offline) allowed to be downloaded."""


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
