"""Writing files so that nothing half-written is ever left behind, and reading JSON with a clear error."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "read_json", "staged_folder", "write_json"]


def _write_error(path: Path, error: OSError) -> OSError:
    """The same error with one sentence naming the file and what to do (disk full, read-only or forbidden)."""
    if error.errno == errno.ENOSPC:
        message = f"No space left on device while writing '{path}': free some space (or write elsewhere) and retry."
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        message = f"Cannot write to '{path.parent}' ({error.strerror}): choose a writable folder."
    else:
        return error
    return type(error)(error.errno, message)


def _umask() -> int:
    """The process's umask (read from ``/proc`` on Linux; elsewhere set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_file_mode(path: Path) -> int:
    """The permissions ``open(path, "w")`` gives: those of the file it replaces, else ``0o666`` less the umask.

    ``tempfile.mkstemp`` creates its file readable by its owner only; renamed into place as it is, every record and
    checkpoint of a run shared with a group would be unreadable by the group.
    """
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _sync(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, flush it to disk, then rename it to ``path``.

    Either the whole new file appears or, on any error (including an interrupt or a full disk), the previous file is
    left as it was and the temporary file is removed. Temporary files are named ``.<name>.<random>.tmp``; a process
    killed outright can leave one behind, which run folders clean up (see :mod:`monai_cilmp.engines.runs`).

    Returns:
        ``path``.

    Raises:
        OSError: the file cannot be written; a full disk or a folder that cannot be written says so in one sentence
            naming the file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _write_error(path, e) from e
    try:
        os.fchmod(fd, _new_file_mode(path))
    except OSError:  # a file system without Unix permissions: its own defaults
        pass
    finally:
        os.close(fd)
    try:
        write(tmp)
        _sync(tmp)  # the data reach the disk before the rename makes them the file
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise _write_error(path, e) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def staged_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Write a set of files into ``target`` all or nothing.

    The block writes into a temporary folder inside ``target`` (``.staged.<random>.tmp``); when it ends without error,
    every file written there is moved into place by a rename (which needs no space, so a full disk cannot stop it half
    way), replacing files of the same names; on any error the temporary folder is removed and ``target`` is left as it
    was. A process killed outright can leave the temporary folder behind, which run folders clean up (see
    :mod:`monai_cilmp.engines.runs`).

    Raises:
        OSError: ``target`` cannot be written (read-only, forbidden, full), in one sentence naming it.
    """
    target = Path(target)
    try:
        target.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staged.", suffix=".tmp", dir=target))
    except OSError as e:
        raise _write_error(target / ".staged", e) from e
    try:
        yield staging
        for file in sorted(staging.rglob("*")):
            if file.is_file():
                destination = target / file.relative_to(staging)
                destination.parent.mkdir(parents=True, exist_ok=True)
                os.replace(file, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_json(path: str | os.PathLike, data: Any, indent: int = 2) -> Path:
    """Write ``data`` as UTF-8 JSON with :func:`atomic_write`."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=indent, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write)


def read_json(path: str | os.PathLike, what: str = "File") -> Any:
    """Parse the JSON file ``path``.

    Args:
        path: the file.
        what: how the file is named in errors (``"Datalist"``, ``"Descriptions file"``, ...).

    Raises:
        FileNotFoundError: ``"<what> '<path>' does not exist."``
        ValueError: ``"<what> '<path>' is not valid JSON (<reason>)."``
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} '{path}' does not exist.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} '{path}' is not valid JSON ({e}).") from e
