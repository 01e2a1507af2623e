"""A run's CSV histories: history.csv (every epoch) and iwae_history.csv.

Keras's `CSVLogger` writes history.csv, one row per epoch (numbered from 0)
of the train and test (val_) figures; `callbacks.IWAECallback` appends a row
to iwae_history.csv every --iwae_every_epochs epochs. This module reads
both back (refusing a damaged file, naming its line) and appends the IWAE
rows; `tfvae.resume` drops the rows of epochs a resumed run trains again.
"""

import csv
import dataclasses
import os

from tfvae import errors, run_dir


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
    rows = _read_csv(run_dir.path(model_dir, run_dir.HISTORY), {"epoch": int})
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
        run_dir.path(model_dir, run_dir.IWAE_HISTORY),
        dict(zip(IWAE_HISTORY_COLUMNS, (int, int, float, float), strict=True)),
    )
    return {
        row["epoch"] + 1: (row["num_importance_samples"], row["nll"]) for row in rows
    }


def append_iwae_history(model_dir: str, row: tuple) -> None:
    """Appends one row of `IWAE_HISTORY_COLUMNS` (epoch from 0) to iwae_history.csv."""
    history_path = run_dir.path(model_dir, run_dir.IWAE_HISTORY)
    new_file = not os.path.exists(history_path)
    with open(history_path, "a", newline="") as f:
        writer = csv.writer(f)
        if new_file:
            writer.writerow(IWAE_HISTORY_COLUMNS)
        writer.writerow(row)
