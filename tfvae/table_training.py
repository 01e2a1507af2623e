"""A table run's data and model: `prepare(config, strategy)` for `fitting.fit_run`.

`--table=PATH` (a CSV, Parquet, `.npy` or `.npz` file, or a folder holding
`train.*` and `test.*`) is read whole with `tfvae.tables`' readers. A single
file is split by `--test_fraction` and `--seed` (`tables.split_table`'s
rule); `--label_column` is taken out of the modelled columns (its values are
the run's labels); rows labelled `--anomaly_label` leave the training split;
the columns are typed from what remains (`tables.infer_schema`, with
`--column_types` and `--max_categories`). The run records the split
(split.json: the table's rows, its sha256 and the test rows) and the schema
(schema.json), so a resumed run trains on the same rows with the same
schema, and a changed table is refused. A table larger than
`--memory_budget` is streamed in chunks instead (`tfvae.table_streaming`).
Everything is checked before the run directory changes. `read_run_table`
gives `tfvae.evaluate` a run's splits.

Example:

    metrics = fitting.fit_run(config, strategy, prepare(config, strategy))
"""

import dataclasses
import hashlib
import os

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from absl import logging

from tfvae import config as config_lib
from tfvae import (
    data,
    devices,
    distribute,
    errors,
    fitting,
    run_dir,
    table_flags,
    table_streaming,
    tables,
)


@dataclasses.dataclass(frozen=True)
class RunTable:
    """A table run's splits, as the model takes them.

    Args:
        info: what the run is trained on (schema, sizes, label classes).
        split: what split.json records: {"rows", "sha256", "test_rows"}
            ("rows" and "test_rows" None for a folder's train.* and test.*).
        train, test: each split's modelled columns.
        train_labels, test_labels: each split's labels (strings), or None.
    """

    info: run_dir.TableInfo
    split: dict
    train: pd.DataFrame
    test: pd.DataFrame
    train_labels: np.ndarray | None
    test_labels: np.ndarray | None

    def codes(self, labels: np.ndarray) -> np.ndarray:
        """Returns labels as int64 class codes (`info.labels`' order)."""
        classes = {label: code for code, label in enumerate(self.info.labels)}
        return np.array([classes[label] for label in labels], np.int64)


def _sha256(path: str) -> str:
    """Returns the sha256 of a table file, or of a folder's train.* and test.*."""
    digest = hashlib.sha256()
    files = tables.split_paths(path).values() if os.path.isdir(path) else [path]
    for file_path in files:
        digest.update(os.path.basename(file_path).encode() + b"\0")
        with open(file_path, "rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()


def _label_strings(cells: pd.Series) -> np.ndarray:
    """Returns a label column as strings ("" where missing; 2.0 reads as "2")."""
    numbers = pd.to_numeric(cells, errors="coerce")
    if cells.notna().equals(numbers.notna()) and (numbers.dropna() % 1 == 0).all():
        cells = numbers.astype("Int64")
    return cells.astype("string").fillna("").to_numpy(dtype=object)


def _classes(labels: np.ndarray) -> list[str]:
    """Returns the distinct labels, numbers in numeric order, missing left out."""

    def key(label):
        try:
            return (0, float(label), label)
        except ValueError:
            return (1, 0.0, label)

    return sorted({label for label in labels if label}, key=key)


def _check_exists(path: str) -> None:
    if not os.path.exists(path):
        raise errors.UsageError(
            f"--table={path} does not exist. Pass a CSV, Parquet, .npy or .npz "
            "file, or a folder holding train.* and test.*."
        )


def _fingerprint(path: str, recorded: dict | None) -> dict:
    """Returns the split.json of the table at `path`, its rows yet unknown;
    refuses a table whose sha256 is not the `recorded` split's."""
    split = {"sha256": _sha256(path), "rows": None, "test_rows": None}
    if recorded is not None and recorded["sha256"] != split["sha256"]:
        raise errors.UsageError(
            f"--table={path} is not the table this run began with: its sha256 "
            "differs from the one in split.json, so the run's split and schema "
            "would not fit it. Restore the run's table, or train on this one in a "
            "new --model_dir."
        )
    return split


def _read(path: str, seed: int, test_fraction: float, recorded: dict | None):
    """Returns (train, test, split) of the table at `path`, whole columns."""
    split = _fingerprint(path, recorded)
    if os.path.isdir(path):
        train, test = tables.read_split_files(path)
        return train, test, split
    frame = tables.read_file(path)
    split["rows"] = len(frame)
    if recorded is not None and recorded["test_rows"] is not None:
        test_rows = np.asarray(recorded["test_rows"], np.int64)
    else:  # A new run, or a streamed one (split by the rule, in file order).
        # The split rule's own function, on the row numbers.
        rows = pd.DataFrame({"row": np.arange(len(frame))})
        test_rows = tables.split_table(rows, test_fraction, seed)[1]["row"].to_numpy()
    split["test_rows"] = test_rows.tolist()
    is_test = np.zeros(len(frame), bool)
    is_test[test_rows] = True
    return (
        frame[~is_test].reset_index(drop=True),
        frame[is_test].reset_index(drop=True),
        split,
    )


def read_run_table(
    config: config_lib.Config,
    recorded_split: dict | None = None,
    recorded_info: run_dir.TableInfo | None = None,
) -> RunTable:
    """Reads `config.table` into the run's splits, checked; writes nothing.

    Args:
        config: a `--table` run's settings.
        recorded_split: a resumed run's split.json: its test rows are kept,
            and a table whose sha256 differs is refused.
        recorded_info: a resumed run's `TableInfo`: its schema and label
            classes are kept.

    Returns:
        The `RunTable`.

    Raises:
        errors.UsageError: a missing, changed or unreadable table, a label
            column that is not a column, an anomaly label that is no label, a
            column that cannot be modelled; naming it and the fix.
    """
    _check_exists(config.table)
    train, test, split = _read(
        config.table, config.seed, config.test_fraction, recorded_split
    )
    dropped = config.drop_columns.split(",") if config.drop_columns else []
    label = config.label_column
    for name in [*dropped, *([label] if label is not None else [])]:
        if name not in train.columns:
            flag = "--label_column" if name == label else "--drop_columns"
            raise errors.UsageError(
                f"{flag} names {name!r}, which is not a column of {config.table}. "
                f"Its columns: {', '.join(map(str, train.columns))}"
            )
    if label in dropped:
        raise errors.UsageError(
            f"--label_column={label} is also in --drop_columns: the labels are "
            "not modelled anyway. Remove it from --drop_columns."
        )
    train, test = train.drop(columns=dropped), test.drop(columns=dropped)
    train_labels = test_labels = None
    if label is not None:
        train_labels = _label_strings(train.pop(label))
        test_labels = _label_strings(test.pop(label))
    if config.anomaly_label is not None:
        values = _classes(np.concatenate([train_labels, test_labels]))
        if config.anomaly_label not in values:
            raise errors.UsageError(
                f"--anomaly_label={config.anomaly_label} is not a value of "
                f"--label_column={label}. Its values: {', '.join(values)}"
            )
        normal = train_labels != config.anomaly_label
        logging.info(
            "Training leaves out the %d rows labelled %s.",
            int((~normal).sum()),
            config.anomaly_label,
        )
        train, train_labels = train[normal].reset_index(drop=True), train_labels[normal]
    if recorded_info is not None:
        schema, classes = recorded_info.schema, recorded_info.labels
    else:
        column_types = table_flags.parse_column_types(config.column_types)
        if label in column_types:
            raise errors.UsageError(
                f"--column_types types --label_column={label}, which is not "
                "modelled: remove it from --column_types."
            )
        schema = tables.infer_schema(train, column_types, config.max_categories)
        classes = _classes(train_labels) if label is not None else None
    if config.conditional:
        for split_name, labels in (("training", train_labels), ("test", test_labels)):
            unknown = sorted(set(labels) - set(classes))
            if unknown:
                raise errors.UsageError(
                    f"--conditional needs a known class in every row, and "
                    f"--label_column={label} holds {unknown[0]!r} in the "
                    f"{split_name} split (classes: {', '.join(classes)}). Fill or "
                    "drop those rows."
                )
    info = run_dir.TableInfo(
        config.dataset_name, schema, len(train), len(test), label, classes
    )
    return RunTable(info, split, train, test, train_labels, test_labels)


def _recorded(model_dir: str):
    """Returns a run's recorded (split, TableInfo), or (None, None) for a new run."""
    if not os.path.exists(run_dir.path(model_dir, run_dir.CONFIG)):
        return None, None
    split = run_dir.load_split(model_dir)
    if split is None:
        if os.path.exists(run_dir.path(model_dir, run_dir.DATASET_INFO)):
            raise errors.UsageError(
                f"{run_dir.path(model_dir, run_dir.SPLIT)} is missing, so the run "
                "cannot resume on its rows. Restore it, or train again in a new "
                "--model_dir."
            )
        return None, None
    return split, run_dir.load_info(model_dir, table=True)


@dataclasses.dataclass(frozen=True)
class _Input:
    """A table run's data: in memory, or streamed past --memory_budget."""

    info: run_dir.TableInfo
    split: dict
    steps_per_epoch: int
    # (strategy, first epoch) -> the distributed endless training stream.
    train_batches: object
    test_batches: tf.data.Dataset
    streamed: bool


def _in_memory(config: config_lib.Config, recorded_split, recorded_info) -> _Input:
    """The table read whole: batches gathered by index from its columns."""
    table = read_run_table(config, recorded_split, recorded_info)

    def rows(frame, labels):
        columns = tables.table_columns(frame, table.info.schema)
        return (columns, table.codes(labels)) if config.conditional else columns

    train = rows(table.train, table.train_labels)

    def train_batches(strategy, first_epoch):
        return distribute.distribute_batches(
            strategy,
            data.shuffled_batches(train, config.batch_size, config.seed, first_epoch),
        )

    return _Input(
        info=table.info,
        split=table.split,
        steps_per_epoch=table.info.num_train // config.batch_size,
        train_batches=train_batches,
        test_batches=data.batches(
            tf.data.Dataset.from_tensor_slices(rows(table.test, table.test_labels)),
            config.batch_size,
        ),
        streamed=False,
    )


def _streamed(config: config_lib.Config, recorded_split, recorded_info) -> _Input:
    """The table read in chunks, each epoch anew (`table_streaming`)."""
    del recorded_info  # The same table (its sha256) gives the same schema.
    for name in ("label_column", "drop_columns"):
        if getattr(config, name) is not None:
            raise errors.UsageError(
                f"--{name} needs the table in memory, and --table={config.table} "
                f"is larger than --memory_budget={config.memory_budget}: raise "
                f"--memory_budget, or write the table without the column(s) and "
                f"remove --{name}."
            )
    split = _fingerprint(config.table, recorded_split)
    table = table_streaming.streamed_table(
        config.table,
        config.test_fraction,
        config.seed,
        table_flags.parse_column_types(config.column_types),
        config.max_categories,
    )
    split["rows"] = table.num_train + table.num_test
    info = run_dir.TableInfo(
        config.dataset_name, table.schema, table.num_train, table.num_test
    )

    def train_batches(strategy, first_epoch):
        return distribute.distribute_batches(
            strategy,
            table.train_batches(
                config.batch_size, config.seed, config.shuffle_buffer, first_epoch
            ),
        )

    return _Input(
        info=info,
        split=split,
        steps_per_epoch=table.steps_per_epoch(config.batch_size),
        train_batches=train_batches,
        test_batches=table.test_batches(config.batch_size),
        streamed=True,
    )


def prepare(
    config: config_lib.Config, strategy: tf.distribute.Strategy
) -> fitting.PreparedRun:
    """Checks a table run's flags and table and builds its model; writes nothing.

    A table larger than `--memory_budget` is streamed in chunks
    (`table_streaming`), without `--label_column` and `--drop_columns`.

    Args:
        config: the run's settings (`--table`).
        strategy: the strategy the model is built under.

    Returns:
        The `fitting.PreparedRun` of the run.

    Raises:
        errors.UsageError: a table or model that does not fit, naming the fix.
    """
    _check_exists(config.table)
    fits = table_streaming.table_fits(config.table, config.memory_budget)
    source = (_in_memory if fits else _streamed)(config, *_recorded(config.model_dir))
    info = source.info
    if not source.steps_per_epoch:
        raise errors.UsageError(
            f"--batch_size={config.batch_size} is larger than the {info.num_train} "
            f"training rows of {config.table}; use a smaller batch."
        )
    fitting.check_memory(config, info.num_classes, schema=info.schema)
    keras.utils.set_random_seed(config.seed)
    # A table's likelihood has no XLA kernels (`table_flags`): never compiled.
    execution = devices.resolve(config.mixed_precision, False, "mlp")
    with devices.dtype_policy(execution.mixed_precision), strategy.scope():
        vae = run_dir.build_model(config, info)
    vae.summary(print_fn=logging.info, expand_nested=True)

    def record(model_dir):
        run_dir.save_info(info, model_dir)
        run_dir.save_split(source.split, model_dir)

    return fitting.PreparedRun(
        vae=vae,
        info=info,
        execution=execution,
        steps_per_epoch=source.steps_per_epoch,
        train_batches=source.train_batches,
        test_batches=source.test_batches,
        streamed=source.streamed,
        record=record,
        extra_callbacks=list,
        # `tfvae.evaluate` draws a table's pictures.
        pictures=lambda vae: None,
        likelihood="table",
        export_kwargs={"dataset_info": info},
    )
