"""Explaining a trained run's predictions image by image: saliency overlay and map, knowledge words, calibrated
scores."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from monai_cilmp.engines.evaluation import prediction_set_names
from monai_cilmp.metrics.temperature import softmax
from monai_cilmp.utils.files import atomic_write

from .knowledge import knowledge_attributions, save_knowledge_plot
from .saliency import TokenGradCAM, save_saliency_overlay, unnormalise

__all__ = [
    "explain_images",
    "format_explanation",
    "saliency_for_file",
    "saliency_in_image_geometry",
    "save_saliency_map",
]


def _stem(name: Any, index: int, used: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(name)).stem)[:80] or f"image{index}"
    candidate, k = stem, 1
    while candidate in used:
        k += 1
        candidate = f"{stem}-{k}"
    used.add(candidate)
    return candidate


def saliency_in_image_geometry(
    saliency: torch.Tensor | np.ndarray, image: Any, preprocessing: Any, key: str = "image"
) -> np.ndarray | None:
    """A ``(H, W)`` map at the network's input size brought back to the geometry of the file it came from.

    The preprocessed ``image`` (a MONAI ``MetaTensor``) records the spatial transforms applied to it; MONAI's
    ``Compose.inverse`` undoes the invertible ones (the centre crop: regions the network never saw become 0) and a
    recorded ``Resize`` is undone by bilinear interpolation to its original size.

    Returns:
        the map at the original image's ``(H, W)``, or ``None`` when the preprocessing recorded a step that cannot be
        undone (e.g. a slice selected from a volume).
    """
    import torch.nn.functional as F
    from monai.data import MetaTensor

    ops = list(getattr(image, "applied_operations", []) or [])
    if not ops:
        return None
    heat = torch.as_tensor(np.asarray(saliency, dtype=np.float32)).reshape(1, *image.shape[-2:])
    heat = MetaTensor(heat, meta=dict(getattr(image, "meta", {}) or {}))
    heat.applied_operations = ops
    try:
        heat = preprocessing.inverse({key: heat})[key]
    except Exception:  # a recorded step MONAI cannot invert
        return None
    for op in reversed(list(getattr(heat, "applied_operations", []) or [])):
        size = op.get("orig_size")
        if op.get("class") != "Resize" or size is None or len(size) != 2:
            return None
        heat = F.interpolate(torch.as_tensor(heat)[None].float(), size=tuple(int(s) for s in size), mode="bilinear")[0]
    return np.clip(np.asarray(torch.as_tensor(heat)[0], dtype=np.float32), 0.0, 1.0)


def saliency_for_file(
    network: nn.Module,
    path: str | os.PathLike,
    preprocessing: Callable[[dict], dict],
    class_idx: int | None = None,
    method: str = "hirescam",
    cam: TokenGradCAM | None = None,
) -> np.ndarray:
    """The saliency map of one image file as an 8-bit ``(H, W)`` label image at the file's own size (0-255), or at
    the network's input size when the preprocessing cannot be undone; e.g. for a MONAI Label task that returns it.

    Args:
        network: the trained classifier.
        path: the image file.
        preprocessing: the run's evaluation transforms (``{"image": path} -> {"image": MetaTensor}``).
        class_idx: the class explained (default: the predicted one).
        method: ``"hirescam"`` or ``"gradcam"``.
        cam: a :class:`TokenGradCAM` of ``network`` to reuse (saves finding its target again).
    """
    image = preprocessing({"image": str(path)})["image"]
    device = next(network.buffers()).device
    x = (image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image))[None].to(device).float()
    heat = (cam or TokenGradCAM(network, method=method))(x, class_idx=class_idx)[0, 0].numpy()
    original = saliency_in_image_geometry(heat, image, preprocessing)
    shown = original if original is not None else heat
    return np.round(np.clip(shown, 0, 1) * 255).astype(np.uint8)


def save_saliency_map(saliency: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a ``(H, W)`` map in ``[0, 1]`` as an 8-bit greyscale PNG (0-255), atomically."""
    from PIL import Image

    pixels = np.round(np.clip(np.asarray(saliency, dtype=np.float64), 0, 1) * 255).astype(np.uint8)
    return atomic_write(path, lambda tmp: Image.fromarray(pixels, mode="L").save(tmp, format="PNG"))


def explain_images(
    network: nn.Module,
    images: Sequence[str],
    preprocessing: Callable[[dict], dict],
    out_dir: str | os.PathLike,
    calibration: Any | None = None,
    target_class: str | None = None,
    top_k: int = 8,
    device: torch.device | str | None = None,
    saliency: str = "hirescam",
) -> list[dict[str, Any]]:
    """For every image: class probabilities (with the run's calibration), a saliency overlay PNG and the saliency map
    at the image file's own size, and, for networks with class knowledge (CILMP), the words of each class description
    that moved its score most, printed into the result and plotted.

    Args:
        network: the trained classifier (eval mode is set here).
        images: image files.
        preprocessing: the run's evaluation transforms (``{"image": path} -> {"image": (3, H, W) MetaTensor}``).
        out_dir: where ``<image>_saliency.png`` (overlay), ``<image>_saliency_map.png`` (the map at the file's size,
            8-bit) and ``<image>_knowledge.png`` go.
        calibration: a :class:`~monai_cilmp.engines.RunCalibration` (temperature, prediction sets) or ``None``.
        target_class: explain this class instead of each image's predicted class.
        top_k: words per class in the plot and the result.
        device: where to run (default: where the network is).
        saliency: ``"hirescam"`` or ``"gradcam"`` (see :class:`~monai_cilmp.explain.SaliencyMethod`).

    Returns:
        per image: ``image``, ``predicted``, ``explained``, ``probabilities``, ``prediction_set`` (or ``None``),
        ``saliency`` (``(H, W)`` array at the network's input size), ``saliency_empty`` (no patch raised the score),
        ``files`` and ``knowledge`` (class -> top words with scores, or ``None``).
    """

    class_names = list(network.class_names)
    if target_class is not None and target_class not in class_names:
        raise ValueError(f"Class '{target_class}' is not one of the run's classes {class_names}.")
    out_dir = Path(out_dir)
    device = torch.device(device) if device is not None else next(network.buffers()).device
    network = network.to(device).eval()
    cam = TokenGradCAM(network, method=saliency)
    results: list[dict[str, Any]] = []
    used: set[str] = set()
    for index, name in enumerate(images):
        image = preprocessing({"image": str(name)})["image"]
        x = (image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image))[None].to(device).float()
        with torch.no_grad():
            logits = network(x).float().cpu().numpy()
        probs = calibration.probabilities(logits)[0] if calibration is not None else softmax(logits)[0]
        sets = prediction_set_names(calibration.prediction_sets(probs[None]), class_names) if calibration else None
        predicted = int(probs.argmax())
        c = class_names.index(target_class) if target_class else predicted
        heat = cam(x, class_idx=c)[0, 0].numpy()
        empty = not bool(np.max(heat) > 0)
        note = " - empty map: no patch token raised this score" if empty else ""
        stem = _stem(name, index, used)
        title = f"{Path(str(name)).name}: {class_names[c]} (p = {probs[c]:.2f}){note}"
        picture = unnormalise(x[0], network.image_mean, network.image_std)
        files = {"saliency": str(save_saliency_overlay(picture, heat, out_dir / f"{stem}_saliency.png", title=title))}
        original = saliency_in_image_geometry(heat, image, preprocessing)
        if original is not None:
            files["saliency_map"] = str(save_saliency_map(original, out_dir / f"{stem}_saliency_map.png"))
        knowledge = None
        attributions = knowledge_attributions(network, x)
        if attributions is not None:
            knowledge = {a.class_name: a.top(top_k) for a in attributions}
            order = np.argsort(-probs)[: min(4, len(class_names))]  # the most probable classes
            files["knowledge"] = str(
                save_knowledge_plot(
                    [attributions[j] for j in order],
                    out_dir / f"{stem}_knowledge.png",
                    top_k=top_k,
                    probabilities=[probs[j] for j in order],
                    title=f"{Path(str(name)).name}: description words that moved each class's score",
                )
            )
        results.append(
            {
                "image": str(name),
                "predicted": class_names[predicted],
                "explained": class_names[c],
                "probabilities": {n: float(p) for n, p in zip(class_names, probs)},
                "prediction_set": sets[0] if sets is not None else None,
                "saliency": heat,
                "saliency_empty": empty,
                "saliency_size": list(original.shape) if original is not None else list(heat.shape),
                "files": files,
                "knowledge": knowledge,
            }
        )
    return results


def format_explanation(result: dict[str, Any], top_k: int = 5) -> str:
    """Lines for people: the prediction, its set, the saliency files, and each class's most influential words."""
    probs = result["probabilities"]
    lines = [f"{result['image']}: predicted {result['predicted']} (p = {probs[result['predicted']]:.3f})"]
    if result.get("prediction_set") is not None:
        lines.append(f"  prediction set: {{{', '.join(result['prediction_set'])}}}")
    empty = " (empty: no patch token raised this score)" if result.get("saliency_empty") else ""
    lines.append(f"  saliency of '{result['explained']}': {result['files']['saliency']}{empty}")
    if "saliency_map" in result["files"]:
        size = "x".join(str(s) for s in result["saliency_size"])
        lines.append(f"  map at the image's size ({size}): {result['files']['saliency_map']}")
    knowledge = result.get("knowledge")
    if knowledge is None:
        lines.append("  (this method has no class knowledge to attribute)")
        return "\n".join(lines)
    for name, p in sorted(probs.items(), key=lambda kv: -kv[1]):
        words = ", ".join(f"{w!r} {s:+.2g}" for w, s in knowledge[name][:top_k])
        lines.append(f"  {name} (p = {p:.3f}): {words}")
    lines.append(f"  plot: {result['files']['knowledge']}")
    return "\n".join(lines)
