"""Run folders: what a training run records so that it reproduces its own numbers anywhere, and who may write it.

A run folder holds ``run.json`` (the settings that rebuild the run's network exactly: class names, preset, method and
its hyper-parameters, the backbone with the absolute path and SHA-256 of its weights or the seed of its random
weights, the datalist and knowledge bank with their hashes, the recipe), a copy of the knowledge bank, and the
checkpoints and metrics. Before a trainer writes into a folder, :func:`prepare_run_folder`

- locks it (a second process gets one sentence instead of silently sharing it),
- refuses a folder that holds a run of other settings unless ``overwrite`` (then its outputs are removed, so no stale
  metrics stay beside new checkpoints); a folder of the same settings is started afresh the same way,
- refuses a resume whose settings differ from the run's, naming each difference,
- removes temporary files left by interrupted writes.

:func:`load_run` reads a trained run back with every stored value checked, for ``evaluate``, ``predict``, the bundle's
inference config and the MONAI Label app.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai_cilmp.data import list_datasets
from monai_cilmp.engines.checkpoint import load_checkpoint
from monai_cilmp.networks.backbones import DEFAULT_INIT_SEED, project_pretrained_file
from monai_cilmp.networks.nets import build_method, list_methods
from monai_cilmp.transforms import list_presets
from monai_cilmp.utils.files import atomic_write, write_json

__all__ = [
    "KNOWLEDGE_COPY",
    "RUN_FILE",
    "RunFinished",
    "RunFolderError",
    "TrainedRun",
    "file_sha256",
    "load_run",
    "prepare_run_folder",
    "record_run_inputs",
    "run_lock",
    "settings_differences",
    "trained_epochs",
]

RUN_FILE = "run.json"
KNOWLEDGE_COPY = "knowledge.safetensors"
LOCK_FILE = ".lock"
#: what a run writes into its folder; removed (and only these) when a run is replaced
RUN_OUTPUTS = (
    RUN_FILE,
    KNOWLEDGE_COPY,
    "checkpoints",
    "configs",
    "models",
    "tensorboard",
    "predictions.csv",
    "probabilities.csv",
    "calibration.json",
    "metrics",
    "*_metrics.json",
    "*_confusion.csv",
    "*_confusion.png",
    "*_predictions.csv",
    "*_reliability.png",
)
#: settings that may differ when a run is resumed (where it is read from, not what it computes)
_RESUME_FREE = {"datalist", "knowledge_source"}


class RunFolderError(ValueError):
    """A run folder cannot be used as asked; the message says why and what to do."""


class RunFinished(RunFolderError):
    """A resume of a run that has already trained all its epochs: nothing to do, and nothing was written (the
    command line says so and exits 0)."""


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file (of every file, in name order, for a folder)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode("utf-8") + b"\0")
        with open(file, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def _writable_error(directory: Path, error: OSError) -> RunFolderError:
    if error.errno == errno.ENOSPC:
        return RunFolderError(
            f"No space left on device while writing to '{directory}': free space or choose another --out."
        )
    return RunFolderError(f"Cannot write to '{directory}' ({error.strerror}): choose a writable --out folder.")


@contextmanager
def run_lock(directory: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on a run folder (created if needed) for the duration of the block.

    Raises:
        RunFolderError: another process holds the folder, or it cannot be written.
    """
    directory = Path(directory)
    lock = directory / LOCK_FILE
    while True:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            handle = open(lock, "a+")  # noqa: SIM115 - held across the yield
        except OSError as e:
            raise _writable_error(directory, e) from e
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise RunFolderError(
                f"Run folder '{directory}' is in use by another process (pid {owner}): wait for it to finish or "
                "choose another --out."
            ) from None
        try:
            if os.stat(lock).st_ino == os.fstat(handle.fileno()).st_ino:
                break  # the lock file in the folder, not one its previous holder removed after we opened it
        except FileNotFoundError:
            pass
        handle.close()
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)  # while still held: a finished run folder keeps no lock file
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        handle.close()


def _is_file_path(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() not in ("", "none", "random") and Path(value).exists()


def record_run_inputs(metadata: Mapping[str, Any], directory: str | os.PathLike) -> dict[str, Any]:
    """Complete a run's metadata with what rebuilds it anywhere (reads and hashes files; writes nothing).

    - ``pretrained``: a weights file or folder becomes its absolute path, with ``pretrained_sha256``; the project's
      named weights (``synthetic``) record their file and its hash (``pretrained_file``); random weights
      (``none``) record ``backbone_init_seed`` (the fixed seed :func:`~monai_cilmp.networks.backbones.load_backbone`
      draws them with);
    - ``knowledge``: becomes ``<run>/knowledge.safetensors`` (``knowledge_source`` keeps where it came from; the copy is
      made by :func:`prepare_run_folder`), with ``knowledge_sha256``;
    - ``datalist``: absolute, with ``datalist_sha256``.
    """

    directory = Path(directory)
    meta = dict(metadata)
    pretrained = meta.get("pretrained")
    if _is_file_path(pretrained) and not str(meta.get("backbone", "")).startswith("hf-hub:"):
        meta["pretrained"] = str(Path(pretrained).expanduser().resolve())
        meta["pretrained_sha256"] = file_sha256(meta["pretrained"])
    elif pretrained is None or str(pretrained).strip().lower() in ("", "none", "random"):
        meta["pretrained"] = "none"
        meta["backbone_init_seed"] = DEFAULT_INIT_SEED
    elif (made := project_pretrained_file(str(meta.get("backbone")), str(pretrained))) is not None:
        # named weights of this project (e.g. the demo's): the name may later stand for other weights, the content
        # file it stands for now never changes (see keep_project_pretrained); the run is rebuilt from that file
        meta["pretrained_file"] = str(made)
        meta["pretrained_file_sha256"] = file_sha256(made)
    if isinstance(meta.get("backbone"), str) and Path(meta["backbone"]).is_dir():
        meta["backbone"] = str(Path(meta["backbone"]).resolve())
        meta["backbone_sha256"] = file_sha256(meta["backbone"])
    knowledge = meta.get("knowledge")
    if _is_file_path(knowledge) and Path(knowledge).is_file():
        source = Path(knowledge).resolve()
        target = (directory / KNOWLEDGE_COPY).resolve()
        meta["knowledge_sha256"] = file_sha256(source)
        if source != target:
            meta["knowledge_source"] = str(source)  # copied by prepare_run_folder once the folder may be written
        meta["knowledge"] = str(target)
    if _is_file_path(meta.get("datalist")):
        meta["datalist"] = str(Path(meta["datalist"]).resolve())
        meta["datalist_sha256"] = file_sha256(meta["datalist"])
    return meta


def settings_differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``"key: old -> new"`` for every setting that differs (nested dicts compared key by key)."""
    out: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        if not prefix and key in _RESUME_FREE:
            continue
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += settings_differences(a, b, f"{prefix}{key}.")
        elif json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def _read_settings(directory: Path) -> dict[str, Any] | None:
    path = directory / RUN_FILE
    if not path.is_file():
        return None
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return settings if isinstance(settings, dict) else {}


def _remove_outputs(directory: Path) -> None:
    for pattern in RUN_OUTPUTS:
        for path in directory.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


def _remove_temporaries(directory: Path) -> None:
    """Temporary files of writes that were interrupted (``.<name>.<random>.tmp``, see ``atomic_write``) and staging
    folders of reports that were (``.staged.<random>.tmp``, see ``staged_folder``)."""
    for path in list(directory.glob(".*.tmp")) + list(directory.glob("*/.*.tmp")):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def trained_epochs(directory: str | os.PathLike) -> int | None:
    """The epochs the run in ``directory`` has completed (from ``checkpoints/last.pt``; ``None``: no checkpoint)."""

    path = Path(directory) / "checkpoints" / "last.pt"
    if not path.is_file():
        return None
    engine = load_checkpoint(path).get("engine")
    return int(engine["epoch"]) if isinstance(engine, Mapping) and "epoch" in engine else None


def _check_epochs_left(directory: Path, settings: Mapping[str, Any]) -> None:
    """A resume must have epochs left to train: a finished run is left as it is (MONAI's engine would start it over
    from epoch 0 and replace its results), and a run cannot be shortened."""
    done = trained_epochs(directory)
    planned = settings.get("recipe", {}).get("max_epochs")
    if done is None or not isinstance(planned, int):
        return
    if done > planned:
        raise RunFolderError(
            f"The run in '{directory}' has already trained {done} epochs, more than the {planned} asked: resume with "
            f"at least {done + 1} epochs to train on, or start a new run in another --out."
        )
    if done == planned:
        raise RunFinished(
            f"The run in '{directory}' has already trained all its {done} epochs: nothing to resume, nothing changed "
            f"(to train on, resume with more epochs, e.g. --epochs {2 * done})."
        )


def prepare_run_folder(
    directory: str | os.PathLike, settings: Mapping[str, Any], *, resume: bool = False, overwrite: bool = False
) -> str:
    """Check that a run with ``settings`` may write into ``directory`` and record them (call under :func:`run_lock`).

    Args:
        directory: the run folder.
        settings: the run's metadata (see :func:`record_run_inputs`); written to ``run.json``.
        resume: the run continues the one in the folder: its settings must be the same, except the number of
            epochs (a run may be extended, not shortened); a run that has trained all its epochs is left unchanged
            (:class:`RunFinished`).
        overwrite: replace a run of other settings.

    Returns:
        what was done: ``"new"``, ``"resumed"``, ``"replaced"``.

    Raises:
        FileNotFoundError: ``resume`` in a folder without a run.
        RunFinished: ``resume`` of a run that has trained all its epochs (nothing was written).
        RunFolderError: the folder holds a run of other settings (without ``overwrite``), a resume whose settings
            differ or that would shorten the run, or it cannot be written.
    """
    directory = Path(directory)
    old = _read_settings(directory)
    has_run = old is not None or (directory / "checkpoints").is_dir()
    new = json.loads(json.dumps(dict(settings), default=str))
    action = "new"
    if resume:
        if old is None:
            raise FileNotFoundError(
                f"Nothing to resume in '{directory}': its run.json does not exist: train first (without --resume)."
            )
        differences = [d for d in settings_differences(old, new) if not d.startswith("recipe.max_epochs:")]
        if differences:
            raise RunFolderError(
                f"Cannot resume the run in '{directory}' with other settings ({'; '.join(differences)}): resume with "
                "the run's own settings, or start a new run in another --out."
            )
        _check_epochs_left(directory, new)
        action = "resumed"
    elif has_run:
        differences = settings_differences(old or {}, new)
        if differences and not overwrite:
            shown = "; ".join(differences[:5]) + ("; ..." if len(differences) > 5 else "")
            raise RunFolderError(
                f"'{directory}' already holds a run of other settings ({shown}): pass --overwrite to replace it, "
                "--resume to continue it with its own settings, or choose another --out."
            )
        _remove_outputs(directory)
        action = "replaced"
    try:
        _remove_temporaries(directory)
        source = new.get("knowledge_source")
        if source and Path(source).is_file():
            atomic_write(directory / KNOWLEDGE_COPY, lambda tmp: shutil.copyfile(source, tmp))
        write_json(directory / RUN_FILE, new)
    except OSError as e:
        raise _writable_error(directory, e) from e
    return action


# ---------------------------------------------------------------------------------------------------------------
# reading a trained run back


def _fail(checkpoint: Path, key: str, why: str) -> RunFolderError:
    return RunFolderError(
        f"Checkpoint '{checkpoint}' has an invalid '{key}' ({why}): it was not written by monai-cilmp train or was "
        "altered; retrain the run."
    )


def _is_json_scalar_tree(value: Any, depth: int = 0) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if depth < 3 and isinstance(value, (list, tuple)):
        return all(_is_json_scalar_tree(v, depth + 1) for v in value)
    if depth < 3 and isinstance(value, Mapping) and "_target_" not in value:
        return all(isinstance(k, str) and _is_json_scalar_tree(v, depth + 1) for k, v in value.items())
    return False


@dataclass(frozen=True)
class TrainedRun:
    """A trained run, read back from its folder with every stored value checked.

    Attributes:
        directory: the run folder.
        checkpoint: the checkpoint file read.
        metadata: the checkpoint's metadata, checked, with ``knowledge`` pointing at the run's own copy when present.
    """

    directory: Path
    checkpoint: Path
    metadata: dict[str, Any]

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata["class_names"])

    @property
    def method(self) -> str | None:
        return self.metadata.get("method")

    @property
    def pretrained(self) -> str:
        """The backbone weights the run was trained on: for the project's named weights (``synthetic``) the very file
        it recorded (checked against its hash), not whatever the name stands for now."""
        return self.metadata.get("pretrained_file") or self.metadata.get("pretrained") or "none"

    def build_network(self, device: Any = None, load_weights: bool = True) -> Any:
        """The run's network, rebuilt through the method registry from the checked metadata, with its trained state.

        Args:
            device: where to put it (default: the CPU).
            load_weights: load the checkpoint's trainable state.
        """

        meta = self.metadata
        dataset = meta.get("dataset_name")
        network = build_method(
            self.method or "cilmp",
            self.class_names,
            meta["backbone"],
            self.pretrained,
            knowledge=meta["knowledge"],
            dataset=dataset if dataset in list_datasets() else None,  # its curated descriptions, for zero-shot
            offline=True,
            **meta["network"],
        )
        if load_weights:
            network.load_trainable_state_dict(load_checkpoint(self.checkpoint)["network"])
        return network.to(device) if device is not None else network

    def bundle_overrides(self) -> dict[str, Any]:
        """Overrides of the CILMP bundle's configs that rebuild this run's network (pass them through
        :func:`~monai_cilmp.utils.config.literal_overrides`: they are data)."""
        meta = self.metadata
        overrides: dict[str, Any] = {
            "output_dir": str(self.directory),
            "checkpoint": str(self.checkpoint),
            "class_names": self.class_names,
            "preset": meta["preset"],
            "ordinal": bool(meta.get("ordinal", False)),
            "knowledge_file": meta["knowledge"],
            "backbone": meta["backbone"],
            "pretrained": self.pretrained,
            "offline": True,
            "num_workers": 0,
        }
        overrides.update({f"network_def#{k}": v for k, v in meta["network"].items()})
        if meta.get("datalist"):
            overrides["datalist_file"] = meta["datalist"]
        return overrides


def load_run(run_dir: str | os.PathLike, checkpoint: str = "final") -> TrainedRun:
    """Read the run in ``run_dir`` (its ``checkpoints/<checkpoint>.pt``) and check what it says.

    Every value that later rebuilds the network is checked for its type (class names are strings, hyper-parameter
    names identifiers, the preset and method registered ones), the backbone weights for their recorded hash, and the
    knowledge bank is taken from the run's own copy when it has one.

    Raises:
        FileNotFoundError: no such run or checkpoint, or the backbone weights it was trained with are missing.
        RunFolderError: the checkpoint's metadata are not a training run's, or the weights changed.
    """
    from monai.utils import look_up_option

    directory = Path(run_dir).expanduser().resolve()
    if not directory.is_dir():
        raise FileNotFoundError(f"Run folder '{directory}' does not exist: give a folder written by monai-cilmp train.")
    path = directory / "checkpoints" / f"{checkpoint}.pt"
    if not path.is_file():
        present = sorted(p.stem for p in (directory / "checkpoints").glob("*.pt"))
        hint = f"it has {', '.join(present)}" if present else "training did not finish; resume it with --resume"
        raise FileNotFoundError(f"Run '{directory}' has no {checkpoint} checkpoint ({hint}).")
    meta = load_checkpoint(path).get("metadata")
    if not isinstance(meta, dict):
        raise _fail(path, "metadata", "missing")
    missing = [k for k in ("class_names", "knowledge", "backbone", "preset", "network") if k not in meta]
    if missing:
        raise RunFolderError(f"Checkpoint '{path}' lacks {missing}: it was not written by `monai-cilmp train`.")
    names = meta["class_names"]
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) and n for n in names):
        raise _fail(path, "class_names", "not a list of at least two non-empty strings")
    for key in ("preset", "backbone", "knowledge"):
        if not isinstance(meta[key], str):
            raise _fail(path, key, "not a string")
    try:
        look_up_option(meta["preset"], list_presets())
    except ValueError as e:
        raise _fail(path, "preset", f"not a known preset; {e}") from None
    if not isinstance(meta.get("pretrained", "none"), str):
        raise _fail(path, "pretrained", "not a string")
    network = meta["network"]
    if not isinstance(network, dict) or not all(isinstance(k, str) and k.isidentifier() for k in network):
        raise _fail(path, "network", "hyper-parameter names must be identifiers")
    bad = [k for k, v in network.items() if not _is_json_scalar_tree(v)]
    if bad:
        raise _fail(path, "network", f"values of {bad} are not plain numbers, strings, lists or mappings")
    method = meta.get("method")
    if method is not None and (not isinstance(method, str) or method not in list_methods()):
        raise _fail(path, "method", "not a registered method")
    if not isinstance(meta.get("ordinal", False), bool):
        raise _fail(path, "ordinal", "not true/false")
    _check_weights(meta, path)
    meta = dict(meta)
    copy = directory / KNOWLEDGE_COPY
    if copy.is_file():
        expected = meta.get("knowledge_sha256")
        if expected and file_sha256(copy) != expected:
            raise RunFolderError(
                f"The knowledge bank '{copy}' of run '{directory}' changed since training (SHA-256 differs): restore "
                "it or retrain the run."
            )
        meta["knowledge"] = str(copy)
    return TrainedRun(directory=directory, checkpoint=path, metadata=meta)


def _check_weights(meta: Mapping[str, Any], checkpoint: Path) -> None:
    """The backbone weights a run recorded (file or folder with a hash) must still be there, unchanged."""
    for key in ("pretrained", "backbone", "pretrained_file"):
        expected = meta.get(f"{key}_sha256")
        if not expected:
            continue
        location = Path(str(meta[key]))
        if not location.exists():
            raise FileNotFoundError(
                f"The backbone weights '{location}' that run checkpoint '{checkpoint}' was trained with are missing: "
                f"put that file back (SHA-256 {expected[:16]}...) to use the run."
            )
        if file_sha256(location) != expected:
            raise RunFolderError(
                f"The backbone weights '{location}' changed since run checkpoint '{checkpoint}' was trained (SHA-256 "
                "differs): restore the original weights, or retrain the run on these."
            )
