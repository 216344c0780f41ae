"""Loading Hugging Face models (LLMs, encoders, fill-mask and VQA models) with the provenance a bank records.

One place decides device and precision, finds what was really loaded (local folder, Hub snapshot commit, weight
hashes, the embedded default) and turns "not found" into one sentence saying what to download.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from monai.utils import StrEnum, look_up_option, version_geq

from monai_cilmp import __version__

from .embedded import (
    EMBEDDED_DISTRIBUTION,
    EMBEDDED_MODEL_ID,
    EMBEDDED_SHA256,
    embedded_package_version,
    sha256_file,
    verify_embedded_model,
)

__all__ = [
    "Precision",
    "library_versions",
    "load_pretrained",
    "model_source",
    "precision_name",
    "resolve_device",
    "resolve_dtype",
    "weights_sha256",
]

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class Precision(StrEnum):
    """Precision a model is loaded in. ``auto``: bf16 on a GPU that supports it, fp32 otherwise."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


_TORCH_DTYPES = {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"``: the first CUDA device when there is one, else the CPU; anything else as given."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The torch dtype for a :class:`Precision` name (or a torch dtype) on ``device``.

    Raises:
        ValueError: an unknown precision name (the message lists the valid ones).
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    precision = look_up_option(str(dtype or Precision.AUTO), Precision)
    if precision == Precision.AUTO:
        bf16 = device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    return _TORCH_DTYPES[precision]


def precision_name(dtype: torch.dtype) -> str:
    """``fp32``/``bf16``/``fp16`` for a torch dtype (its torch name otherwise)."""
    names = {v: k.value for k, v in _TORCH_DTYPES.items()}
    return names.get(dtype, str(dtype).replace("torch.", ""))


def library_versions() -> dict[str, str]:
    """Versions of the libraries that determine a bank's numbers."""
    import monai
    import tokenizers
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "monai": monai.__version__,
        "monai_cilmp": __version__,
    }


def weights_sha256(folder: str | os.PathLike) -> dict[str, str]:
    """SHA-256 of every weights file directly in ``folder`` (``*.safetensors``, ``*.bin``, ...), by file name.

    Files of a Hugging Face cache snapshot are links to blobs named by their SHA-256 (for LFS files); that name is
    used instead of re-reading gigabytes.
    """
    hashes = {}
    for path in sorted(Path(folder).iterdir()):
        if not path.name.endswith(_WEIGHT_SUFFIXES) or not path.is_file():
            continue
        target = path.resolve()
        hashes[path.name] = target.name if path.is_symlink() and _SHA256.match(target.name) else sha256_file(target)
    return hashes


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name or os.path.exists(name)


def model_source(name_or_path: str | os.PathLike | None, revision: str | None = None) -> dict[str, Any]:
    """Where a model's files come from, before loading it.

    Args:
        name_or_path: a local folder, a Hugging Face Hub id, or ``None`` for the embedded default.
        revision: Hub revision (branch, tag or commit); ignored for folders.

    Returns:
        ``{"load_from": what to pass to ``from_pretrained``, "source_model": the name to record,
        "model_path": local folder or None, "embedded": bool, "revision": ...}``.

    Raises:
        FileNotFoundError: a local path that does not exist (or an embedded model that is not installed).
        ValueError: the embedded model's weights do not match the pinned hash.
    """
    if name_or_path is None:
        folder = verify_embedded_model()
        return {
            "load_from": str(folder),
            "source_model": EMBEDDED_MODEL_ID,
            "model_path": str(folder),
            "embedded": True,
            "embedded_package": f"{EMBEDDED_DISTRIBUTION} {embedded_package_version()}",
            "revision": None,
        }
    name = os.fspath(name_or_path)
    if _looks_like_path(name):
        folder = Path(name).expanduser()
        if not folder.exists():
            raise FileNotFoundError(
                f"Model folder '{name}' does not exist: give a folder with config.json, weights and tokenizer files "
                "(as written by save_pretrained) or a Hugging Face model id."
            )
        return {
            "load_from": str(folder),
            "source_model": name,
            "model_path": str(folder.resolve()),
            "embedded": False,
            "revision": None,
        }
    return {"load_from": name, "source_model": name, "model_path": None, "embedded": False, "revision": revision}


def _hub_snapshot(name: str, revision: str | None, cache_dir: str | os.PathLike | None) -> Path | None:
    """The local snapshot folder of a Hub model that has just been loaded (its name is the commit hash)."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(
        name, "config.json", cache_dir=None if cache_dir is None else str(cache_dir), revision=revision
    )
    return Path(path).parent if isinstance(path, str) else None


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-weight progress bars and load reports; what matters is checked explicitly."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _dtype_keyword() -> str:
    import transformers

    # transformers 4.56 renamed from_pretrained's torch_dtype to dtype; older versions would ignore "dtype"
    return "dtype" if version_geq(transformers.__version__, "4.56") else "torch_dtype"


def load_pretrained(
    name_or_path: str | os.PathLike | None,
    auto_class: Any,
    *,
    processor: bool = False,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    revision: str | None = None,
    trust_remote_code: bool = False,
    offline: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """Load a model with its tokenizer (or processor), in eval mode on ``device``, and describe what was loaded.

    Args:
        name_or_path: local folder, Hugging Face Hub id, or ``None`` for the embedded default
            (:mod:`~monai_cilmp.knowledge.embedded`, hash-checked).
        auto_class: the transformers auto class (``AutoModel``, ``AutoModelForCausalLM``, ``AutoModelForMaskedLM``,
            ``AutoModelForVisualQuestionAnswering``, ...).
        processor: load an ``AutoProcessor`` (images + text) instead of an ``AutoTokenizer``.
        device: torch device or ``"auto"``.
        dtype: a :class:`Precision` name or torch dtype.
        revision: Hub revision.
        trust_remote_code: allow model code from the Hub (only for models you trust).
        offline: never download (use only local folders and the Hugging Face cache).
        cache_dir: Hugging Face cache folder.

    Returns:
        ``(model, tokenizer_or_processor, provenance)``; provenance holds ``source_model``, ``model_path``,
        ``revision``, ``weights_sha256``, ``model_class``, ``model_type``, ``device``, ``dtype`` and, for the
        embedded model, ``embedded_package``.

    Raises:
        FileNotFoundError: the model cannot be found locally and cannot be downloaded.
        ValueError: the embedded weights fail their hash check, or an unknown precision.
    """
    import transformers

    source = model_source(name_or_path, revision)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    options: dict[str, Any] = {"trust_remote_code": trust_remote_code, "local_files_only": offline}
    if source["model_path"] is None:
        options.update(revision=revision, cache_dir=None if cache_dir is None else str(cache_dir))
    text_class = transformers.AutoProcessor if processor else transformers.AutoTokenizer
    try:
        with _quiet_transformers():
            model, info = auto_class.from_pretrained(
                source["load_from"], output_loading_info=True, **{_dtype_keyword(): torch_dtype}, **options
            )
            tokenizer = text_class.from_pretrained(source["load_from"], **options)
    except OSError as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FileNotFoundError(
            f"Could not load '{source['source_model']}' ({first_line}); download it first (e.g. `hf download "
            f"{source['source_model']}`) or give a local folder written by save_pretrained."
        ) from e
    model = model.to(torch_device).eval()
    provenance = {k: v for k, v in source.items() if k != "load_from"}
    folder = (
        Path(source["model_path"]) if source["model_path"] else _hub_snapshot(str(name_or_path), revision, cache_dir)
    )
    if source["model_path"] is None and folder is not None:
        provenance.update(model_path=str(folder), revision=folder.name)
    if source["embedded"]:
        provenance["weights_sha256"] = {"model.safetensors": EMBEDDED_SHA256}
    elif folder is not None:
        provenance["weights_sha256"] = weights_sha256(folder)
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        warnings.warn(
            f"{source['source_model']} has no weights for {len(missing)} parameters of {type(model).__name__} "
            f"(e.g. {missing[:3]}); they are randomly initialised.",
            stacklevel=2,
        )
        provenance["missing_weights"] = missing
    config = model.config
    provenance.update(
        model_class=type(model).__name__,
        model_type=getattr(config, "model_type", None),
        device=str(torch_device),
        dtype=precision_name(torch_dtype),
    )
    return model, tokenizer, provenance
