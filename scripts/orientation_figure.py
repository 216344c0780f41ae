"""Draw the asymmetric CT phantom through every reader (DICOM series, multi-frame, enhanced DICOM, NIfTI in several
layouts, NumPy) as the ``ct`` preset shows it to the network (soft-tissue window, padded to a square): axial,
coronal and sagittal views of the middle slices, one row per container.

Usage::

    python scripts/orientation_figure.py OUT.png

The picture in docs/data.md (``docs/images/orientation.png``) is this script's output. The phantom (a dense block
anterior-right, soft tissue posterior-left, a bony marker in the superior slices) and its writers are those of the
orientation tests (``tests/transforms/phantom.py``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

__all__ = ["main"]

VIEWS = {"axial": 2, "coronal": 1, "sagittal": 0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the PNG file to write")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from monai_cilmp.transforms import get_preset
    from tests.transforms import phantom

    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        containers = phantom.write_all(folder)
        figure, axes = plt.subplots(len(containers), 3, figsize=(3.6, 0.95 * len(containers)), dpi=80)
        for row, (name, path) in enumerate(containers.items()):
            numpy = {"numpy_axcodes": "LPS"} if name.startswith("NumPy") else {}
            for column, (view, axis) in enumerate(VIEWS.items()):
                preset = get_preset("ct", slice_axis=axis, windows=("soft_tissue",), resize_mode="pad", **numpy)
                image = np.asarray(preset.eval_transforms(keys=None, image_size=64, mean=(0,) * 3, std=(1,) * 3)(path))
                ax = axes[row, column]
                ax.imshow(image[0], cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([]), ax.set_yticks([])
                if row == 0:
                    ax.set_title(view, fontsize=8)
                if column == 0:
                    ax.set_ylabel(name, fontsize=6, rotation=0, ha="right", va="center")
        figure.tight_layout(pad=0.3)
        figure.savefig(args.out)
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
