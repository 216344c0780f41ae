"""Whether a classifier learned anything: the one place that decides it, for every command that shows results.

A network that predicts one class for every image, or scores at chance, still yields an accuracy, a confusion matrix,
a temperature and conformal sets that look like results. :func:`learning_warnings` turns such outputs into sentences
that say what is wrong and what to do; the epoch line of ``train``, the summary of ``evaluate``, ``predict``,
``explain``, the demo and the ``compare`` report print them.

What it flags (thresholds in the constants below):

- one class predicted for every image of a labelled split that holds several classes;
- balanced accuracy at chance (not more than :data:`CHANCE_MARGIN` above ``1 / C``);
- every image's highest probability within :data:`UNIFORM_MARGIN` of ``1 / C`` (the model does not separate the
  classes; this needs no labels);
- a temperature fitted at a bound of :data:`~monai_cilmp.metrics.temperature.TEMPERATURE_BOUNDS` (the logits carry
  no usable confidence);
- a calibration fitted on fewer than :data:`MIN_CALIBRATION_IMAGES` images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from monai_cilmp.metrics.temperature import TEMPERATURE_BOUNDS

__all__ = [
    "CHANCE_MARGIN",
    "COLLAPSE_ADVICE",
    "MIN_CALIBRATION_IMAGES",
    "UNIFORM_MARGIN",
    "calibration_warnings",
    "learning_warnings",
]

#: balanced accuracy at most this far above ``1 / C`` counts as chance
CHANCE_MARGIN = 0.05
#: highest probabilities all within this of ``1 / C``: the model does not separate the classes
UNIFORM_MARGIN = 0.02
#: fewer calibration images than this give a temperature and conformal thresholds that change from draw to draw
MIN_CALIBRATION_IMAGES = 50
#: what to do about a model that learned nothing
COLLAPSE_ADVICE = (
    "train longer or with another learning rate (--epochs, --lr), on more images or from pretrained weights "
    "(--pretrained), and check that the datalist's labels match its images"
)


def _name(index: int, class_names: Sequence[str] | None) -> str:
    return f"'{class_names[index]}'" if class_names is not None and index < len(class_names) else f"class {index}"


def learning_warnings(
    probabilities: Sequence[Sequence[float]] | np.ndarray | None = None,
    labels: Sequence[int] | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    split: str = "evaluated",
    temperature: float | None = None,
    n_calibration: int | None = None,
    fitted_on: str | None = "validation",
) -> list[str]:
    """Sentences saying that a model learned nothing or that its calibration cannot be trusted, each with what to
    do (empty: nothing to say).

    Args:
        probabilities: ``(N, C)`` class probabilities of a split (or logits: only their ranking and, for the
            uniformity check, their softmax matter; pass probabilities when a temperature was applied).
        labels: ``(N,)`` labels (``None``: unlabelled images, only the uniformity check runs).
        class_names: class names in label order, to name the class predicted for everything.
        split: how to name the images in the sentences (e.g. ``"validation"``).
        temperature: the run's fitted temperature (``None``: none fitted).
        n_calibration: how many images the calibration was fitted on (``None``: none fitted).
        fitted_on: the split the calibration was fitted on.
    """
    out = _prediction_warnings(probabilities, labels, class_names, split) if probabilities is not None else []
    return out + calibration_warnings(temperature, n_calibration, fitted_on)


def _prediction_warnings(
    probabilities: Sequence[Sequence[float]] | np.ndarray,
    labels: Sequence[int] | np.ndarray | None,
    class_names: Sequence[str] | None,
    split: str,
) -> list[str]:
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        return []
    if not np.allclose(p.sum(axis=1), 1.0, atol=1e-4) or (p < 0).any():  # logits: their softmax
        z = p - p.max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n, c = p.shape
    chance = 1.0 / c
    predicted = p.argmax(axis=1)
    problems: list[str] = []
    if labels is not None:
        y = np.asarray(labels).reshape(-1).astype(int)
        present = np.unique(y)
        if present.size > 1 and np.unique(predicted).size == 1:
            problems.append(
                f"it predicts {_name(int(predicted[0]), class_names)} for all {n} {split} images, "
                f"which hold {present.size} classes"
            )
        recalls = [float(np.mean(predicted[y == k] == k)) for k in present]
        balanced = float(np.mean(recalls)) if recalls else 0.0
        if present.size > 1 and balanced <= chance + CHANCE_MARGIN:
            problems.append(f"its balanced accuracy {balanced:.3f} is at chance (1/{c} = {chance:.3f})")
    if float(p.max(axis=1).max()) <= chance + UNIFORM_MARGIN:
        problems.append(f"every {split} image gets about {chance:.2f} for each class: it does not separate them")
    if not problems:
        return []
    return [f"The model learned nothing usable: {'; '.join(problems)}. What to do: {COLLAPSE_ADVICE}."]


def calibration_warnings(
    temperature: float | None,
    n_images: int | None,
    fitted_on: str | None = "validation",
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
) -> list[str]:
    """Sentences saying that a fitted calibration cannot be trusted (empty: nothing to say).

    Args:
        temperature: the fitted temperature (``None``: no calibration).
        n_images: how many images it was fitted on.
        fitted_on: the split it was fitted on.
        bounds: the temperatures a fit may return (a fit at either bound did not converge to a useful value).
    """
    out: list[str] = []
    split = fitted_on or "calibration"
    if temperature is not None and not bounds[0] * 1.001 < float(temperature) < bounds[1] * 0.999:
        out.append(
            f"The temperature T = {float(temperature):.2f} fitted on the {split} split sits at its bound "
            f"({bounds[0]:g} to {bounds[1]:g}): the model's scores carry no usable confidence, so its probabilities "
            f"and prediction sets mean nothing. What to do: {COLLAPSE_ADVICE}."
        )
    if n_images is not None and int(n_images) < MIN_CALIBRATION_IMAGES:
        out.append(
            f"The calibration was fitted on only {int(n_images)} {split} images; at least {MIN_CALIBRATION_IMAGES} "
            "are needed for a temperature and conformal sets that hold on new images. What to do: give the "
            f"{split} split more images (e.g. `monai-cilmp prepare` with a larger validation fraction) and evaluate "
            "again."
        )
    return out
