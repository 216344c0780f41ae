"""The run's checkpoint handlers: exact-resume state every epoch, the final state, and the best validation epoch.

Both write a :class:`~monai_cilmp.engines.TrainingCheckpoint` (trainable state, optimiser, scheduler, GPA, engine
position, run metadata), atomically. They play the part of MONAI's ``CheckpointSaver`` in a model-zoo bundle, which
cannot serve here: it saves ``network.state_dict()`` (the whole frozen CLIP, hundreds of MB, at every save) and
forgets its best metric when a run is resumed (its first validation after a resume would replace the best file by a
worse epoch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["BestCheckpointSaver", "RunCheckpointSaver"]


class RunCheckpointSaver:
    """On the trainer: ``last.pt`` after every epoch (what ``--resume`` continues from) and ``final.pt`` (and the
    model file of a run without validation) when training completes.

    Args:
        checkpoint: the run's :class:`~monai_cilmp.engines.TrainingCheckpoint`.
    """

    #: the trainer of a run with nothing to train keeps this handler (its checkpoints record the run)
    runs_without_training = True

    def __init__(self, checkpoint: Any) -> None:
        self.checkpoint = checkpoint

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self.checkpoint.save_last)
        engine.add_event_handler(Events.COMPLETED, self.checkpoint.save_final)


class BestCheckpointSaver:
    """On the validation evaluator: ``best.pt`` and the model file (``models/model.pt``) whenever the validation
    that just ran set a new best key metric (MONAI's evaluator tracks it, ``state.best_metric``).

    A resumed run starts from the best recorded in its checkpoint, so only a better epoch replaces these files.

    Args:
        checkpoint: the run's :class:`~monai_cilmp.engines.TrainingCheckpoint`.
    """

    def __init__(self, checkpoint: Any) -> None:
        self.checkpoint = checkpoint

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        state = engine.state  # an evaluator's epoch is the training epoch it validated
        if state.best_metric_epoch == state.epoch:
            self.checkpoint.save_best(state.epoch, float(state.best_metric))
