"""MONAI Label app serving trained CILMP classifiers (see docs/monailabel.md).

Start it from the app's own environment (``apps/monailabel/setup_env.sh``)::

    monailabel start_server --app apps/monailabel --studies /path/to/images --conf models NAME

Each served model is a classification infer task (``/infer/NAME?image=ID``, an uploaded file, or a session's image)
returning the label names and per-class probabilities as JSON, and beside it ``NAME_saliency``, a segmentation task
returning where the model looked as one segment. An unknown model or image gives 404, a file that is not a readable
image 415, a device the server does not have or a malformed request 400, each with a one-sentence ``detail``; the
server keeps serving.

Locked down by default (see docs/monailabel.md): the datastore is read-only (``--conf datastore_writable true``
allows uploads and deletions); the image a request reads is an image of the studies folder by id, the file MONAI
Label saved from this request's own upload, or the image of the session it names (never any other path on the
server); the endpoints' temporary copies are removed whatever happens; only the server's own devices are accepted.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from lib import endpoints
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
    """MONAI Label's local datastore that refuses every change (its own ``read_only`` only skips reconciling).

    ``check_writable()`` lets the guarded endpoints (``lib/endpoints.py``) refuse an upload before they copy it."""

    def check_writable(self) -> None:
        _refuse_write(self)


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


class CILMPApp(MONAILabelApp):
    """Serves the trained CILMP runs chosen with ``--conf models`` (see ``lib/configs/cilmp.py``).

    ``--conf`` keys: ``models`` (names or run folders, comma separated; default ``all``), ``cilmp_runs`` (folder of
    runs; default ``<app>/model``), ``checkpoint`` (``final``/``last``), ``preload`` (``true``: build the networks at
    start-up), ``extensions`` (datastore image patterns).
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        endpoints.install()  # what each request legitimately brought, errors as JSON sentences, no copies left
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
        answers them with a bare 500): known models and devices only, and as the image only what the request may
        read: an image of the studies folder by id, the file the endpoint saved from this request's upload, or the
        image of the session the request named (inside MONAI Label's sessions folder). Any other path is 404, the
        same answer as a missing image, and nothing is deleted here: the endpoint removes its own copies
        (``lib/endpoints.py``)."""
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
        source, uri = self._image_source(request, datastore)
        if source == "datastore":
            if request.get("save_label") and isinstance(self.datastore(), ReadOnlyDatastore):
                self.datastore().check_writable()
            image = request["image"]
            if os.path.exists(image) and not os.path.samefile(image, uri):
                # MONAI Label reads an id that is also a path from the server's working directory as that path
                request = {**request, "image": uri}
        try:
            return super().infer(request, datastore)
        except HTTPException:
            raise
        except ImageInputError as e:
            raise HTTPException(status_code=404 if e.missing and source == "datastore" else 415, detail=str(e)) from e
        except Exception as e:
            message, users = user_message(e)
            logger.exception(f"Inference with model '{model}' failed")
            raise HTTPException(status_code=400 if users else 500, detail=message) from e

    def _image_source(self, request: dict[str, Any], datastore: Datastore | None) -> tuple[str, str]:
        """Where the request's image comes from (``"session"``, ``"upload"`` or ``"datastore"``) and its file; 404
        for anything else."""
        image = request.get("image")
        session_id = endpoints.request_session_id()
        if session_id is not None:
            if image != self._session_image(session_id):
                raise HTTPException(
                    status_code=404, detail=f"Image '{image}' is not the image of session '{session_id}'."
                )
            return "session", image
        if endpoints.is_request_upload(image):
            return "upload", image
        store = datastore or self.datastore()
        uri = store.get_image_uri(image) if isinstance(image, str) and image and not os.path.isabs(image) else ""
        if not uri or not Path(uri).resolve().is_relative_to(Path(self.studies).resolve()):
            raise HTTPException(
                status_code=404, detail=f"Image '{image}' is not in the datastore: use an id listed by /datastore/."
            )
        return "datastore", uri

    def _session_image(self, session_id: str) -> str:
        """The image of session ``session_id``, which must lie in that session's folder of MONAI Label's sessions
        folder (also through symbolic links); 404 for anything else."""
        missing = HTTPException(
            status_code=404, detail=f"Session '{session_id}' does not exist: create one with PUT /session/."
        )
        sessions = self.sessions()
        if sessions is None or not endpoints.valid_session_id(session_id):
            raise missing
        info = sessions.get_session(session_id, update_ts=False)
        if info is None or not info.image:
            raise missing
        folder = Path(os.path.realpath(sessions.store_path)) / session_id
        if not Path(os.path.realpath(info.image)).is_relative_to(folder):
            logger.warning(f"Session '{session_id}' names an image outside its folder {folder}: refused")
            raise missing
        return info.image

    def next_sample(self, request: dict[str, Any]) -> dict[str, Any]:
        strategy = request.get("strategy") or "random"
        if strategy not in self._strategies:
            raise HTTPException(
                status_code=404,
                detail=f"Strategy '{strategy}' is not available (available: {', '.join(sorted(self._strategies))}).",
            )
        return super().next_sample(request)

    def train(self, request: dict[str, Any]) -> dict[str, Any]:
        """Refused in one sentence (MONAI Label answers a bare 500): the app serves runs trained elsewhere."""
        raise HTTPException(
            status_code=404, detail="This app does not train: train a run with monai-cilmp train and serve it."
        )

    def scoring(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        raise HTTPException(status_code=404, detail="This app has no scoring methods.")

    def batch_infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """Refused: batch inference saves a label per image, which a classifier does not make (MONAI Label's own
        answers a bare 500 on a machine without GPUs)."""
        raise HTTPException(
            status_code=404,
            detail="This app has no batch inference: classify images with POST /infer/<model>, or a folder with "
            "monai-cilmp predict.",
        )

    def infer_wsi(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """Refused: the app serves no whole-slide models (MONAI Label's WSI path reads images by path)."""
        raise HTTPException(
            status_code=404,
            detail=f"This app serves no whole-slide (WSI) models: use POST /infer/{request.get('model')} instead.",
        )
