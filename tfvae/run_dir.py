"""A run directory (`--model_dir`): the names of its files, and reading them back.

`tfvae.train` writes a run directory; `tfvae.evaluate`, `tfvae.export`,
`scripts/report.py` and a resumed run read it. This module is the only place
its layout is written down:

  config.json          the run's `Config` (a resumed run must match it)
  dataset.json         the `data.DatasetInfo` it was trained on
  backup/              Keras BackupAndRestore state of the last two epochs,
                       with checksums.json: rerunning resumes here
  model.weights.h5     the latest weights, saved every epoch
  history.csv          train and test (val_) metrics of every epoch
  iwae_history.csv     the IWAE bound every --iwae_every_epochs epochs
  logs/                TensorBoard: scalars per epoch (train/, validation/,
                       iwae/) and images/
  reconstructions.png  test images over their reconstructions
  samples.png          64 decoded samples from the prior
  metrics.json         the final figures
  eval/                what `tfvae.evaluate` writes
"""

import csv
import dataclasses
import hashlib
import json
import os
import shutil

from absl import logging

from tfvae import config as config_lib
from tfvae import data, errors, model, saved_model

CONFIG = "config.json"
DATASET_INFO = "dataset.json"
BACKUP = "backup"
WEIGHTS = "model.weights.h5"
HISTORY = "history.csv"
IWAE_HISTORY = "iwae_history.csv"
LOGS = "logs"
RECONSTRUCTIONS = "reconstructions.png"
SAMPLES = "samples.png"
METRICS = "metrics.json"
EVAL = "eval"
# In backup/: the files Keras's BackupAndRestore writes with each backup,
# and the sha256 of both that `callbacks.BackupAndRestore` writes after them.
# The previous backup's files have the same names plus PREVIOUS.
BACKUP_WEIGHTS = "latest.weights.h5"
BACKUP_METADATA = "training_metadata.json"
BACKUP_CHECKSUMS = "checksums.json"
PREVIOUS = ".bkp"
_FILES = (
    CONFIG,
    DATASET_INFO,
    WEIGHTS,
    HISTORY,
    IWAE_HISTORY,
    RECONSTRUCTIONS,
    SAMPLES,
    METRICS,
)
_FOLDERS = (BACKUP, LOGS, EVAL)
_BACKUP_FILES = tuple(
    os.path.join(BACKUP, name + suffix)
    for name in (BACKUP_WEIGHTS, BACKUP_METADATA, BACKUP_CHECKSUMS)
    for suffix in ("", PREVIOUS)
)
_CONFIG_FIX = (
    'Restore it from a copy (every export of the run holds it, as "config" in '
    "assets/tfvae.json), or train again in a new --model_dir."
)


def path(model_dir: str, name: str) -> str:
    """Returns the path of file or folder `name` (a constant here) of a run."""
    return os.path.join(model_dir, name)


def _read_json(file_path: str, fix: str):
    """Returns the JSON value in `file_path`; raises `UsageError` ending with `fix`."""
    try:
        with open(file_path) as f:
            return json.load(f)
    except FileNotFoundError:
        problem = "does not exist"
    except IsADirectoryError:
        problem = "is a folder, not a file"
    except (OSError, ValueError) as e:  # ValueError: not UTF-8, or not JSON.
        problem = f"is damaged: it is not JSON ({e})"
    raise errors.UsageError(f"{file_path} {problem}. {fix}")


def _write_atomically(file_path: str, text: str) -> None:
    """Writes `text` to `file_path` through a temporary file: a kill leaves the old."""
    with open(file_path + ".tmp", "w", newline="") as f:
        f.write(text)
    os.replace(file_path + ".tmp", file_path)


def save_config(config: config_lib.Config, model_dir: str) -> None:
    """Writes `config` to `<model_dir>/config.json`."""
    os.makedirs(model_dir, exist_ok=True)
    with open(path(model_dir, CONFIG), "w") as f:
        f.write(config.to_json() + "\n")


def load_config(model_dir: str) -> config_lib.Config:
    """Returns the `Config` a training run saved in `model_dir`.

    Raises `UsageError`, naming the file and the fix, if config.json is
    missing, damaged or not a tfvae configuration.
    """
    config_path = path(model_dir, CONFIG)
    if not os.path.exists(config_path):
        raise errors.UsageError(
            f"{config_path} does not exist: {model_dir!r} is not a tfvae run "
            "directory. Pass the --model_dir that `python -m tfvae.train` wrote to."
        )
    values = _read_json(config_path, _CONFIG_FIX)
    try:
        if not isinstance(values, dict):
            raise errors.UsageError(f"it holds a {type(values).__name__}")
        return config_lib.Config.from_dict(values)
    except (TypeError, ValueError) as e:  # UsageError is a ValueError.
        raise errors.UsageError(
            f"{config_path} is not a valid tfvae configuration: {e} {_CONFIG_FIX}"
        ) from None


def _check_layout(model_dir: str) -> None:
    """Raises `UsageError` for a folder where a run keeps a file, or the reverse."""
    for name in (*_FILES, *_BACKUP_FILES):
        if os.path.isdir(path(model_dir, name)):
            raise errors.UsageError(
                f"{path(model_dir, name)} is a folder, where a tfvae run keeps a "
                f"file. Move it out of {model_dir}."
            )
    for name in _FOLDERS:
        folder = path(model_dir, name)
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise errors.UsageError(
                f"{folder} is a file, where a tfvae run keeps its {name}/ folder. "
                f"Move it out of {model_dir}."
            )


def claim(config: config_lib.Config) -> None:
    """Makes `config.model_dir` this run's: refuses a foreign or different one.

    A folder holding the same run (or another that this config may resume)
    is kept; a non-empty folder without config.json, a file, a run with
    another configuration, one that cannot resume (`resumed_epoch`), a file
    or folder where the other kind belongs, and an export base that is a
    file (if the run exports) raise `UsageError`. Then writes config.json.
    """
    model_dir = config.model_dir
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise errors.UsageError(
            f"--model_dir={model_dir} is a file, not a folder. Use a new or "
            "empty folder."
        )
    if os.path.exists(path(model_dir, CONFIG)):
        _check_layout(model_dir)
        config_lib.check_compatible(load_config(model_dir), config)
        resumed_epoch(model_dir)
    elif os.path.isdir(model_dir) and os.listdir(model_dir):
        raise errors.UsageError(
            f"--model_dir={model_dir} is not empty and holds no {CONFIG}, so it "
            "is not a tfvae run. Use a new or empty folder."
        )
    if config.export:
        saved_model.check_export_base(config.export_base)
    save_config(config, model_dir)


def save_info(info: data.DatasetInfo, model_dir: str) -> None:
    """Writes `info` to `<model_dir>/dataset.json`."""
    with open(path(model_dir, DATASET_INFO), "w") as f:
        json.dump(dataclasses.asdict(info), f, indent=2)


def load_info(model_dir: str) -> data.DatasetInfo:
    """Returns the `DatasetInfo` a training run saved in `model_dir`."""
    info_path = path(model_dir, DATASET_INFO)
    fix = "Rerun the run's training command: it writes the file again."
    values = _read_json(info_path, fix)
    try:
        info = data.DatasetInfo(
            **{**values, "image_shape": tuple(values["image_shape"])}
        )
        if len(info.image_shape) != 3 or not all(
            isinstance(size, int) and size > 0 for size in info.image_shape
        ):
            raise TypeError(f"image_shape {list(info.image_shape)} is not H, W, C")
        return info
    except (KeyError, TypeError) as e:
        raise errors.UsageError(
            f"{info_path} is not a valid dataset description ({e!r}). {fix}"
        ) from None


# --- Backups -------------------------------------------------------------------


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
    latest = os.path.join(backup_dir, BACKUP_CHECKSUMS)
    if os.path.exists(latest):
        shutil.copyfile(latest, latest + PREVIOUS)


def write_backup_checksums(backup_dir: str) -> None:
    """Writes the sha256 of the latest backup's weights and metadata beside them."""
    checksums = {
        name: _sha256(os.path.join(backup_dir, name))
        for name in (BACKUP_WEIGHTS, BACKUP_METADATA)
    }
    _write_atomically(
        os.path.join(backup_dir, BACKUP_CHECKSUMS), json.dumps(checksums) + "\n"
    )


def _backup_problem(backup_dir: str, suffix: str) -> str | None:
    """Returns what is wrong with the backup of files ending in `suffix`, or None."""
    checksums_path = os.path.join(backup_dir, BACKUP_CHECKSUMS + suffix)
    try:
        with open(checksums_path) as f:
            checksums = json.load(f)
    except FileNotFoundError:
        return f"{checksums_path} is missing"
    except (OSError, ValueError):
        return f"{checksums_path} is damaged"
    for name in (BACKUP_WEIGHTS, BACKUP_METADATA):
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
    backup = path(model_dir, BACKUP)
    if not os.path.exists(os.path.join(backup, BACKUP_CHECKSUMS)) and not any(
        os.path.exists(os.path.join(backup, name + PREVIOUS))
        for name in (BACKUP_WEIGHTS, BACKUP_METADATA, BACKUP_CHECKSUMS)
    ):
        # No backup, or a first one cut short before its checksums.
        resume = _Resume(0, None, None)
    else:
        damaged = _backup_problem(backup, "")
        suffix = ""
        if damaged:
            previous = _backup_problem(backup, PREVIOUS)
            if previous:
                raise errors.UsageError(
                    f"No backup in {backup} is intact, so the run cannot resume: "
                    f"{damaged}, and {previous}. Delete {backup} to train the run "
                    "again from epoch 1, or use a new --model_dir."
                )
            suffix = PREVIOUS
        with open(os.path.join(backup, BACKUP_METADATA + suffix)) as f:
            resume = _Resume(int(json.load(f)["epoch"]), suffix, damaged)
    done = read_history_rows(model_dir)
    read_iwae_history(model_dir)  # Refuses a damaged file now, not after an epoch.
    missing = [epoch for epoch in range(1, resume.epoch + 1) if epoch not in done]
    if missing:
        raise errors.UsageError(
            f"{path(model_dir, HISTORY)} lacks the rows of {len(missing)} of the "
            f"{resume.epoch} epochs the backup in {backup} has done (the first: "
            f"epoch {missing[0]}), so the run's curves and metrics.json would be "
            f"wrong. Restore the file, or delete {backup} to train the run again "
            "from epoch 1."
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
        _write_atomically(csv_path, "".join(kept))


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
    backup = path(model_dir, BACKUP)
    if resume.damaged:
        logging.warning(
            "The latest backup is damaged or incomplete: %s. Resuming from the "
            "previous one instead, after epoch %d.",
            resume.damaged,
            resume.epoch,
        )
        # The checksums last: until they are copied, the latest backup stays
        # invalid and a kill leaves the previous one to resume from.
        for name in (BACKUP_WEIGHTS, BACKUP_METADATA, BACKUP_CHECKSUMS):
            shutil.copyfile(
                os.path.join(backup, name + PREVIOUS), os.path.join(backup, name)
            )
    weights = path(model_dir, WEIGHTS)
    if resume.suffix is None:
        # Left by a first backup cut short, or by a backup deleted to start
        # over: Keras would restore them.
        left = [
            file_path
            for file_path in (
                os.path.join(backup, BACKUP_WEIGHTS),
                os.path.join(backup, BACKUP_METADATA),
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
        shutil.copyfile(os.path.join(backup, BACKUP_WEIGHTS), weights + ".tmp")
        os.replace(weights + ".tmp", weights)
    _drop_rows(path(model_dir, HISTORY), resume.epoch)
    _drop_rows(path(model_dir, IWAE_HISTORY), resume.epoch)
    return resume.epoch


def load_vae(model_dir: str) -> tuple[config_lib.Config, data.DatasetInfo, model.VAE]:
    """Rebuilds a trained run's VAE from its files, with no dataset needed.

    Returns the run's `Config`, its `DatasetInfo` and the VAE with the latest
    weights. Works whatever strategy (and device count) trained it. A missing
    or damaged file raises `UsageError` naming it and the fix.
    """
    config = load_config(model_dir)
    info = load_info(model_dir)
    weights = path(model_dir, WEIGHTS)
    if not os.path.exists(weights):
        raise errors.UsageError(
            f"{weights} does not exist: the run in {model_dir} has not finished "
            "an epoch yet, or the file was deleted. Rerun the run's training "
            "command (with --noexport to skip a new export): it trains, or puts "
            "back the weights of the last backed-up epoch."
        )
    if os.path.isdir(weights):
        raise errors.UsageError(
            f"{weights} is a folder, not a file. Move it away, and rerun the "
            "run's training command (with --noexport to skip a new export): it "
            "writes the weights of the run's last backed-up epoch there."
        )
    vae = model.build_vae(
        info.image_shape,
        seed=config.seed,
        num_classes=info.num_classes,
        **config.model_settings(),
    )
    try:
        vae.load_weights(weights)
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        raise errors.UsageError(
            f"{weights} is damaged: Keras cannot load it ({e}). Rerun the run's "
            "training command (with --noexport to skip a new export): it puts "
            "back the weights of the run's last backed-up epoch."
        ) from None
    return config, info, vae


@dataclasses.dataclass(frozen=True)
class History:
    """Per-epoch training curves; epochs count from 1, values are nats."""

    epochs: list[int]
    train_neg_elbo: list[float]
    test_neg_elbo: list[float]


def _read_csv(csv_path: str, numbers: dict[str, type]) -> list[dict]:
    """Returns the rows of `csv_path` ([] if absent), their values made numbers.

    `numbers` maps the columns that must be there to int or float; any
    other column is read as a float. A folder, a file without those columns
    or a row that is not numbers under them raises `UsageError`, naming the
    file and the line.
    """
    if not os.path.exists(csv_path):
        return []
    try:
        with open(csv_path, newline="") as f:
            lines = list(enumerate(csv.reader(f), start=1))
    except IsADirectoryError:
        raise errors.UsageError(
            f"{csv_path} is a folder, not a file. Move it away."
        ) from None
    except (OSError, ValueError, csv.Error) as e:
        raise errors.UsageError(
            f"{csv_path} cannot be read ({e}). Correct it, or move it away."
        ) from None
    if not lines:
        return []
    header = lines[0][1]
    if not set(numbers) <= set(header):
        raise errors.UsageError(
            f"{csv_path} is damaged: its first line should name the columns "
            f"{', '.join(numbers)}. Correct it. Received: {','.join(header)}"
        )
    rows = []
    for line, values in lines[1:]:
        if not values:
            continue
        try:
            if len(values) != len(header):
                raise ValueError
            rows.append(
                {
                    name: numbers.get(name, float)(value)
                    for name, value in zip(header, values, strict=True)
                }
            )
        except ValueError:
            raise errors.UsageError(
                f"{csv_path} is damaged: line {line} is not a row of "
                f"{len(header)} numbers. Correct or delete that line. Received: "
                f"{','.join(values)}"
            ) from None
    return rows


def read_history_rows(model_dir: str) -> dict[int, dict[str, float]]:
    """Returns {epoch (from 1): its figures} of history.csv ({} if absent).

    Figures are keyed as Keras logs them: neg_elbo, kl, reconstruction and
    their val_ (test) twins, in nats. A damaged file raises `UsageError`.
    """
    rows = _read_csv(path(model_dir, HISTORY), {"epoch": int})
    # CSVLogger numbers epochs from 0. Runs of older tfvae versions may
    # repeat an epoch after a resume: the last row wins.
    return {
        row["epoch"] + 1: {name: v for name, v in row.items() if name != "epoch"}
        for row in rows
    }


def read_history(model_dir: str) -> History | None:
    """Returns the curves of `<model_dir>/history.csv`, or None if it has none."""
    rows = read_history_rows(model_dir)
    if not rows:
        return None
    epochs = sorted(rows)
    return History(
        epochs=epochs,
        train_neg_elbo=[rows[e]["neg_elbo"] for e in epochs],
        test_neg_elbo=[rows[e]["val_neg_elbo"] for e in epochs],
    )


IWAE_HISTORY_COLUMNS = ("epoch", "num_importance_samples", "neg_elbo", "nll")


def read_iwae_history(model_dir: str) -> dict[int, tuple[int, float]]:
    """Returns {epoch (from 1): (k, nll)} of `iwae_history.csv` ({} if absent)."""
    rows = _read_csv(
        path(model_dir, IWAE_HISTORY),
        dict(zip(IWAE_HISTORY_COLUMNS, (int, int, float, float), strict=True)),
    )
    return {
        row["epoch"] + 1: (row["num_importance_samples"], row["nll"]) for row in rows
    }


def append_iwae_history(model_dir: str, row: tuple) -> None:
    """Appends one row of `IWAE_HISTORY_COLUMNS` (epoch from 0) to iwae_history.csv."""
    history_path = path(model_dir, IWAE_HISTORY)
    new_file = not os.path.exists(history_path)
    with open(history_path, "a", newline="") as f:
        writer = csv.writer(f)
        if new_file:
            writer.writerow(IWAE_HISTORY_COLUMNS)
        writer.writerow(row)


def read_metrics(folder: str) -> dict:
    """Returns `<folder>/metrics.json` ({} if absent): a run's or an evaluation's."""
    metrics_path = path(folder, METRICS)
    if not os.path.exists(metrics_path):
        return {}
    with open(metrics_path) as f:
        return json.load(f)


def write_metrics(folder: str, metrics: dict) -> None:
    """Writes `metrics` to `<folder>/metrics.json`."""
    with open(path(folder, METRICS), "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
