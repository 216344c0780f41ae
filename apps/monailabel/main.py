"""MONAI Label app serving trained CILMP classifiers (see docs/monailabel.md).

Start it from the app's own environment (``apps/monailabel/setup_env.sh``)::

    monailabel start_server --app apps/monailabel --studies /path/to/images --conf models NAME

Each served model is a classification infer task (``/infer/NAME?image=ID`` or an uploaded file) returning the label
names and per-class probabilities as JSON. An unknown model or image gives 404, a file that is not a readable image
415, a device the server does not have 400, each with a one-sentence ``detail``; the server keeps serving.

Locked down by default (see docs/monailabel.md): the datastore is read-only (``--conf datastore_writable true``
allows uploads and deletions), an image id must name an image of the studies folder (never any path on the server),
uploaded files are deleted whatever happens, and only the server's own devices are accepted.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from lib.configs import CILMPConfig, ModelSelectionError, select_models
from lib.infers import ImageInputError
from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore

import monai_cilmp
from monai_cilmp.transforms.readers import DICOM_SUFFIXES, NIFTI_SUFFIXES, PHOTO_SUFFIXES

logger = logging.getLogger(__name__)

#: files the local datastore lists as images (``--conf extensions "*.png,*.dcm"`` changes it)
IMAGE_PATTERNS = [f"*.{s}" for s in (*NIFTI_SUFFIXES[::-1], *PHOTO_SUFFIXES, *DICOM_SUFFIXES)]
_WRITES = ("add_image", "remove_image", "save_label", "remove_label", "update_image_info", "update_label_info")


class ReadOnlyDatastore(LocalDatastore):
    """MONAI Label's local datastore that refuses every change (its own ``read_only`` only skips reconciling)."""


def _refuse_write(self, *args: Any, **kwargs: Any) -> None:
    raise HTTPException(
        status_code=403,
        detail="The datastore is read-only: start the server with --conf datastore_writable true to allow changes.",
    )


for _name in _WRITES:
    setattr(ReadOnlyDatastore, _name, _refuse_write)


def allowed_devices() -> list[str]:
    """The devices a request may name: ``cpu`` and this server's GPUs."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["cpu", *(["cuda"] if count else []), *(f"cuda:{i}" for i in range(count))]


def _is_upload(image: Any) -> bool:
    """Whether ``image`` is the temporary copy MONAI Label makes of an uploaded file (``/tmp/tmpXXXX<suffix>``)."""
    if not isinstance(image, str) or not os.path.isabs(image):
        return False
    path = Path(image)
    return path.parent == Path(tempfile.gettempdir()) and path.name.startswith("tmp") and not path.is_symlink()


class CILMPApp(MONAILabelApp):
    """Serves the trained CILMP runs chosen with ``--conf models`` (see ``lib/configs/cilmp.py``).

    ``--conf`` keys: ``models`` (names or run folders, comma separated; default ``all``), ``cilmp_runs`` (folder of
    runs; default ``<app>/model``), ``checkpoint`` (``final``/``last``), ``preload`` (``true``: build the networks at
    start-up), ``extensions`` (datastore image patterns).
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        conf = dict(conf or {})
        checkpoint = conf.get("checkpoint", "final")
        try:
            runs = select_models(conf, app_dir, checkpoint)
        except ModelSelectionError as e:
            logger.error(str(e))
            raise
        self.models: dict[str, CILMPConfig] = {}
        for name, run in runs.items():
            config = CILMPConfig()
            config.init(name, str(run), conf, None)
            self.models[name] = config
            logger.info(f"+++ Serving model '{name}' from {run}")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="CILMP",
            description="CILMP medical image classifiers (prompt-tuned CLIP with LLM knowledge)",
            version=monai_cilmp.__version__,
        )

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        patterns = [p.strip() for p in self.conf.get("extensions", "").split(",") if p.strip()] or IMAGE_PATTERNS
        writable = str(self.conf.get("datastore_writable", "false")).lower() in ("1", "true", "yes")
        logger.info(
            f"Init {'writable' if writable else 'read-only'} local datastore for {self.studies} with {patterns}"
        )
        return (LocalDatastore if writable else ReadOnlyDatastore)(
            self.studies,
            extensions=patterns,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            # MONAI Label's own flag only skips listing the folder's images at start-up; the class refuses writes
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self) -> dict[str, Any]:
        infers: dict[str, Any] = {}
        for config in self.models.values():
            infers.update(config.infer())
        return infers

    def init_trainers(self) -> dict[str, Any]:
        return {}

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """MONAI Label's ``infer``, locked down, with every client error a 4xx JSON sentence (MONAI Label itself
        answers them with a bare 500): known models and devices only, images of the studies folder or uploads only,
        and an uploaded file is deleted whatever happens."""
        image = request.get("image")
        upload = _is_upload(image)
        try:
            return self._checked_infer(request, datastore, upload)
        finally:
            if upload:
                Path(image).unlink(missing_ok=True)

    def _checked_infer(self, request: dict[str, Any], datastore: Datastore | None, upload: bool) -> dict[str, Any]:
        from monai_cilmp.cli import user_message

        model = request.get("model")
        if model not in self._infers:
            served = ", ".join(sorted(self._infers)) or "none"
            raise HTTPException(
                status_code=404, detail=f"Model '{model}' is not served by this app (served: {served})."
            )
        device = request.get("device")
        if device is not None and str(device) not in allowed_devices():
            raise HTTPException(
                status_code=400,
                detail=f"Device '{device}' is not available on this server: use one of {', '.join(allowed_devices())}.",
            )
        image = request.get("image")
        if not upload:
            store = datastore or self.datastore()
            uri = store.get_image_uri(image) if isinstance(image, str) and image else ""
            studies = Path(self.studies).resolve()
            if not uri or not Path(uri).resolve().is_relative_to(studies) or os.path.isabs(str(image)):
                raise HTTPException(
                    status_code=404, detail=f"Image '{image}' is not in the datastore: use an id listed by /datastore/."
                )
        try:
            return super().infer(request, datastore)
        except HTTPException:
            raise
        except ImageInputError as e:
            raise HTTPException(status_code=404 if e.missing and not upload else 415, detail=str(e)) from e
        except Exception as e:
            message, users = user_message(e)
            logger.exception(f"Inference with model '{model}' failed")
            raise HTTPException(status_code=400 if users else 500, detail=message) from e
