"""The classification infer task: one trained CILMP run served through MONAI Label.

The network and the preprocessing are rebuilt exactly as ``monai-cilmp predict --run DIR`` rebuilds them: the CILMP
bundle's ``inference.json`` with the run's preset overlay (``presets/<preset>.json``) and its ``from_run.json`` overlay
reads the run folder (``monai_cilmp.engines.load_run``: every stored value checked, the backbone weights against
their hash, the run's own copy of the knowledge bank), builds the run's network with its trained state, and its
``preprocessing`` lists the training preset's deterministic stages. Class probabilities come from the library's
``predict`` (the same evaluator, autocast and softmax as the command line).

Unlike MONAI Label's generic ``BundleInferTask`` this task has no post-restore step (``Restored`` would try to put a
class-score vector back into image space) and no post-transforms at all: the writer turns the probabilities into
JSON.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

logger = logging.getLogger(__name__)

__all__ = ["CILMPClassification", "CILMPSaliency", "ImageInputError", "salient_region"]


class ImageInputError(ValueError):
    """The requested image cannot be read as an image; the message is one sentence naming the file.

    ``missing`` is true when the file does not exist (rather than not being a readable image).
    """

    def __init__(self, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def _image_error(error: BaseException) -> BaseException | None:
    """The reader's own error (unreadable or missing file) somewhere in an exception's chain, if any."""
    from monai_cilmp.transforms.readers import ImageReadError

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, (ImageReadError, FileNotFoundError)):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class CILMPClassification(BasicInferTask):
    """Class probabilities of one image with a trained CILMP run (a folder with ``checkpoints/<name>.pt``).

    Args:
        run_dir: the run folder written by ``monai-cilmp train`` or the CILMP bundle's ``train.json``.
        checkpoint: ``"final"`` (default) or ``"last"``.
        description: shown by ``/info/``.
        preload: build the network now (on the default device) instead of at the first request.

    Raises:
        FileNotFoundError: the checkpoint or the run's knowledge bank is missing.
        ValueError: the checkpoint was not written by a CILMP training run.
    """

    #: MONAI Label's kind of task (the saliency task below returns a label image of one segment instead)
    task_type = InferType.CLASSIFICATION

    def __init__(
        self, run_dir: str | Path, checkpoint: str = "final", description: str | None = None, preload: bool = False
    ) -> None:
        from monai_cilmp.engines import load_run

        self.run = load_run(run_dir, checkpoint)
        self.run_dir, self.checkpoint, self.checkpoint_name = self.run.directory, self.run.checkpoint, checkpoint
        self.class_names = self.run.class_names
        self.preset = str(self.run.metadata["preset"])
        self.backbone = str(self.run.metadata["backbone"])
        self._loaded: dict[str, tuple[Any, Any, float]] = {}
        self._lock = threading.Lock()
        super().__init__(
            path=str(self.checkpoint),
            network=None,
            type=self.task_type,
            labels=self.task_labels(),
            dimension=2,
            description=description
            or f"CILMP classifier ({self.backbone}, {self.preset} preset) from {self.run_dir.name}",
        )
        if preload:
            from monailabel.utils.others.generic import name_to_device

            self._load(name_to_device(None))

    def task_labels(self) -> list[str] | dict[str, int]:
        """The ``labels`` ``/info/`` lists: the class names (the saliency task has its one segment)."""
        return self.class_names

    def info(self) -> dict[str, Any]:
        return {
            **super().info(),
            "preset": self.preset,
            "backbone": self.backbone,
            "checkpoint": self.checkpoint.name,
        }

    def is_valid(self) -> bool:
        return self.checkpoint.is_file()

    def _load(self, device: str) -> tuple[Any, Any]:
        """The network (trained state loaded, eval mode, on ``device``) and the preprocessing, built once per device
        and rebuilt when the checkpoint file changes."""
        from monai_cilmp.cli._bundle import from_run_configs, parse_bundle

        device = str(device)
        with self._lock:
            mtime = self.checkpoint.stat().st_mtime
            cached = self._loaded.get(device)
            if cached is not None and cached[2] == mtime:
                return cached[0], cached[1]
            logger.info(f"Building the CILMP network of {self.run_dir} on {device}")
            overrides = {"output_dir": str(self.run_dir), "checkpoint_name": self.checkpoint_name, "device": device}
            configs = from_run_configs(self.preset)  # the run's preset lists its transforms
            network = parse_bundle(configs, overrides).get_parsed_content("network")
            network.eval()
            preprocessing = parse_bundle(configs, overrides).get_parsed_content("preprocessing")
            self._loaded[device] = (network, preprocessing, mtime)
            return network, preprocessing

    def pre_transforms(self, data: dict[str, Any] | None = None) -> list:
        from monailabel.utils.others.generic import name_to_device

        device = data.get("device") if data else None
        _, preprocessing = self._load(name_to_device(device))
        return [preprocessing]

    def run_pre_transforms(self, data: dict[str, Any], transforms) -> dict[str, Any]:
        try:
            return super().run_pre_transforms(data, transforms)
        except Exception as e:
            cause = _image_error(e)
            if cause is None:
                raise
            raise ImageInputError(str(cause), missing=isinstance(cause, FileNotFoundError)) from e

    def post_transforms(self, data: dict[str, Any] | None = None) -> list:
        return []  # the probabilities are final; in particular no Restored step

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda") -> dict:
        from monai.data import DataLoader, Dataset

        from monai_cilmp.engines import predict_calibrated

        network, _ = self._load(device)
        image = data[self.input_key]
        if not np.isfinite(np.asarray(image, dtype=np.float32)).all():
            raise ImageInputError(f"Image '{data.get('image_path', 'upload')}' holds NaN or infinite values.")
        loader = DataLoader(Dataset([{self.input_key: data[self.input_key]}]), batch_size=1, num_workers=0)
        # issue 14: the run's temperature and conformal set (calibration.json) when `evaluate` fitted them
        probs, _, sets = predict_calibrated(network, loader, device, self.run_dir)
        data[self.output_label_key] = probs[0]
        data["prediction_set"] = None if sets is None else [n for n, s in zip(self.class_names, sets[0]) if s]
        return data

    def writer(self, data: dict[str, Any], extension=None, dtype=None) -> tuple[None, dict[str, Any]]:
        """``prediction`` in MONAI Label's classification format plus ``predicted`` and ``probabilities``."""
        probs = [float(p) for p in np.asarray(data[self.output_label_key], dtype=np.float64).reshape(-1)]
        best = int(np.argmax(probs))
        return None, {
            "prediction": [{"idx": i, "label": n, "score": p} for i, (n, p) in enumerate(zip(self.class_names, probs))],
            "predicted": self.class_names[best],
            "probabilities": dict(zip(self.class_names, probs)),
            **({"prediction_set": data["prediction_set"]} if data.get("prediction_set") is not None else {}),
        }

    def clear(self) -> None:
        super().clear()
        self._loaded.clear()

    clear_cache = clear


class CILMPSaliency(CILMPClassification):
    """Where in the image the run looked, as one segment a MONAI Label client shows as what it is: the pixels whose
    saliency (HiResCAM on the image tower's patch tokens, the map of ``monai-cilmp explain``, for the predicted class
    or ``params={"class": NAME}``, named in the answer's ``class``) is at least :attr:`threshold` of the map's
    maximum. Served beside each classifier as ``<model>_saliency``: a segmentation task with the single label
    ``salient region`` (value 1 on 0), returned as an 8-bit PNG label image at the image's own pixel size.

    A segmentation client (3D Slicer's MONAI Label module) imports every distinct value of a label image as one segment
    named after ``label_names``, so a continuous heat map would arrive as up to 255 segments: the continuous map is
    what ``monai-cilmp explain`` writes."""

    task_type = InferType.SEGMENTATION
    #: the segment's name and its value in the label image
    segment_name = "salient region"
    #: fraction of the map's maximum from which a pixel belongs to the salient region
    threshold = 0.5

    def task_labels(self) -> dict[str, int]:
        return {self.segment_name: 1}

    def pre_transforms(self, data: dict[str, Any] | None = None) -> list:
        return []  # the explanation reads the file itself (it maps the saliency back to the file's geometry)

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda") -> dict:
        import torch

        from monai_cilmp.explain.images import saliency_for_file

        path = data.get("image_path") or data.get(self.input_key)
        if not isinstance(path, str) or not Path(path).is_file():
            raise ImageInputError(f"Image '{path}' is not a file the app can read.", missing=True)
        wanted = data.get("class")
        if wanted is not None and wanted not in self.class_names:
            raise ValueError(f"Class '{wanted}' is not one of this model's classes: {', '.join(self.class_names)}.")
        network, preprocessing = self._load(device)
        try:
            if wanted is not None:
                index = self.class_names.index(wanted)
            else:
                index = self._predicted(network, preprocessing, path)
            with torch.enable_grad():
                heat = saliency_for_file(network, path, preprocessing, index)
        except Exception as e:
            cause = _image_error(e)
            if cause is None:
                raise
            raise ImageInputError(str(cause), missing=isinstance(cause, FileNotFoundError)) from e
        data[self.output_label_key] = salient_region(heat, self.threshold)
        data["explained_class"] = self.class_names[index]
        return data

    @staticmethod
    def _predicted(network: Any, preprocessing: Any, path: str) -> int:
        """The class the network predicts for the file (the one its saliency explains by default)."""
        import torch

        image = preprocessing({"image": path})["image"]
        x = (image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image))[None]
        with torch.no_grad():
            return int(network(x.to(next(network.buffers()).device).float()).argmax())

    def writer(self, data: dict[str, Any], extension=None, dtype=None) -> tuple[str, dict[str, Any]]:
        """The region as a PNG label image (MONAI Label deletes it after sending it) and what it shows."""
        import tempfile

        from PIL import Image

        region = np.asarray(data[self.output_label_key], dtype=np.uint8)
        with tempfile.NamedTemporaryFile(suffix=".png", delete=False) as f:
            Image.fromarray(region, mode="L").save(f, format="PNG")
        return f.name, {
            "label_names": self.task_labels(),
            "class": data["explained_class"],
            "threshold": self.threshold,
            "salient_fraction": float(region.mean()) if region.size else 0.0,
        }


def salient_region(saliency: np.ndarray, threshold: float) -> np.ndarray:
    """``1`` where ``saliency`` reaches ``threshold`` of its maximum, ``0`` elsewhere (all ``0`` for an empty map)."""
    saliency = np.asarray(saliency, dtype=np.float32)
    peak = float(saliency.max()) if saliency.size else 0.0
    if not peak > 0:
        return np.zeros(saliency.shape, dtype=np.uint8)
    return (saliency >= threshold * peak).astype(np.uint8)
