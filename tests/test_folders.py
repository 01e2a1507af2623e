"""Tests for tfvae.folders: output folders are checked, and nothing is left behind."""

import os
import tempfile

import pytest

from tfvae import errors, folders


def _snapshot(top) -> list[str]:
    """Returns every file and folder under `top`."""
    return sorted(
        os.path.join(folder, name)
        for folder, subfolders, files in os.walk(top)
        for name in subfolders + files
    )


def test_a_folder_that_exists_or_can_be_made_passes_and_nothing_is_left(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "kept").write_text("mine")
    before = _snapshot(tmp_path)
    folders.check_writable(str(tmp_path / "run"), "--model_dir=run")
    folders.check_writable(str(tmp_path / "new" / "deeper"), "--model_dir=new")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "path, message",
    [
        ("file", "--x=P is a file, not a folder. Pass a folder"),
        ("file/run", r"--x=P cannot be created: .*file is a file"),
        ("/proc/tfvae-run", "--x=P cannot be created: no file can be created in /proc"),
        ("/proc/tfvae/run", "--x=P cannot be created: no file can be created in /proc"),
    ],
)
def test_a_folder_that_cannot_be_written_is_refused_naming_it(tmp_path, path, message):
    (tmp_path / "file").write_text("mine")
    before = _snapshot(tmp_path)
    with pytest.raises(errors.UsageError, match=message):
        folders.check_writable(os.path.join(tmp_path, path), "--x=P")
    assert _snapshot(tmp_path) == before


def test_a_folder_without_write_permission_is_refused(tmp_path, monkeypatch):
    # What a read-only mount or a folder of another user gives (root, who
    # runs these tests here, may write anywhere chmod allows none).
    def refused(**kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    with pytest.raises(
        errors.UsageError,
        match=r"--x=P cannot be written: no file can be created in .*\(Permission "
        "denied\\). Pass a folder you can write to.",
    ):
        folders.check_writable(str(tmp_path), "--x=P")


def test_is_within(tmp_path):
    assert folders.is_within(str(tmp_path / "run" / "tfds"), str(tmp_path / "run"))
    assert folders.is_within(str(tmp_path / "run"), str(tmp_path / "run/"))
    assert not folders.is_within(str(tmp_path / "runs"), str(tmp_path / "run"))
    assert not folders.is_within(str(tmp_path), str(tmp_path / "run"))
