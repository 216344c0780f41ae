"""The tiny bundle run that the bundle tests share: trained once a session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from monai.bundle import run

from tests.bundle.test_cilmp_bundle import CONFIGS, TINY, _tiny_dataset

#: epochs of the shared run (``test_cilmp_bundle`` checks its checkpoint's epoch against it)
TINY_RUN_EPOCHS = 2


@pytest.fixture(scope="session")
def tiny_bundle_run(tmp_path_factory) -> tuple[Path, Path]:
    """``(root, as_trained)``: a bundle root with the toy data (``data/toy``) and a tiny run of ``train.json``
    (CILMP-Tiny, random weights, :data:`TINY_RUN_EPOCHS` epochs) in ``runs/toy``, trained once a session;
    ``as_trained`` (``root/as-trained/toy``) is a copy of the run folder made before any test used it.

    ``runs/toy`` belongs to ``test_cilmp_bundle``, whose tests add to it in order (evaluation, calibration,
    predictions, exports); another module reads ``as_trained``, or copies it before writing.
    """
    root = tmp_path_factory.mktemp("bundle")
    _tiny_dataset(root)
    run(
        run_id="run",
        init_id="initialize",
        config_file=[str(CONFIGS / "train.json")],
        logging_file=str(CONFIGS / "logging.conf"),
        bundle_root=str(root),
        dataset_name="toy",
        **{**TINY, "train#trainer#max_epochs": TINY_RUN_EPOCHS},
    )
    as_trained = root / "as-trained" / "toy"  # parents[1] is the root, as for runs/toy
    shutil.copytree(root / "runs" / "toy", as_trained)
    return root, as_trained
