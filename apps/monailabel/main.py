"""MONAI Label app serving trained CILMP classifiers (see docs/monailabel.md).

Start it from the app's own environment (``apps/monailabel/setup_env.sh``)::

    monailabel start_server --app apps/monailabel --studies /path/to/images --conf models NAME

Each served model is a classification infer task (``/infer/NAME?image=ID`` or an uploaded file) returning the label
names and per-class probabilities as JSON. An unknown model or image gives 404, a file that is not a readable image
415, each with a one-sentence ``detail``; the server keeps serving.
"""

from __future__ import annotations

import logging
import os
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
        logger.info(f"Init local datastore for {self.studies} with {patterns}")
        return LocalDatastore(
            self.studies,
            extensions=patterns,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
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
        """MONAI Label's ``infer`` with client errors as 4xx (MONAI Label itself answers them with a bare 500)."""
        model = request.get("model")
        if model not in self._infers:
            served = ", ".join(sorted(self._infers)) or "none"
            detail = f"Model '{model}' is not served by this app (served: {served})."
            raise HTTPException(status_code=404, detail=detail)
        image = request.get("image")
        if isinstance(image, str) and image and not os.path.exists(image):
            store = datastore or self.datastore()
            if not store.get_image_uri(image):
                raise HTTPException(
                    status_code=404, detail=f"Image '{image}' is not in the datastore: use an id listed by /datastore/."
                )
        try:
            return super().infer(request, datastore)
        except ImageInputError as e:
            raise HTTPException(status_code=404 if e.missing else 415, detail=str(e)) from e
