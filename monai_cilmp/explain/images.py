"""Explaining a trained run's predictions image by image: saliency overlay, knowledge words, calibrated scores."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .knowledge import knowledge_attributions, save_knowledge_plot
from .saliency import TokenGradCAM, save_saliency_overlay, unnormalise

__all__ = ["explain_images", "format_explanation"]


def _stem(name: Any, index: int, used: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(name)).stem)[:80] or f"image{index}"
    candidate, k = stem, 1
    while candidate in used:
        k += 1
        candidate = f"{stem}-{k}"
    used.add(candidate)
    return candidate


def explain_images(
    network: nn.Module,
    data_loader: Any,
    names: Sequence[Any],
    out_dir: str | os.PathLike,
    calibration: Any | None = None,
    target_class: str | None = None,
    top_k: int = 8,
    device: torch.device | str | None = None,
    saliency: str = "hirescam",
) -> list[dict[str, Any]]:
    """For every image: class probabilities (with the run's calibration), a Grad-CAM overlay PNG and, for networks
    with class knowledge (CILMP), the words of each class description that moved its score most, printed into the
    result and plotted.

    Args:
        network: the trained classifier (eval mode is set here).
        data_loader: batches of ``{"image"}`` in the order of ``names`` (preprocessed by the run's preset).
        names: an identifier per image (file paths); output files are named after them.
        out_dir: where ``<image>_saliency.png`` and ``<image>_knowledge.png`` go.
        calibration: a :class:`~monai_cilmp.engines.RunCalibration` (temperature, prediction sets) or ``None``.
        target_class: explain this class instead of each image's predicted class.
        top_k: words per class in the plot and the result.
        device: where to run (default: where the network is).
        saliency: ``"hirescam"`` or ``"gradcam"`` (see :class:`~monai_cilmp.explain.SaliencyMethod`).

    Returns:
        per image: ``image``, ``predicted``, ``explained``, ``probabilities``, ``prediction_set`` (or ``None``),
        ``saliency`` (``(H, W)`` array), ``saliency_empty`` (no patch raised the score), ``files`` and
        ``knowledge`` (class -> top words with scores, or ``None``).
    """
    from monai_cilmp.engines.evaluation import prediction_set_names
    from monai_cilmp.metrics.temperature import softmax

    class_names = list(network.class_names)
    if target_class is not None and target_class not in class_names:
        raise ValueError(f"Class '{target_class}' is not one of the run's classes {class_names}.")
    out_dir = Path(out_dir)
    device = torch.device(device) if device is not None else next(network.buffers()).device
    network = network.to(device).eval()
    cam = TokenGradCAM(network, method=saliency)
    results: list[dict[str, Any]] = []
    used: set[str] = set()
    index = 0
    for batch in data_loader:
        images = batch["image"] if isinstance(batch, dict) else batch
        images = images.as_tensor() if hasattr(images, "as_tensor") else images
        images = images.to(device).float()
        with torch.no_grad():
            logits = network(images).float().cpu().numpy()
        probs = calibration.probabilities(logits) if calibration is not None else softmax(logits)
        sets = prediction_set_names(calibration.prediction_sets(probs), class_names) if calibration else None
        predicted = probs.argmax(axis=1)
        explained = [class_names.index(target_class) if target_class else int(p) for p in predicted]
        maps = cam(images, class_idx=explained)
        for i in range(images.shape[0]):
            name = names[index]
            stem = _stem(name, index, used)
            index += 1
            picture = unnormalise(images[i], network.image_mean, network.image_std)
            heat = maps[i, 0].numpy()
            c = explained[i]
            empty = not bool(np.max(heat) > 0)
            note = " - empty map: no patch token raised this score" if empty else ""
            files = {
                "saliency": str(
                    save_saliency_overlay(
                        picture,
                        heat,
                        out_dir / f"{stem}_saliency.png",
                        title=f"{Path(str(name)).name}: {class_names[c]} (p = {probs[i, c]:.2f}){note}",
                    )
                )
            }
            knowledge = None
            attributions = knowledge_attributions(network, images[i : i + 1])
            if attributions is not None:
                knowledge = {a.class_name: a.top(top_k) for a in attributions}
                order = np.argsort(-probs[i])[: min(4, len(class_names))]  # the most probable classes
                files["knowledge"] = str(
                    save_knowledge_plot(
                        [attributions[j] for j in order],
                        out_dir / f"{stem}_knowledge.png",
                        top_k=top_k,
                        probabilities=[probs[i, j] for j in order],
                        title=f"{Path(str(name)).name}: description words that moved each class's score",
                    )
                )
            results.append(
                {
                    "image": str(name),
                    "predicted": class_names[int(predicted[i])],
                    "explained": class_names[c],
                    "probabilities": {n: float(p) for n, p in zip(class_names, probs[i])},
                    "prediction_set": sets[i] if sets is not None else None,
                    "saliency": heat,
                    "saliency_empty": empty,
                    "files": files,
                    "knowledge": knowledge,
                }
            )
    return results


def format_explanation(result: dict[str, Any], top_k: int = 5) -> str:
    """Lines for people: the prediction, its set, the saliency file, and each class's most influential words."""
    probs = result["probabilities"]
    lines = [f"{result['image']}: predicted {result['predicted']} (p = {probs[result['predicted']]:.3f})"]
    if result.get("prediction_set") is not None:
        lines.append(f"  prediction set: {{{', '.join(result['prediction_set'])}}}")
    empty = " (empty: no patch token raised this score)" if result.get("saliency_empty") else ""
    lines.append(f"  saliency of '{result['explained']}': {result['files']['saliency']}{empty}")
    knowledge = result.get("knowledge")
    if knowledge is None:
        lines.append("  (this method has no class knowledge to attribute)")
        return "\n".join(lines)
    for name, p in sorted(probs.items(), key=lambda kv: -kv[1]):
        words = ", ".join(f"{w!r} {s:+.2g}" for w, s in knowledge[name][:top_k])
        lines.append(f"  {name} (p = {p:.3f}): {words}")
    lines.append(f"  plot: {result['files']['knowledge']}")
    return "\n".join(lines)
