"""The knowledge bank: per-class LLM hidden-state matrices with their provenance, stored as one safetensors file."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_cilmp import __version__
from monai_cilmp.utils.files import atomic_write

__all__ = ["KnowledgeBank", "KnowledgeClassMismatchError"]

_METADATA_KEY = "monai_cilmp.knowledge"
_FORMAT_VERSION = 1


class KnowledgeClassMismatchError(ValueError):
    """The classes of a knowledge bank are not the classes a network was built for."""


def _package_version() -> str:

    return __version__


class KnowledgeBank:
    """Per-class knowledge matrices ``K_c`` of shape ``(L_c, D)`` plus metadata.

    ``L_c`` may differ between classes; ``D`` (the LLM hidden size) is the same for all classes and can be any size.
    The metadata records where the knowledge came from (model, extraction mode and layer, the exact texts, ...)
    so that a bank found on disk explains itself (``monai-cilmp knowledge show``).

    Args:
        tensors: class name -> matrix ``(L_c, D)``; insertion order is the bank's class order.
        metadata: free-form provenance, JSON-serialisable (``source_model``, ``mode``, ``layer``, ``texts``, ...).

    Raises:
        ValueError: no classes, a matrix that is not 2-D or is empty, mixed hidden sizes, or non-finite values.
    """

    def __init__(self, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any] | None = None) -> None:
        if not tensors:
            raise ValueError("A knowledge bank needs at least one class; got no tensors.")
        self._tensors: dict[str, torch.Tensor] = {}
        dims = set()
        for name, value in tensors.items():
            matrix = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
            matrix = matrix.detach().cpu()
            if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
                raise ValueError(
                    f"Knowledge for class '{name}' must be a non-empty (length, hidden_size) matrix, "
                    f"got shape {tuple(matrix.shape)}."
                )
            if not matrix.is_floating_point():
                matrix = matrix.float()
            if not torch.isfinite(matrix).all():
                raise ValueError(f"Knowledge for class '{name}' contains NaN or infinite values; re-extract it.")
            dims.add(matrix.shape[1])
            self._tensors[str(name)] = matrix.contiguous()
        if len(dims) != 1:
            raise ValueError(f"All classes of a knowledge bank must share one hidden size, got {sorted(dims)}.")
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.metadata["class_names"] = self.class_names
        self.metadata["lengths"] = self.lengths
        self.metadata["dim"] = self.dim
        self.metadata.setdefault("package_version", _package_version())

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Any], **metadata: Any) -> KnowledgeBank:
        """Build a bank from ``{class_name: (L_c, D) tensor or array}`` and provenance keywords."""
        return cls(tensors, metadata)

    @property
    def class_names(self) -> list[str]:
        """Class names in the bank's order."""
        return list(self._tensors)

    @property
    def lengths(self) -> list[int]:
        """``L_c`` per class, in the bank's order."""
        return [int(t.shape[0]) for t in self._tensors.values()]

    @property
    def dim(self) -> int:
        """The hidden size ``D``."""
        return int(next(iter(self._tensors.values())).shape[1])

    def __len__(self) -> int:
        return len(self._tensors)

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def __repr__(self) -> str:
        return (
            f"KnowledgeBank(classes={len(self)}, dim={self.dim}, lengths={self.lengths}, "
            f"source_model={self.metadata.get('source_model')!r}, mode={self.metadata.get('mode')!r})"
        )

    def check_classes(self, class_names: Sequence[str]) -> None:
        """Raise :class:`KnowledgeClassMismatchError` unless the bank holds exactly ``class_names``."""
        wanted, present = list(class_names), set(self._tensors)
        missing = [n for n in wanted if n not in present]
        unexpected = [n for n in self._tensors if n not in set(wanted)]
        if missing or unexpected:
            source = self.metadata.get("path", "the knowledge bank")
            raise KnowledgeClassMismatchError(
                f"The classes of {source} do not match the class names: missing {missing or 'none'}, "
                f"unexpected {unexpected or 'none'}; extract a bank for these classes "
                "(`monai-cilmp knowledge extract --classes ...`) or fix the class names."
            )

    def select(self, class_names: Sequence[str]) -> list[torch.Tensor]:
        """Matrices in the order of ``class_names`` (which must be exactly the bank's classes)."""
        self.check_classes(class_names)
        return [self._tensors[n] for n in class_names]

    def padded(self, class_names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero-padded ``(C, L_max, D)`` float32 tensor and ``(C,)`` lengths, in the order of ``class_names``."""
        matrices = self.select(class_names)
        lengths = torch.tensor([m.shape[0] for m in matrices], dtype=torch.long)
        out = torch.zeros(len(matrices), int(lengths.max()), self.dim, dtype=torch.float32)
        for i, m in enumerate(matrices):
            out[i, : m.shape[0]] = m.float()
        return out, lengths

    def save(self, path: str | os.PathLike) -> Path:
        """Write the bank to ``path`` (safetensors, metadata as JSON in its header), atomically.

        Returns:
            the path written.
        """
        from safetensors.torch import save_file

        metadata = {k: v for k, v in self.metadata.items() if k != "path"}
        header = {_METADATA_KEY: json.dumps({"format_version": _FORMAT_VERSION, **metadata}, ensure_ascii=False)}
        tensors = {f"knowledge.{i}": t for i, t in enumerate(self._tensors.values())}
        return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))

    @classmethod
    def load(cls, path: str | os.PathLike) -> KnowledgeBank:
        """Read a bank written by :meth:`save`.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: ``path`` is not a readable knowledge bank.
        """
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"Knowledge bank '{path}' does not exist: create it with `monai-cilmp knowledge extract ... "
                f"--out {path}` or fix the path."
            )
        with open(path, "rb") as f:
            start = f.read(9)
        # safetensors: an 8-byte little-endian header size, then the JSON header; its first byte can be 0x80 as well
        safetensors = len(start) == 9 and start[8:9] == b"{"
        if not safetensors and (start[:1] == b"\x80" or start[:4] == b"PK\x03\x04"):  # a pickle, or torch.save's zip
            raise ValueError(
                f"'{path}' is not a safetensors knowledge bank: it holds a Python pickle, which is never loaded (it "
                "could run code); make a bank with `monai-cilmp knowledge extract ... --out FILE.safetensors` (or "
                "KnowledgeBank.from_tensors(...).save(FILE))."
            )
        problem = None
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                if _METADATA_KEY not in header:
                    raise ValueError("its header has no monai_cilmp knowledge metadata")
                metadata = json.loads(header[_METADATA_KEY])
                names = metadata["class_names"]
                tensors = {name: f.get_tensor(f"knowledge.{i}") for i, name in enumerate(names)}
        except Exception as e:
            problem = f"{e}"
        if problem is not None:  # raised outside the handler: this sentence (file, what to do) is the one shown
            raise ValueError(
                f"'{path}' is not a monai-cilmp knowledge bank in safetensors format ({problem}): make one with "
                "`monai-cilmp knowledge extract ... --out FILE.safetensors`."
            )
        metadata.pop("format_version", None)
        bank = cls(tensors, metadata)
        bank.metadata["path"] = str(path)
        return bank
