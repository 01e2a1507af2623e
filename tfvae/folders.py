"""Output folders: whether one can be created and written, checked before any work.

Every folder a command writes to (`--model_dir`, `--export_dir`, `--data_dir`
when a dataset is built there, the streaming path's decoded copy) is checked
with `check_writable` before the first file is written, so a path under
`/proc`, on a read-only file system, or through a file is refused naming its
flag, not after a download or the last epoch. `is_within` tells whether one
of them lies in another (a data dir inside the run directory).
"""

import os
import tempfile

from tfvae import errors


def check_not_file(path: str, name: str) -> None:
    """Raises `UsageError` if `path` exists and is not a folder.

    Args:
      path: the folder's path.
      name: how the message names it, e.g. "--data_dir=/data/tfds".
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise errors.UsageError(
            f"{name} is a file, not a folder. Pass a folder, or move the file away."
        )


def check_writable(path: str, name: str) -> None:
    """Raises `UsageError` unless `path` is, or can be made, a folder to write in.

    Creates nothing that stays: the nearest folder on `path` that exists (the
    folder itself, or the one its missing folders would be made in) gets a
    temporary file, removed at once. That is the test that holds for every
    cause (permissions, a read-only mount, `/proc`, a full inode table).

    Args:
      path: the folder's path; it need not exist.
      name: how the message names it, e.g. "--model_dir=runs/mnist".

    Raises:
      UsageError: `path` is a file, one of its parents is a file, or no file
        can be created where it is or would be made.

    Example:
      >>> check_writable("/proc/run", "--model_dir=/proc/run")
      Traceback (most recent call last):
      ...
      tfvae.errors.UsageError: --model_dir=/proc/run cannot be created: ...
    """
    check_not_file(path, name)
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    verb = "written" if existing == os.path.abspath(path) else "created"
    if not os.path.isdir(existing):
        raise errors.UsageError(
            f"{name} cannot be created: {existing} is a file. Pass a path whose "
            "parents are folders."
        )
    try:
        handle, probe = tempfile.mkstemp(prefix=".tfvae-write-check-", dir=existing)
        os.close(handle)
        os.remove(probe)
    except OSError as e:
        raise errors.UsageError(
            f"{name} cannot be {verb}: no file can be created in {existing} "
            f"({e.strerror or e}). Pass a folder you can write to."
        ) from None


def is_within(path: str, folder: str) -> bool:
    """Returns whether `path` is `folder` or lies inside it (links resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder
