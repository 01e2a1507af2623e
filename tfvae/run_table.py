"""A table run's rows: its table, split and schema, as recorded: `read_run_table`.

`--table=PATH` (a CSV, Parquet, `.npy` or `.npz` file, or a folder holding
`train.*` and `test.*`) is read whole with `tfvae.tables`' readers, a TFDS
`--dataset` of scalar features by `tfvae.table_datasets`. A single file (or
a TFDS table without a test split) is split by `--test_fraction` and
`--seed` (`tables.split_table`'s rule); `--label_column` is taken out of
the modelled columns (its values are the run's labels, read as
`table_typing.category_cells`); rows labelled `--anomaly_label` leave the
training split; the columns are typed from what remains
(`tables.infer_schema`, with `--column_types` and `--max_categories`).
split.json records the table's rows, its sha256 (`fingerprint`) or TFDS
version, and the test rows, so a resumed run (`tfvae.table_training`) and
`tfvae.evaluate` read the same rows, and a changed table is refused.

Example:

    table = read_run_table(config, run_dir.load_split(RUN), info)
    table.test, table.test_labels
"""

import dataclasses
import hashlib
import os

import numpy as np
import pandas as pd
from absl import logging

from tfvae import config as config_lib
from tfvae import errors, run_dir, table_datasets, table_flags, table_typing, tables


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
    """Returns the sha256 of a table file, or of a folder's train.* and test.*
    (by split); not of names, so a table may move under another name."""
    digest = hashlib.sha256()
    files = tables.split_paths(path) if os.path.isdir(path) else {"": path}
    for split, file_path in files.items():
        digest.update(split.encode() + b"\0")
        with open(file_path, "rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()


def _label_strings(cells: pd.Series) -> np.ndarray:
    """Returns a label column as strings ("" where missing)."""
    return table_typing.category_cells(cells).to_numpy(dtype=object)


def _classes(labels: np.ndarray) -> list[str]:
    """Returns the distinct labels, numbers in numeric order, missing left out."""

    def key(label):
        try:
            return (0, float(label), label)
        except ValueError:
            return (1, 0.0, label)

    return sorted({label for label in labels if label}, key=key)


def check_exists(path: str, resumed: bool) -> None:
    """Refuses a `--table` that does not exist, naming the fix.

    Args:
        path: `--table`.
        resumed: whether a run recorded it (resumed, or evaluated): it has
            moved, rather than been mistyped.
    """
    if os.path.exists(path):
        return
    if resumed:
        raise errors.UsageError(
            f"{path}, the table this run trained on (its config.json's --table), "
            "does not exist. Restore it there, or rerun the training with "
            "--table=NEW_PATH (the same table: its sha256 is checked), which "
            "records its new place."
        )
    raise errors.UsageError(
        f"--table={path} does not exist. Pass a CSV, Parquet, .npy or .npz "
        "file, or a folder holding train.* and test.*."
    )


def fingerprint(path: str, recorded: dict | None) -> dict:
    """Returns the split.json of the table at `path`, its rows yet unknown.

    Args:
        path: `--table`, a file or a folder.
        recorded: the run's split.json, or None for a new run.

    Returns:
        {"sha256": the table's, "rows": None, "test_rows": None}.

    Raises:
        errors.UsageError: a table whose sha256 is not the `recorded` split's.
    """
    split = {"sha256": _sha256(path), "rows": None, "test_rows": None}
    if recorded is not None and recorded.get("sha256") != split["sha256"]:
        raise errors.UsageError(
            f"--table={path} is not the table this run began with: its sha256 "
            "differs from the one in split.json, so the run's split and schema "
            "would not fit it. Restore the run's table, or train on this one in a "
            "new --model_dir."
        )
    return split


def _read(config: config_lib.Config, recorded: dict | None):
    """Returns (train, test, split) of the run's table, whole columns."""
    if config.table:
        check_exists(config.table, recorded is not None)
        split = fingerprint(config.table, recorded)
        if os.path.isdir(config.table):
            return (*tables.read_split_files(config.table), split)
        frame = tables.read_file(config.table)
    else:  # A TFDS table: its own test split, or none (then split by the rule).
        source = (config.dataset, config.data_dir, config.manual_dir)
        frame, test, split = table_datasets.read_dataset(
            *source, config.memory_budget, recorded
        )
        if test is not None:
            if config.test_fraction != tables.TEST_FRACTION:
                raise errors.UsageError(
                    f"--test_fraction={config.test_fraction} does not apply to "
                    f"--dataset={config.dataset}: it has a test split, which the "
                    "run tests on. Remove --test_fraction."
                )
            return frame, test, split
    split["rows"] = len(frame)
    if recorded is not None and recorded["test_rows"] is not None:
        test_rows = np.asarray(recorded["test_rows"], np.int64)
    else:  # New, or streamed: the split rule's own function, on row numbers.
        rows = pd.DataFrame({"row": np.arange(len(frame))})
        test_rows = tables.split_table(rows, config.test_fraction, config.seed)[1]
        test_rows = test_rows["row"].to_numpy()
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
    """Reads the run's table into its splits, checked; writes nothing.

    Args:
        config: a table run's settings (`--table`, or a TFDS `--dataset`).
        recorded_split: a resumed run's split.json: its test rows are kept,
            and a table of another sha256 (or TFDS version) is refused.
        recorded_info: a resumed run's `TableInfo`: its schema and label
            classes are kept.

    Returns:
        The `RunTable`.

    Raises:
        errors.UsageError: a missing, changed or unreadable table, a label
            column that is not a column, an anomaly label that is no label, a
            column that cannot be modelled; naming it and the fix.

    Example:

        table = read_run_table(Config(table="runs.csv", label_column="kind"))
        table.train, table.codes(table.train_labels)
    """
    train, test, split = _read(config, recorded_split)
    dropped = config.drop_columns.split(",") if config.drop_columns else []
    label = config.label_column
    for name in [*dropped, *([label] if label is not None else [])]:
        if name not in train.columns:
            flag = "--label_column" if name == label else "--drop_columns"
            raise errors.UsageError(
                f"{flag} names {name!r}, which is not a column of "
                f"{config.table or config.dataset}. "
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
