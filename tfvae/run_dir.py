"""A run directory (`--model_dir`): the names of its files, and reading them back.

`tfvae.train` writes a run directory; `tfvae.evaluate`, `tfvae.export`,
`scripts/report.py` and a resumed run read it. This module is the only place
its layout is written down, and it reads and writes the JSON files and
brings a run's VAE back (`load_run`); the CSV histories are read by
`tfvae.history`, the backups and the lock kept by `tfvae.resume`:

  config.json          the run's `Config` (a resumed run must match it)
  dataset.json         the `data.DatasetInfo` it was trained on (a table
                       run: its `TableInfo`, without the schema)
  schema.json          a table run's schema (`tables.infer_schema`)
  split.json           a table run's split: the table's rows and sha256
                       (a TFDS table's name, version and split rows), and
                       its test rows (a resumed run reuses them)
  execution.json       the number format and compiler it trains in, and how
                       they were chosen (a resumed run keeps them)
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
  .lock                held by the process training in the run (its pid)
"""

import dataclasses
import json
import os

from tfvae import builder, data, devices, errors, model, table_model
from tfvae import config as config_lib

CONFIG = "config.json"
DATASET_INFO = "dataset.json"
SCHEMA = "schema.json"
SPLIT = "split.json"
EXECUTION = "execution.json"
BACKUP = "backup"
WEIGHTS = "model.weights.h5"
HISTORY = "history.csv"
IWAE_HISTORY = "iwae_history.csv"
LOGS = "logs"
RECONSTRUCTIONS = "reconstructions.png"
SAMPLES = "samples.png"
METRICS = "metrics.json"
EVAL = "eval"
# Held (fcntl.flock) by the process training in the run; records its pid.
LOCK = ".lock"
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
    SCHEMA,
    SPLIT,
    EXECUTION,
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


def write_atomically(file_path: str, text: str) -> None:
    """Writes `text` to `file_path` through a temporary file: a kill leaves the old."""
    with open(file_path + ".tmp", "w", newline="") as f:
        f.write(text)
    os.replace(file_path + ".tmp", file_path)


def save_config(config: config_lib.Config, model_dir: str) -> None:
    """Writes `config` to `<model_dir>/config.json`."""
    os.makedirs(model_dir, exist_ok=True)
    write_atomically(path(model_dir, CONFIG), config.to_json() + "\n")


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


def check_layout(model_dir: str) -> None:
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


@dataclasses.dataclass(frozen=True)
class TableInfo:
    """What a table run was trained on (dataset.json, and schema.json).

    Args:
        name: the table's file (or folder) name, without its suffix.
        schema: the modelled columns' schema (`tables.infer_schema`).
        num_train: the training rows (without --anomaly_label's).
        num_test: the test rows.
        label_column: the class column (`--label_column`), or None.
        labels: that column's classes as strings, in code order, or None.

    Example:
        >>> TableInfo("wine", schema, 142, 36, "cultivar", ["1", "2", "3"]).num_classes
        3
    """

    name: str
    schema: dict
    num_train: int
    num_test: int
    label_column: str | None = None
    labels: list[str] | None = None

    @property
    def num_classes(self) -> int | None:
        """The label classes (a conditional VAE's), or None without labels."""
        return len(self.labels) if self.labels else None


def save_info(info: data.DatasetInfo | TableInfo, model_dir: str) -> None:
    """Writes `info` to `<model_dir>/dataset.json` (a table's schema: schema.json)."""
    values = dataclasses.asdict(info)
    if isinstance(info, TableInfo):
        write_atomically(path(model_dir, SCHEMA), json.dumps(values.pop("schema")))
    write_atomically(path(model_dir, DATASET_INFO), json.dumps(values, indent=2))


_REWRITE = "Rerun the run's training command: it writes the file again."
# A table run's record of its split and schema cannot be made again.
_RESTORE = (
    "Restore it from a copy (every export of the run holds it in "
    "assets/tfvae.json, as dataset_info), or train again in a new --model_dir."
)


def load_info(model_dir: str, table: bool = False) -> data.DatasetInfo | TableInfo:
    """Returns the `DatasetInfo` (`table`: the `TableInfo`) a run saved."""
    info_path = path(model_dir, DATASET_INFO)
    fix = _RESTORE if table else _REWRITE
    values = _read_json(info_path, fix)
    try:
        if table:
            schema = _read_json(path(model_dir, SCHEMA), fix)
            if not isinstance(schema, dict) or not schema.get("columns"):
                raise errors.UsageError(
                    f"{path(model_dir, SCHEMA)} is not a table's schema (it holds "
                    f"no columns). {fix}"
                )
            return TableInfo(**values, schema=schema)
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


def save_split(split: dict, model_dir: str) -> None:
    """Writes a table run's split (`table_training`'s) to split.json."""
    write_atomically(path(model_dir, SPLIT), json.dumps(split))


def load_split(model_dir: str) -> dict | None:
    """Returns the split.json a table run wrote, or None before the first run."""
    if not os.path.exists(path(model_dir, SPLIT)):
        return None
    split = _read_json(
        path(model_dir, SPLIT), "Train in a new --model_dir: the split is lost."
    )
    # A table file's split holds its sha256; a TFDS table's, its full name.
    if not isinstance(split, dict) or not {"sha256", "tfds"} & split.keys():
        raise errors.UsageError(
            f"{path(model_dir, SPLIT)} is not a table run's split. Train in a new "
            "--model_dir: the split is lost."
        )
    return split


def save_execution(record: dict, model_dir: str) -> None:
    """Writes the run's execution.json (`execution_trial.Choice.record()`)."""
    write_atomically(
        path(model_dir, EXECUTION), json.dumps(record, indent=2, sort_keys=True)
    )


def load_execution(model_dir: str) -> devices.Execution | None:
    """Returns the execution a run in `model_dir` recorded, or None before its
    first training."""
    file_path = path(model_dir, EXECUTION)
    if not os.path.exists(file_path):
        return None
    fix = (
        "Delete it: the resumed run then chooses its number format and "
        "compiler again, and may continue in another one."
    )
    record = _read_json(file_path, fix)
    try:
        execution = devices.Execution(record["mixed_precision"], record["jit_compile"])
    except (KeyError, TypeError):
        execution = None
    if (
        execution is None
        or execution.mixed_precision not in devices.POLICIES
        or not isinstance(execution.jit_compile, bool)
    ):
        raise errors.UsageError(
            f"{file_path} is not a run's execution (a mixed_precision of "
            f"{devices.POLICIES} and a boolean jit_compile). {fix}"
        )
    return execution


def build_model(config: config_lib.Config, info) -> model.VAE:
    """Returns the run's VAE, untrained: an image or a table VAE, as `info` says."""
    if isinstance(info, TableInfo):
        return table_model.build_table_vae(
            info.schema,
            seed=config.seed,
            num_classes=info.num_classes,
            **config.model_settings(tabular=True),
        )
    return builder.build_vae(
        info.image_shape,
        seed=config.seed,
        num_classes=info.num_classes,
        **config.model_settings(),
    )


# --- A trained run's model and figures -----------------------------------------


def load_run(
    model_dir: str,
) -> tuple[config_lib.Config, data.DatasetInfo | TableInfo, model.VAE]:
    """Brings a trained run's VAE back from its files, with no dataset needed.

    Works whatever strategy (and device count) trained it.

    Args:
      model_dir: the run directory `tfvae.train` wrote (`--model_dir`).

    Returns:
      (config, info, vae): the run's `Config`, its `data.DatasetInfo` (the
      image shape `(H, W, C)`, split sizes, classes) or, for a table run
      (`Config.table_run`), its `TableInfo` (the schema, split sizes, label
      classes), and the `VAE` with the latest weights (those of the last
      epoch trained).

    Raises:
      UsageError: a missing or damaged file, naming it and the fix.

    Example:
      >>> config, info, vae = run_dir.load_run("runs/mnist")
      >>> metrics = evaluation.evaluate(vae, test_images, num_samples=100)
    """
    config = load_config(model_dir)
    info = load_info(model_dir, table=config.table_run)
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
    vae = build_model(config, info)
    try:
        vae.load_weights(weights)
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        raise errors.UsageError(
            f"{weights} is damaged: Keras cannot load it ({e}). Rerun the run's "
            "training command (with --noexport to skip a new export): it puts "
            "back the weights of the run's last backed-up epoch."
        ) from None
    return config, info, vae


def read_metrics(folder: str) -> dict:
    """Returns `<folder>/metrics.json` ({} if absent): a run's or an evaluation's."""
    metrics_path = path(folder, METRICS)
    if not os.path.exists(metrics_path):
        return {}
    with open(metrics_path) as f:
        return json.load(f)


def write_metrics(folder: str, metrics: dict) -> None:
    """Writes `metrics` to `<folder>/metrics.json`."""
    write_atomically(
        path(folder, METRICS), json.dumps(metrics, indent=2, sort_keys=True)
    )
