"""Where the CILMP bundle is: its ``configs/`` folder, found in an installed wheel or a source checkout.

The bundle's configs are the recipe every front builds its run from (the CLI, ``compare``, ``bench``,
:func:`~monai_cilmp.engines.create_trainer`); this module only locates them, so that any layer may read them.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BUNDLE_DIR", "bundle_config"]


def _find_bundle() -> Path:
    """The CILMP bundle: ``monai_cilmp/bundle`` of an installed wheel, else ``bundles/cilmp`` of a source checkout
    (editable installs); ``setup.py`` maps the one onto the other at build time, so there is one copy of it."""
    package = Path(__file__).resolve().parents[1]
    candidates = (package / "bundle", package.parent / "bundles" / "cilmp")
    return next((c for c in candidates if (c / "configs" / "train.json").is_file()), candidates[0])


BUNDLE_DIR = _find_bundle()


def bundle_config(name: str) -> str:
    """Path of ``configs/<name>`` of the CILMP bundle, or a clear error when the bundle is not there."""
    path = BUNDLE_DIR / "configs" / name
    if not path.is_file():
        raise FileNotFoundError(
            f"The CILMP bundle config '{path}' is missing: reinstall monai-cilmp (a wheel carries the bundle in "
            "monai_cilmp/bundle; a source checkout has it in bundles/cilmp)."
        )
    return str(path)
