"""Which files of an input folder inference reads, and the one sentence when there is nothing to read."""

from __future__ import annotations

import logging

import pytest

from monai_cilmp.engines import inference_images


def test_images_are_listed_and_other_files_skipped_with_a_note(tmp_path, caplog):
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "sub/a.JPG", "c.nii.gz", "notes.txt", "sub/table.csv", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="monai_cilmp.engines.inference"):
        images = inference_images(tmp_path)
    assert images == sorted(str(tmp_path / n) for n in ("b.png", "c.nii.gz", "sub/a.JPG"))
    assert "Skipped 2 files" in caplog.text and "notes.txt" in caplog.text and "table.csv" in caplog.text


def test_a_missing_or_empty_folder_is_one_sentence(tmp_path):
    with pytest.raises(FileNotFoundError, match="input folder .* does not exist: set input_dir"):
        inference_images(tmp_path / "absent")
    with pytest.raises(ValueError, match="holds no images \\(nothing; images end in .png"):
        inference_images(tmp_path)
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(ValueError, match="holds no images \\(only 1 other files"):
        inference_images(tmp_path)
