"""A run directory (`--model_dir`): the names of its files, and reading them back.

`tfvae.train` writes a run directory; `tfvae.evaluate`, `tfvae.export`,
`scripts/report.py` and a resumed run read it. This module is the only place
its layout is written down:

  config.json          the run's `Config` (a resumed run must match it)
  dataset.json         the `data.DatasetInfo` it was trained on
  backup/              Keras BackupAndRestore state: rerunning resumes here
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
import json
import os

from tfvae import config as config_lib
from tfvae import data, errors, model

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
# The file Keras's BackupAndRestore writes with each backup.
_BACKUP_METADATA = "training_metadata.json"


def path(model_dir: str, name: str) -> str:
    """Returns the path of file or folder `name` (a constant here) of a run."""
    return os.path.join(model_dir, name)


def save_config(config: config_lib.Config, model_dir: str) -> None:
    """Writes `config` to `<model_dir>/config.json`."""
    os.makedirs(model_dir, exist_ok=True)
    with open(path(model_dir, CONFIG), "w") as f:
        f.write(config.to_json() + "\n")


def load_config(model_dir: str) -> config_lib.Config:
    """Returns the `Config` a training run saved in `model_dir`."""
    config_path = path(model_dir, CONFIG)
    if not os.path.exists(config_path):
        raise errors.UsageError(
            f"{config_path} does not exist: {model_dir!r} is not a tfvae run "
            "directory. Pass the --model_dir that `python -m tfvae.train` wrote to."
        )
    with open(config_path) as f:
        return config_lib.Config.from_dict(json.load(f))


def claim(config: config_lib.Config) -> None:
    """Makes `config.model_dir` this run's: refuses a foreign or different one.

    A folder holding the same run (or another that this config may resume)
    is kept; a non-empty folder without config.json, a file, or a run with
    another configuration raises `UsageError`. Then writes config.json.
    """
    model_dir = config.model_dir
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise errors.UsageError(
            f"--model_dir={model_dir} is a file, not a folder. Use a new or "
            "empty folder."
        )
    if os.path.exists(path(model_dir, CONFIG)):
        config_lib.check_compatible(load_config(model_dir), config)
    elif os.path.isdir(model_dir) and os.listdir(model_dir):
        raise errors.UsageError(
            f"--model_dir={model_dir} is not empty and holds no {CONFIG}, so it "
            "is not a tfvae run. Use a new or empty folder."
        )
    save_config(config, model_dir)


def save_info(info: data.DatasetInfo, model_dir: str) -> None:
    """Writes `info` to `<model_dir>/dataset.json`."""
    with open(path(model_dir, DATASET_INFO), "w") as f:
        json.dump(dataclasses.asdict(info), f, indent=2)


def load_info(model_dir: str) -> data.DatasetInfo:
    """Returns the `DatasetInfo` a training run saved in `model_dir`."""
    with open(path(model_dir, DATASET_INFO)) as f:
        values = json.load(f)
    return data.DatasetInfo(**{**values, "image_shape": tuple(values["image_shape"])})


def resumed_epoch(model_dir: str) -> int:
    """Returns the 0-based epoch `BackupAndRestore` will resume at (0 if none).

    Read before `fit`, so a resumed run's data continue where they stopped
    and it trains on the batches an uninterrupted run would have.
    """
    metadata = os.path.join(model_dir, BACKUP, _BACKUP_METADATA)
    if not os.path.exists(metadata):
        return 0
    with open(metadata) as f:
        return int(json.load(f)["epoch"])


def load_vae(model_dir: str) -> tuple[config_lib.Config, data.DatasetInfo, model.VAE]:
    """Rebuilds a trained run's VAE from its files, with no dataset needed.

    Returns the run's `Config`, its `DatasetInfo` and the VAE with the latest
    weights. Works whatever strategy (and device count) trained it.
    """
    config = load_config(model_dir)
    info = load_info(model_dir)
    weights = path(model_dir, WEIGHTS)
    if not os.path.exists(weights):
        raise errors.UsageError(
            f"{weights} does not exist: the run in {model_dir} has not finished "
            "an epoch yet. Train it first (python -m tfvae.train ...)."
        )
    vae = model.build_vae(info.image_shape, seed=config.seed, **config.model_settings())
    vae.load_weights(weights)
    return config, info, vae


@dataclasses.dataclass(frozen=True)
class History:
    """Per-epoch training curves; epochs count from 1, values are nats."""

    epochs: list[int]
    train_neg_elbo: list[float]
    test_neg_elbo: list[float]


def read_history_rows(model_dir: str) -> dict[int, dict[str, float]]:
    """Returns {epoch (from 1): its figures} of history.csv ({} if absent).

    Figures are keyed as Keras logs them: neg_elbo, kl, reconstruction and
    their val_ (test) twins, in nats.
    """
    history_path = path(model_dir, HISTORY)
    if not os.path.exists(history_path):
        return {}
    with open(history_path) as f:
        rows = list(csv.DictReader(f))
    # CSVLogger numbers epochs from 0; a resumed run may repeat one: the last
    # row wins.
    return {
        int(row["epoch"]) + 1: {k: float(v) for k, v in row.items() if k != "epoch"}
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
    history_path = path(model_dir, IWAE_HISTORY)
    if not os.path.exists(history_path):
        return {}
    with open(history_path) as f:
        return {
            int(row["epoch"]) + 1: (
                int(row["num_importance_samples"]),
                float(row["nll"]),
            )
            for row in csv.DictReader(f)
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
