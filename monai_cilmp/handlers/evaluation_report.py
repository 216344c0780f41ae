"""The evaluation report as an Ignite handler: what ``evaluate.json``'s evaluator writes when it has seen a split."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from monai_cilmp.engines.distributed import gather_in_dataset_order, rank_and_world_size
from monai_cilmp.engines.evaluation import calibration_logits, write_evaluation_report
from monai_cilmp.engines.outputs import scores_and_labels
from monai_cilmp.handlers.nonfinite import batch_files

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["EvaluationReport", "item_files"]


def item_files(batch: Any, key: str = "image") -> list[str | None]:
    """The source file of every item of a batch (decollated list or collated dict), from MONAI's metadata (the
    ``MetaTensor``'s ``meta`` or ``<key>_meta_dict``); ``None`` where unknown."""

    if isinstance(batch, dict):
        return list(batch_files(batch, key))
    files: list[str | None] = []
    for item in batch if isinstance(batch, (list, tuple)) else []:
        meta = {}
        if isinstance(item, dict):
            meta = getattr(item.get(key), "meta", None) or item.get(f"{key}_meta_dict") or {}
        name = meta.get("filename_or_obj") if isinstance(meta, dict) else None
        files.append(str(name) if name is not None else None)
    return files


class EvaluationReport:
    """Collect each iteration's logits and labels and, when the evaluator completes, write the full report of
    :func:`~monai_cilmp.engines.write_evaluation_report` (the same as :func:`~monai_cilmp.engines.evaluate_split`):
    ``<split>_metrics.json``, the confusion matrix, ``<split>_predictions.csv``, the reliability diagram, the
    calibration fitted on the validation split with its conformal sets, TensorBoard, the run metadata's
    ``eval_metrics``.

    The report's metrics go to ``engine.state.evaluation_report`` (and :attr:`report`). The test split is predicted
    once, by the evaluator this handler is attached to; only the calibration's validation split is predicted here,
    with the evaluator's network and device.

    Under ``torch.distributed``, with the evaluator's loader sharded (a
    :class:`~monai_cilmp.engines.distributed.ShardSampler`, ``multi_gpu_evaluate.json``), every rank collects its
    shard, the rows are gathered in the split's order
    (:func:`~monai_cilmp.engines.distributed.gather_in_dataset_order`), and rank 0 alone predicts the calibration
    split and writes the report (every rank gets the metrics in ``engine.state.evaluation_report`` only on rank 0):
    the files are those of one process, up to the float rounding of other batch compositions.

    Args:
        class_names: class names in label order.
        output_dir: where the files go (the run folder).
        split: name used in the file names.
        ordinal: quadratic-weighted kappa (ordered grades).
        calibration_loader: labelled validation batches to fit the temperature and conformal sets on (ignored for
            ``split="validation"``); without it ``calibration`` is applied.
        calibration: a :class:`~monai_cilmp.engines.RunCalibration` or a run folder to read ``calibration.json`` from.
        alpha: conformal error rate of a new fit.
        conformal_method: conformal score of a new fit (``"lac"``, ``"aps"``, ``"raps"``).
        class_conditional: per-class conformal thresholds for a new fit.
        n_bins: bins of the calibration errors and the reliability diagram.
        tensorboard_dir: also log the metrics and the confusion matrix there.
        output_transform: ``engine.state.output`` to ``(logits (B, C), labels (B,))``; default
            :func:`~monai_cilmp.engines.scores_and_labels` (the evaluator's ``pred`` must be logits: no softmax in
            its post-processing).
        image_key: the batch key whose metadata names each image in the predictions file.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        output_dir: str | os.PathLike,
        split: str = "test",
        ordinal: bool = False,
        calibration_loader: Any | None = None,
        calibration: Any | None = None,
        alpha: float = 0.1,
        conformal_method: str = "lac",
        class_conditional: bool = False,
        n_bins: int = 15,
        tensorboard_dir: str | os.PathLike | None = None,
        output_transform: Callable[[Any], tuple[torch.Tensor, torch.Tensor]] | None = None,
        image_key: str = "image",
    ) -> None:
        self.class_names = list(class_names)
        self.output_dir = output_dir
        self.split = split
        self.ordinal = ordinal
        self.calibration_loader = calibration_loader
        self.calibration = calibration
        self.alpha, self.conformal_method, self.class_conditional = alpha, conformal_method, class_conditional
        self.n_bins = n_bins
        self.tensorboard_dir = tensorboard_dir
        self.output_transform = output_transform
        self.image_key = image_key
        self.report: dict[str, Any] | None = None
        self._logits: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._files: list[str | None] = []

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        self._logits, self._labels, self._files = [], [], []

    def collect(self, engine: Engine) -> None:
        if self.output_transform is None:
            self.output_transform = scores_and_labels
        logits, labels = self.output_transform(engine.state.output)
        self._logits.append(torch.as_tensor(logits).detach().float().cpu().numpy())
        self._labels.append(torch.as_tensor(labels).detach().cpu().numpy().reshape(-1))
        files = item_files(engine.state.batch, self.image_key)
        self._files += files if len(files) == len(self._labels[-1]) else [None] * len(self._labels[-1])

    def write(self, engine: Engine) -> None:

        classes = len(self.class_names)
        logits = np.concatenate(self._logits) if self._logits else np.zeros((0, classes), np.float32)
        labels = np.concatenate(self._labels) if self._labels else np.zeros((0,), np.int64)
        loader = getattr(engine, "data_loader", None)
        if rank_and_world_size()[1] > 1 and loader is not None:  # every rank, an empty shard included
            gathered = gather_in_dataset_order(loader, torch.from_numpy(logits), torch.from_numpy(labels), self._files)
            logits, labels, self._files = gathered[0].numpy(), gathered[1].numpy(), list(gathered[2])
        if not len(logits):
            raise ValueError(f"The {self.split} split has no images: nothing to evaluate; check the datalist.")
        if rank_and_world_size()[0] != 0:  # one writer
            return
        names = [f if f is not None else i for i, f in enumerate(self._files)]
        network = getattr(engine, "network", None)
        device = getattr(engine.state, "device", None)
        validation = calibration_logits(network, self.calibration_loader, self.split, device) if network else None
        self.report = write_evaluation_report(
            logits,
            labels,
            self.class_names,
            self.output_dir,
            names=names,
            ordinal=self.ordinal,
            split=self.split,
            validation=validation,
            calibration=self.calibration,
            alpha=self.alpha,
            conformal_method=self.conformal_method,
            class_conditional=self.class_conditional,
            n_bins=self.n_bins,
            tensorboard_dir=self.tensorboard_dir,
        )
        engine.state.evaluation_report = self.report
