"""Each image's class probabilities and conformal prediction set as one CSV table with a header, by class name."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from monai_cilmp.engines.evaluation import write_predictions
from monai_cilmp.handlers.evaluation_report import item_files

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["ProbabilitiesSaver"]


class ProbabilitiesSaver:
    """Collect the post-processed probabilities of every image and, when the engine completes, write them with
    :func:`~monai_cilmp.engines.write_predictions`: ``image, predicted, p(<class>)...`` and ``prediction_set`` (class
    names joined by ``|``) when the items carry one.

    MONAI's ``SaveClassificationd`` writes one number per image without a header; this table keeps the class names,
    every probability and the prediction set beside it (see the bundle README).

    Args:
        output_file: the CSV file (written atomically, replaced on every run).
        class_names: class names in label order.
        probabilities_key: the output item holding each image's ``(C,)`` probabilities.
        set_key: the output item holding its ``(C,)`` boolean prediction set (absent: no ``prediction_set`` column).
        image_key: the batch key whose metadata names each image.
    """

    def __init__(
        self,
        output_file: str | os.PathLike,
        class_names: Sequence[str],
        probabilities_key: str = "probabilities",
        set_key: str = "prediction_set",
        image_key: str = "image",
    ) -> None:
        self.output_file = Path(output_file)
        self.class_names = list(class_names)
        self.probabilities_key, self.set_key, self.image_key = probabilities_key, set_key, image_key
        self._rows: list[tuple[str, np.ndarray, np.ndarray | None]] = []

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        self._rows = []

    def collect(self, engine: Engine) -> None:
        outputs = engine.state.output if isinstance(engine.state.output, (list, tuple)) else []
        files = item_files(engine.state.batch, self.image_key)
        for i, item in enumerate(outputs):
            if self.probabilities_key not in item:
                raise ValueError(
                    f"The evaluator's output has no '{self.probabilities_key}': keep the post-processing step that "
                    "stores the probabilities (CopyItemsd) before the class is taken (AsDiscreted)."
                )
            row = torch.as_tensor(item[self.probabilities_key]).detach().float().cpu().numpy().reshape(-1)
            members = item.get(self.set_key)
            members = None if members is None else torch.as_tensor(members).cpu().numpy().astype(bool).reshape(-1)
            name = files[i] if i < len(files) and files[i] is not None else str(len(self._rows))
            self._rows.append((name, row, members))

    def write(self, engine: Engine | None = None) -> Path:

        with_sets = bool(self._rows) and all(members is not None for _, _, members in self._rows)
        return write_predictions(
            self.output_file,
            [name for name, _, _ in self._rows],
            [row for _, row, _ in self._rows],
            self.class_names,
            np.stack([m for _, _, m in self._rows]) if with_sets else None,
        )
