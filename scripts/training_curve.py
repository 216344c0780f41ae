"""Draw a run's training curve (epoch loss and validation accuracy) from its TensorBoard scalars as a small PNG.

Usage::

    python scripts/training_curve.py RUN_DIR OUT.png [--title TEXT]

Reads ``RUN_DIR/tensorboard`` (written by every training run: ``train/epoch_loss`` per epoch, ``val_accuracy`` per
validation). The bundle README's picture (``bundles/cilmp/docs/training_curve.png``) is this script on the offline
demo's run (``monai-cilmp demo --out DIR``, then ``DIR/run``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main", "read_scalars"]


def read_scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of the TensorBoard event files under ``log_dir``: tag -> ``[(step, value), ...]``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, dict[int, float]] = {}
    for events in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags().get("scalars", []):
            for event in accumulator.Scalars(tag):
                series.setdefault(tag, {})[int(event.step)] = float(event.value)
    return {tag: sorted(points.items()) for tag, points in series.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder (holds tensorboard/)")
    parser.add_argument("out", help="PNG to write")
    parser.add_argument("--title", default="CILMP training curve")
    args = parser.parse_args(argv)
    scalars = read_scalars(Path(args.run) / "tensorboard")
    loss, accuracy = scalars.get("train/epoch_loss"), scalars.get("val_accuracy")
    if not loss:
        print(f"error: {args.run}/tensorboard has no train/epoch_loss scalars: train the run first.", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, left = plt.subplots(figsize=(5.0, 3.0), dpi=100)
    left.plot(*zip(*loss), color="tab:blue", marker=".", label="training loss")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss", color="tab:blue")
    if accuracy:
        right = left.twinx()
        right.plot(*zip(*accuracy), color="tab:orange", marker="o", label="validation accuracy")
        right.set_ylabel("validation accuracy", color="tab:orange")
        right.set_ylim(0, 1)
    left.set_title(args.title, fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
