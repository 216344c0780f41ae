"""Temperature scaling (Guo et al., ICML 2017): one scalar ``T`` that divides the logits, fitted on held-out data.

Dividing every logit by the same ``T > 0`` keeps each image's ranking of the classes (so accuracy and the predicted
class do not change) and only makes the probabilities softer (``T > 1``, for an over-confident model) or sharper
(``T < 1``). ``T`` is chosen to minimise the negative log-likelihood of the *validation* split; fitting it on the
test split would make the test calibration numbers meaningless.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["TEMPERATURE_BOUNDS", "fit_temperature", "softmax", "temperature_nll"]

#: the smallest and largest temperature :func:`fit_temperature` returns (a fit at a bound found no useful scale)
TEMPERATURE_BOUNDS = (1e-2, 1e2)


def softmax(logits: Sequence[Sequence[float]] | np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / temperature)`` over the last axis, in float64."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def temperature_nll(logits: Sequence[Sequence[float]] | np.ndarray, labels: Sequence[int], temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)`` (computed stably)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    y = np.asarray(labels, dtype=int)
    m = z.max(axis=1, keepdims=True)
    log_norm = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(y.size), y]))


def fit_temperature(
    logits: Sequence[Sequence[float]] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    max_iter: int = 200,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
) -> float:
    """The temperature that minimises the NLL of ``labels`` under ``softmax(logits / T)``.

    Optimises ``log T`` (so ``T`` stays positive) with L-BFGS and a strong-Wolfe line search, in float64, starting
    from ``T = 1``; the result is clipped to ``bounds``.

    Args:
        logits: validation logits ``(N, C)`` (not probabilities).
        labels: validation labels ``(N,)``.
        max_iter: L-BFGS iterations.
        bounds: the smallest and largest temperature returned.

    Raises:
        ValueError: no data, mismatched shapes, labels out of range, or non-finite logits.
    """
    import torch

    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1))
    if z.ndim != 2 or z.shape[0] != y.shape[0] or y.numel() == 0:
        raise ValueError(
            f"Temperature scaling needs logits (N, C) and N labels with N > 0, got {tuple(z.shape)} and {y.shape[0]}."
        )
    if int(y.min()) < 0 or int(y.max()) >= z.shape[1]:
        raise ValueError(f"Labels must lie in 0..{z.shape[1] - 1}, got {int(y.min())}..{int(y.max())}.")
    if not torch.isfinite(z).all():
        raise ValueError("Temperature scaling got non-finite logits; check the network's outputs.")
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=int(max_iter), line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    if not np.isfinite(temperature):
        temperature = 1.0
    return float(np.clip(temperature, *bounds))
