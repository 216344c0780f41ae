"""Atomic writes give a file the permissions a plain write would."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from monai_cilmp.utils.files import atomic_write, write_json


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.skipif(os.name != "posix", reason="Unix permissions")
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_a_new_file_gets_the_permissions_the_umask_allows(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_json(tmp_path / "record.json", {"a": 1})
        (tmp_path / "plain.json").write_text("{}")  # what open() gives, for comparison
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "record.json") == _mode(tmp_path / "plain.json") == 0o666 & ~umask


@pytest.mark.skipif(os.name != "posix", reason="Unix permissions")
def test_a_replaced_file_keeps_its_permissions(tmp_path):
    path = tmp_path / "shared.json"
    path.write_text("{}")
    path.chmod(0o640)
    atomic_write(path, lambda tmp: Path(tmp).write_text('{"b": 2}'))
    assert _mode(path) == 0o640 and path.read_text() == '{"b": 2}'
    assert [p.name for p in tmp_path.iterdir()] == ["shared.json"]  # no temporary file left
