"""What an engine's decollated output holds, as the tensors metrics and reports read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.handlers import from_engine

__all__ = ["scores_and_labels"]


def scores_and_labels(output: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, C)`` float32 class scores and ``(B,)`` long labels of a decollated engine output, on the scores' device.

    The output transform of every metric of :func:`create_evaluator`. MONAI decollates a batch's labels into Python
    numbers (0-d tensors become ``.item()``), so they must be put back on the device of the scores: on a GPU the
    metrics would otherwise compare ``cuda`` scores with ``cpu`` labels. Scores are cast to float32 (under autocast
    they are bf16/fp16). Returning scores rather than argmax indices keeps Ignite in its multi-class case.
    """
    pred, label = from_engine(["pred", "label"])(output)
    scores = torch.stack([torch.as_tensor(p) for p in pred]).float()
    labels = torch.stack([torch.as_tensor(t).reshape(()) for t in label]).to(device=scores.device, dtype=torch.long)
    return scores.as_subclass(torch.Tensor), labels.as_subclass(torch.Tensor)
