"""MONAI Label's own endpoints, guarded: what a request legitimately brought, and nothing left behind.

MONAI Label 0.8.5 saves an uploaded file to a fresh ``tempfile.NamedTemporaryFile().name`` inside its ``/infer``
endpoint, puts that path into the request as ``image``, schedules its removal as a background task of the response,
and only then merges the client's ``params`` JSON into the same request, so ``params={"image": ...}`` can replace it.
A path alone therefore cannot tell the request's own upload from any other file. This module wraps the endpoint
functions (``install()``, called once when the app is loaded) so that, for the duration of one request, the app knows:

- the files the endpoint itself created for this request: exactly those it scheduled for removal with
  ``remove_file`` in the request's ``BackgroundTasks``, which no client can add to (:func:`is_request_upload`);
- the session the request named with ``session_id`` (:func:`request_session_id`), so that its image is the session's
  own and nothing the client wrote into ``params``.

The wrappers also answer what MONAI Label answers with a bare 500 as a JSON 4xx sentence (a malformed ``params``,
``output=image`` for a model that returns no image, a session id that is not one, no image at all, a label), and
when a request fails they remove the endpoint's temporary copies at once (MONAI Label's background removal only runs
after a successful response, so a refused ``PUT /datastore/image`` used to leave its ``tmp*`` copy behind).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from monailabel.utils.others.generic import remove_file

logger = logging.getLogger(__name__)

__all__ = ["RequestInputs", "current_request", "install", "is_request_upload", "request_session_id", "valid_session_id"]

#: what MONAI Label's own ``Sessions`` names a session (``uuid1``); anything else is not a session id
_SESSION_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,127}")
#: the ``output`` values after which MONAI Label's ``send_response`` needs a result file
_FILE_OUTPUTS = ("image", "dicom_seg")


@dataclass
class RequestInputs:
    """What one request brought: the endpoint's background tasks (its own temporary files) and its session id."""

    background_tasks: Any
    session_id: str | None = None

    def own_files(self) -> set[str]:
        """The paths the endpoint created for this request (those it scheduled for removal)."""
        tasks = getattr(self.background_tasks, "tasks", None) or []
        return {str(t.args[0]) for t in tasks if getattr(t, "func", None) is remove_file and t.args}


_REQUEST: contextvars.ContextVar[RequestInputs | None] = contextvars.ContextVar("cilmp_label_request", default=None)


def current_request() -> RequestInputs | None:
    """The inputs of the request being served in this context; ``None`` outside a guarded endpoint (batch infer)."""
    return _REQUEST.get()


def is_request_upload(image: Any) -> bool:
    """Whether ``image`` is a file the endpoint serving this very request saved from the request's upload."""
    request = current_request()
    return request is not None and isinstance(image, str) and image in request.own_files()


def request_session_id() -> str | None:
    """The ``session_id`` of the request being served, if any."""
    request = current_request()
    return request.session_id if request is not None else None


def valid_session_id(session_id: str) -> bool:
    """Whether ``session_id`` can name a session: one plain name, never a path (``..``, ``a/b``)."""
    return bool(_SESSION_ID.fullmatch(session_id))


def _remove_own_files(background_tasks: Any) -> None:
    """Run the endpoint's pending ``remove_file`` tasks now (the response that would have run them is not sent)."""
    tasks = getattr(background_tasks, "tasks", None)
    if not tasks:
        return
    for task in [t for t in tasks if getattr(t, "func", None) is remove_file]:
        try:
            task.func(*task.args, **task.kwargs)
        except OSError as e:
            logger.warning(f"Could not remove the temporary file {task.args}: {e}")
        tasks.remove(task)


def _json_object(text: Any, field: str) -> None:
    """Refuse a form field that is not a JSON object, in one sentence (MONAI Label answers a bare 500)."""
    if text is None or text == "" or not isinstance(text, str):
        return
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise HTTPException(
            status_code=400,
            detail=f"The '{field}' form field is not valid JSON ({e.msg} at character {e.pos}): send a JSON object, "
            'e.g. {"device": "cpu"}.',
        ) from None
    if not isinstance(value, dict):
        raise HTTPException(
            status_code=400,
            detail=f"The '{field}' form field must be a JSON object, not {type(value).__name__}: "
            'e.g. {"device": "cpu"}.',
        )


def _check_session_id(session_id: Any) -> None:
    if session_id and not valid_session_id(str(session_id)):
        raise HTTPException(
            status_code=404, detail=f"Session '{session_id}' does not exist: create one with PUT /session/."
        )


def _check_infer(arguments: dict[str, Any]) -> None:
    """``/infer/<model>``: a JSON object as ``params``, a session id that is a name, an output the model has."""
    from monailabel.interfaces.utils.app import app_instance

    _json_object(arguments.get("params"), "params")
    _check_session_id(arguments.get("session_id"))
    if arguments.get("label"):
        # MONAI Label would save it, and convert a .bin one into another temporary file it never removes
        raise HTTPException(
            status_code=400, detail="This app's models take no label: send the image only (no label= file)."
        )
    if not (arguments.get("image") or arguments.get("file") or arguments.get("session_id")):
        raise HTTPException(
            status_code=400,
            detail="Nothing to infer on: give an image id (?image=ID), upload a file (file=@PATH) or a session_id.",
        )
    output = arguments.get("output")
    output = getattr(output, "value", output)
    if output not in _FILE_OUTPUTS:
        return
    kind = app_instance().info().get("models", {}).get(arguments.get("model"), {}).get("type")
    if getattr(kind, "value", kind) == "classification":
        raise HTTPException(
            status_code=400,
            detail=f"Model '{arguments.get('model')}' is a classifier: it answers JSON (class probabilities), not "
            f"an image; leave out output or use output=json.",
        )


def _check_datastore_write(arguments: dict[str, Any]) -> None:
    """``PUT /datastore/image`` and ``/datastore/label``: refused before any copy is made when read-only."""
    from monailabel.interfaces.utils.app import app_instance

    check = getattr(app_instance().datastore(), "check_writable", None)
    if check is not None:
        check()
    _json_object(arguments.get("params"), "params")


def _check_session(arguments: dict[str, Any]) -> None:
    _check_session_id(arguments.get("session_id"))


def _check_info(arguments: dict[str, Any]) -> None:
    _json_object(arguments.get("info"), "info")


def _guarded(original: Callable[..., Any], check: Callable[[dict[str, Any]], None] | None) -> Callable[..., Any]:
    """``original`` (a MONAI Label endpoint function) run with this request's inputs known, ``check`` first, and its
    temporary files removed at once if it fails."""
    signature = inspect.signature(original)

    @functools.wraps(original)
    def endpoint(*args: Any, **kwargs: Any) -> Any:
        arguments = signature.bind_partial(*args, **kwargs).arguments
        background_tasks = arguments.get("background_tasks")
        session_id = arguments.get("session_id") or None
        token = _REQUEST.set(RequestInputs(background_tasks, str(session_id) if session_id else None))
        try:
            if check is not None:
                check(arguments)
            return original(*args, **kwargs)
        except BaseException:
            _remove_own_files(background_tasks)
            raise
        finally:
            _REQUEST.reset(token)

    endpoint.__cilmp_guarded__ = True  # type: ignore[attr-defined]
    return endpoint


def _check_create_session(arguments: dict[str, Any]) -> None:
    """``PUT /session/``: plain files only. MONAI Label unpacks an archive (``uncompress=true``) with
    ``shutil.unpack_archive``, which on Python < 3.14 extracts tar members wherever their names point (``..``, links)
    and leaves its partial copies behind when that fails; no MONAI Label client sends archives for one image."""
    if arguments.get("uncompress"):
        raise HTTPException(
            status_code=400,
            detail="This app does not unpack archives into sessions (uncompress=true): upload the image file itself.",
        )


def _refuse_model_change(arguments: dict[str, Any]) -> None:
    """``PUT``/``DELETE /model/<model>``: MONAI Label would copy the upload over (or rename away) the served run's
    checkpoint; the runs are the user's, changed on the server only."""
    raise HTTPException(
        status_code=403,
        detail=f"The served runs are read-only: model '{arguments.get('model')}' changes only when its run folder is "
        "replaced on the server (then restart the server).",
    )


#: (module, function, check) of the MONAI Label endpoint functions the app guards
_ENDPOINTS: tuple[tuple[str, str, Callable[[dict[str, Any]], None] | None], ...] = (
    ("monailabel.endpoints.infer", "run_inference", _check_infer),
    ("monailabel.endpoints.datastore", "add_image", _check_datastore_write),
    ("monailabel.endpoints.datastore", "save_label", _check_datastore_write),
    ("monailabel.endpoints.datastore", "update_image_info", _check_info),
    ("monailabel.endpoints.datastore", "update_label_info", _check_info),
    ("monailabel.endpoints.model", "update_model", _refuse_model_change),
    ("monailabel.endpoints.model", "delete_model", _refuse_model_change),
    ("monailabel.endpoints.session", "create_session", _check_create_session),
    ("monailabel.endpoints.session", "get_session", _check_session),
    ("monailabel.endpoints.session", "remove_session", _check_session),
)


def install() -> None:
    """Guard MONAI Label's endpoint functions (idempotent). Their routes call them by module-level name, so replacing
    the module attribute is enough; a MONAI Label without one of them fails here, loudly, rather than unguarded."""
    import importlib

    for module_name, name, check in _ENDPOINTS:
        module = importlib.import_module(module_name)
        original = getattr(module, name)
        if getattr(original, "__cilmp_guarded__", False):
            continue
        setattr(module, name, _guarded(original, check))
