"""Resuming a run: claiming its directory, and its checksummed backups.

`claim(config)` makes `--model_dir` this run's before anything is written:
it refuses a folder that holds another run or that another process is
training in (a lock held until `release`), then writes config.json. Keras's
`BackupAndRestore` (`callbacks.BackupAndRestore`) backs the run up every
epoch into backup/, keeping the previous epoch's too, and this module
writes the sha256 of each backup's files beside them, so that
`restore_backup` resumes from the newest intact one and makes the run's
other files (model.weights.h5, the CSV histories) agree with it.
"""

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import socket

from absl import logging

from tfvae import config as config_lib
from tfvae import errors, history, run_dir, saved_model

# {real path of a run directory: the file descriptor of its lock}, this
# process's.
_held: dict[str, int] = {}


def _holder(lock_path: str) -> str:
    """Returns who holds the lock at `lock_path`, as it wrote itself there."""
    try:
        with open(lock_path) as f:
            return f.read().strip() or "a process that has not yet said which"
    except OSError:
        return "another process"


def _lock(model_dir: str) -> bool:
    """Locks `model_dir` for this process; returns whether it made the lock file.

    `fcntl.flock` on run_dir.LOCK, held until `release` or this process
    ends: the kernel drops it when the process dies, however, so a lock left
    by a killed run never blocks the next one. Once the run is accepted,
    the file records the holder's pid and host (`_record_holder`), for the
    message another process gets.
    """
    key = os.path.realpath(model_dir)
    if key in _held:
        return False
    os.makedirs(model_dir, exist_ok=True)
    lock_path = run_dir.path(model_dir, run_dir.LOCK)
    created = not os.path.exists(lock_path)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise errors.UsageError(
            f"--model_dir={model_dir} is in use: another training runs in it "
            f"({_holder(lock_path)}), and two runs in one folder would corrupt "
            "it. Wait for that run to end (or stop it), or use another "
            "--model_dir."
        ) from None
    _held[key] = fd
    return created


def _record_holder(model_dir: str) -> None:
    """Writes this process's pid and host into the lock file it holds."""
    fd = _held[os.path.realpath(model_dir)]
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)


def release(model_dir: str) -> None:
    """Releases this process's lock on `model_dir`, taken by `claim` (if any)."""
    fd = _held.pop(os.path.realpath(model_dir), None)
    if fd is not None:
        os.close(fd)  # Closing the file releases the flock.


def claim(config: config_lib.Config) -> None:
    """Makes `config.model_dir` this run's: refuses a foreign, busy or different one.

    Locks the folder first (`release` unlocks it; the training calls it at
    its end), so a second process training in the same folder is refused at
    once, naming the first. A folder holding the same run (or another that
    this config may resume) is kept; a non-empty folder without
    config.json, a file, a run with another configuration, one that cannot
    resume (`resumed_epoch`), a file or folder where the other kind belongs,
    and an export base that is a file (if the run exports) raise
    `UsageError`, leaving the folder as it was. Then writes config.json.
    """
    model_dir = config.model_dir
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise errors.UsageError(
            f"--model_dir={model_dir} is a file, not a folder. Use a new or "
            "empty folder."
        )
    if config.export:
        saved_model.check_export_base(config.export_base)
    new_folder = not os.path.exists(model_dir)
    made_lock = _lock(model_dir)
    try:
        _check_run(config)
    except BaseException:
        # Leave the folder as it was.
        if made_lock:
            os.remove(run_dir.path(model_dir, run_dir.LOCK))
        release(model_dir)
        if new_folder:
            os.rmdir(model_dir)
        raise
    _record_holder(model_dir)
    run_dir.save_config(config, model_dir)


def _check_run(config: config_lib.Config) -> None:
    """Refuses an existing `--model_dir` that `config` cannot train in."""
    model_dir = config.model_dir
    if os.path.exists(run_dir.path(model_dir, run_dir.CONFIG)):
        run_dir.check_layout(model_dir)
        config_lib.check_compatible(run_dir.load_config(model_dir), config)
        resumed_epoch(model_dir)
    elif set(os.listdir(model_dir)) - {run_dir.LOCK}:
        raise errors.UsageError(
            f"--model_dir={model_dir} is not empty and holds no "
            f"{run_dir.CONFIG}, so it is not a tfvae run. Use a new or empty "
            "folder."
        )


def check_resumable(config: config_lib.Config) -> None:
    """Refuses, before any data is read, a run `claim` would refuse: a folder
    holding another run, one with another configuration, one that cannot
    resume. Changes nothing and takes no lock (`claim` checks again under it).

    Args:
        config: the run's settings; a `--model_dir` that is not a folder yet
            passes.

    Raises:
        errors.UsageError: naming the difference and the fix.

    Example:

        check_resumable(config)  # Then read the data, then `claim(config)`.
    """
    if os.path.isdir(config.model_dir):
        _check_run(config)


def _sha256(file_path: str) -> str:
    with open(file_path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def keep_previous_checksums(backup_dir: str) -> None:
    """Copies the latest backup's checksums to the previous backup's name.

    `callbacks.BackupAndRestore` calls it before Keras copies the latest
    backup's files to theirs, and `write_backup_checksums` after Keras saved
    the new one: a kill at any point leaves at least one backup whose files
    match its checksums.
    """
    latest = os.path.join(backup_dir, run_dir.BACKUP_CHECKSUMS)
    if os.path.exists(latest):
        shutil.copyfile(latest, latest + run_dir.PREVIOUS)


def write_backup_checksums(backup_dir: str) -> None:
    """Writes the sha256 of the latest backup's weights and metadata beside them."""
    checksums = {
        name: _sha256(os.path.join(backup_dir, name))
        for name in (run_dir.BACKUP_WEIGHTS, run_dir.BACKUP_METADATA)
    }
    run_dir.write_atomically(
        os.path.join(backup_dir, run_dir.BACKUP_CHECKSUMS), json.dumps(checksums) + "\n"
    )


def _backup_problem(backup_dir: str, suffix: str) -> str | None:
    """Returns what is wrong with the backup of files ending in `suffix`, or None."""
    checksums_path = os.path.join(backup_dir, run_dir.BACKUP_CHECKSUMS + suffix)
    try:
        with open(checksums_path) as f:
            checksums = json.load(f)
    except FileNotFoundError:
        return f"{checksums_path} is missing"
    except (OSError, ValueError):
        return f"{checksums_path} is damaged"
    for name in (run_dir.BACKUP_WEIGHTS, run_dir.BACKUP_METADATA):
        file_path = os.path.join(backup_dir, name + suffix)
        if not os.path.exists(file_path):
            return f"{file_path} is missing"
        if not isinstance(checksums, dict) or _sha256(file_path) != checksums.get(name):
            return (
                f"{file_path} is damaged (its sha256 is not that in {checksums_path})"
            )
    return None


@dataclasses.dataclass(frozen=True)
class _Resume:
    """Where a run resumes: see `_resume`."""

    epoch: int  # 0-based: the epochs the backup has done.
    suffix: str | None  # Of the backup's files; None: no backup.
    damaged: str | None  # What is wrong with the latest backup, if not that one.


def _resume(model_dir: str) -> _Resume:
    """Returns where the run in `model_dir` resumes, changing nothing.

    That is the newest backup whose files match their checksums. Raises
    `UsageError` if there are backups but none is intact, or if
    history.csv or iwae_history.csv is damaged or history.csv lacks a row of
    an epoch the backup has done (the curves and metrics.json would be wrong).
    """
    backup = run_dir.path(model_dir, run_dir.BACKUP)
    if not os.path.exists(os.path.join(backup, run_dir.BACKUP_CHECKSUMS)) and not any(
        os.path.exists(os.path.join(backup, name + run_dir.PREVIOUS))
        for name in (
            run_dir.BACKUP_WEIGHTS,
            run_dir.BACKUP_METADATA,
            run_dir.BACKUP_CHECKSUMS,
        )
    ):
        # No backup, or a first one cut short before its checksums.
        resume = _Resume(0, None, None)
    else:
        damaged = _backup_problem(backup, "")
        suffix = ""
        if damaged:
            previous = _backup_problem(backup, run_dir.PREVIOUS)
            if previous:
                raise errors.UsageError(
                    f"No backup in {backup} is intact, so the run cannot resume: "
                    f"{damaged}, and {previous}. Delete {backup} to train the run "
                    "again from epoch 1, or use a new --model_dir."
                )
            suffix = run_dir.PREVIOUS
        with open(os.path.join(backup, run_dir.BACKUP_METADATA + suffix)) as f:
            resume = _Resume(int(json.load(f)["epoch"]), suffix, damaged)
    done = history.read_history_rows(model_dir)
    # Refuses a damaged file now, not after an epoch.
    history.read_iwae_history(model_dir)
    missing = [epoch for epoch in range(1, resume.epoch + 1) if epoch not in done]
    if missing:
        raise errors.UsageError(
            f"{run_dir.path(model_dir, run_dir.HISTORY)} lacks the rows of "
            f"{len(missing)} of the {resume.epoch} epochs the backup in {backup} "
            f"has done (the first: epoch {missing[0]}), so the run's curves and "
            f"metrics.json would be wrong. Restore the file, or delete {backup} to "
            "train the run again from epoch 1."
        )
    return resume


def resumed_epoch(model_dir: str) -> int:
    """Returns the 0-based epoch training resumes at (0 if none); changes nothing.

    The epoch of the newest intact backup, the one `restore_backup` puts in
    place. Raises `UsageError` where that cannot be done (see `_resume`).
    """
    return _resume(model_dir).epoch


def _drop_rows(csv_path: str, epoch: int) -> None:
    """Removes the rows of 0-based epochs `epoch` and later from `csv_path`."""
    if not os.path.exists(csv_path):
        return
    with open(csv_path, newline="") as f:
        lines = f.readlines()
    kept = lines[:1] + [
        line for line in lines[1:] if line.strip() and int(line.split(",")[0]) < epoch
    ]
    if kept != lines:
        logging.info(
            "Dropped the rows of epoch %d and later from %s: the backup has not "
            "done them.",
            epoch + 1,
            csv_path,
        )
        run_dir.write_atomically(csv_path, "".join(kept))


def restore_backup(model_dir: str) -> int:
    """Makes the run resume from its newest intact backup; returns its epoch.

    Call it before `fit`, whose `callbacks.BackupAndRestore` restores the
    latest backup. If that one is damaged, logs a warning naming the file
    and copies the previous one over it. Then the run's other files are made
    to agree with the backup: model.weights.h5 gets its weights (a kill or
    a damaged file may have left others), and the rows of epochs it has not
    done leave history.csv and iwae_history.csv, so that those epochs are
    trained and logged again, once, as an uninterrupted run would.
    """
    resume = _resume(model_dir)
    backup = run_dir.path(model_dir, run_dir.BACKUP)
    if resume.damaged:
        logging.warning(
            "The latest backup is damaged or incomplete: %s. Resuming from the "
            "previous one instead, after epoch %d.",
            resume.damaged,
            resume.epoch,
        )
        # The checksums last: until they are copied, the latest backup stays
        # invalid and a kill leaves the previous one to resume from.
        for name in (
            run_dir.BACKUP_WEIGHTS,
            run_dir.BACKUP_METADATA,
            run_dir.BACKUP_CHECKSUMS,
        ):
            shutil.copyfile(
                os.path.join(backup, name + run_dir.PREVIOUS),
                os.path.join(backup, name),
            )
    weights = run_dir.path(model_dir, run_dir.WEIGHTS)
    if resume.suffix is None:
        # Left by a first backup cut short, or by a backup deleted to start
        # over: Keras would restore them.
        left = [
            file_path
            for file_path in (
                os.path.join(backup, run_dir.BACKUP_WEIGHTS),
                os.path.join(backup, run_dir.BACKUP_METADATA),
                weights,
            )
            if os.path.exists(file_path)
        ]
        if left:
            logging.warning(
                "%s holds no complete backup: training starts from epoch 1, and "
                "removes %s.",
                backup,
                ", ".join(left),
            )
        for file_path in left:
            os.remove(file_path)
    else:
        shutil.copyfile(os.path.join(backup, run_dir.BACKUP_WEIGHTS), weights + ".tmp")
        os.replace(weights + ".tmp", weights)
    _drop_rows(run_dir.path(model_dir, run_dir.HISTORY), resume.epoch)
    _drop_rows(run_dir.path(model_dir, run_dir.IWAE_HISTORY), resume.epoch)
    return resume.epoch
