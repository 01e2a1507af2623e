"""Tables: reading one, typing its columns, and the schema a table VAE is made from.

`read_table(source)` reads a DataFrame, a dict of arrays, a file
(`tfvae.table_files`) or a folder of `train.*` and `test.*`, splits a single
table by `test_fraction` and `seed` (`test_rows`' rule, which
`tfvae.table_streaming` follows too), and types each column from the
training split (`tfvae.table_typing`), refusing one that cannot be modelled,
naming it and the fix. The schema is a JSON-able dict (each column's name,
type, categories, training statistics); `table_batches` makes the batches a
table VAE trains on: its rows, float32 `[batch, columns]`, categories as
their codes, NaN where missing (`tfvae.table_rows`).

Example:
    schema, train, test = read_table("wine.csv", test_fraction=0.2, seed=0)
    dataset = table_batches(train, schema, batch_size=32, shuffle_seed=0)
"""

import os

import numpy as np
import pandas as pd
import tensorflow as tf
from absl import logging

from tfvae import data, errors, table_files, table_rows, table_typing

# The most categories a column may have by default, and the fewest it may be
# given (a categorical column of one category is constant).
MAX_CATEGORIES = 50
MIN_CATEGORIES = 2
# The share of a single table's rows held out as the test split, by default.
TEST_FRACTION = 0.2
# The split's fraction must leave rows on both sides.
_MIN_ROWS = 2


def read_file(path: str) -> pd.DataFrame:
    """Returns the table in one file, its column names as strings.

    Raises:
        errors.UsageError: a file of a type tfvae does not read, or bad cells.
    """
    readers = table_files.READERS
    if table_files.suffix(path) not in readers:
        raise errors.UsageError(
            f"{path} is not a table tfvae reads: give a {', '.join(readers)} file "
            "or a folder holding train.* and test.*"
        )
    frame = readers[table_files.suffix(path)](path)
    return frame.set_axis([str(c) for c in frame.columns], axis=1)


def split_paths(folder: str) -> dict[str, str]:
    """Returns {"train": path, "test": path}: a folder's `train.*` and `test.*`.

    Raises:
        errors.UsageError: the folder lacks one, or holds several.
    """
    found = {}
    for split in ("train", "test"):
        names = [
            n for n in sorted(os.listdir(folder)) if os.path.splitext(n)[0] == split
        ]
        if len(names) != 1:
            raise errors.UsageError(
                f"The folder {folder} must hold one {split}.* table (e.g. "
                f"{split}.csv). Received: {names or 'none'}"
            )
        found[split] = os.path.join(folder, names[0])
    return found


def read_split_files(folder: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Returns (train, test): the tables of a folder's `train.*` and `test.*`.

    Raises:
        errors.UsageError: a missing file, or splits of different columns.
    """
    paths = split_paths(folder)
    train, test = read_file(paths["train"]), read_file(paths["test"])
    if list(train.columns) != list(test.columns):
        raise errors.UsageError(
            f"{folder}'s train and test tables must have the same columns. "
            f"Received: {list(train.columns)} and {list(test.columns)}"
        )
    return train, test


def _as_frame(source) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        return source.reset_index(drop=True)
    if isinstance(source, dict):
        return pd.DataFrame({str(k): np.asarray(v) for k, v in source.items()})
    return read_file(os.fspath(source))


def test_fraction_problem(test_fraction: float) -> str | None:
    """Returns what is wrong with a `test_fraction` (the rule: in (0, 1)), or None."""
    return None if 0 < test_fraction < 1 else "must be between 0 and 1"


def check_test_fraction(test_fraction: float):
    """Refuses a `test_fraction` outside (0, 1) (`test_fraction_problem`)."""
    if problem := test_fraction_problem(test_fraction):
        raise errors.UsageError(f"test_fraction {problem}. Received: {test_fraction=}")


def check_max_categories(max_categories: int):
    """Refuses a `max_categories` that is not an int of at least `MIN_CATEGORIES`."""
    valid = isinstance(max_categories, int | np.integer)  # True, False: < 2.
    if not valid or max_categories < MIN_CATEGORIES:
        raise errors.UsageError(
            f"max_categories must be an int of at least {MIN_CATEGORIES}. "
            f"Received: {max_categories=}"
        )


def test_rows(generator: np.random.Generator, rows: int, test_fraction: float):
    """Returns which of the next `rows` rows are test rows: bool `[rows]`.

    The split rule, applied in the table's row order: row i is a test row if
    the i-th draw of `np.random.default_rng(seed).random()` is below
    `test_fraction`. A generator advanced chunk by chunk draws the same
    numbers as one call, so a table streamed in chunks
    (`tfvae.table_streaming`) splits as it does in memory.
    """
    return generator.random(rows) < test_fraction


def check_split(train_rows: int, test_rows: int, test_fraction: float):
    """Refuses a split that leaves a side (almost) empty."""
    if test_rows < 1 or train_rows < _MIN_ROWS:
        raise errors.UsageError(
            f"A table of {train_rows + test_rows} rows split with test_fraction="
            f"{test_fraction} leaves {train_rows} training and {test_rows} test "
            "rows: give more rows or another fraction"
        )


def split_table(
    frame: pd.DataFrame, test_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Returns (train, test): each row is a test row with chance `test_fraction`.

    The rule of `test_rows`, seeded with `seed`: the split depends on the seed
    and the rows' order only, and about `test_fraction` of the rows (not an
    exact count) are test rows.

    Args:
        frame: the whole table.
        test_fraction: the chance of each row being a test row, in (0, 1).
        seed: seeds the split.

    Returns:
        (train, test) DataFrames, each in the table's row order.

    Example:
        >>> train, test = split_table(pd.DataFrame({"x": range(100)}), 0.2, 0)
        >>> len(train) + len(test)
        100
    """
    check_test_fraction(test_fraction)
    test = test_rows(np.random.default_rng(seed), len(frame), test_fraction)
    check_split(int((~test).sum()), int(test.sum()), test_fraction)
    return frame[~test].reset_index(drop=True), frame[test].reset_index(drop=True)


def check_column_types(names: list[str], column_types: dict[str, str]):
    """Refuses duplicate column names, and overrides naming an unknown column or
    type; before any cell is read.

    Args:
        names: the table's column names, in order.
        column_types: {column: type} overriding the inference.

    Raises:
        errors.UsageError: naming the duplicates, or the unknown column or type.
    """
    if len(set(names)) != len(names):
        raise errors.UsageError(f"Column names must be unique. Received: {names}")
    for name, kind in column_types.items():
        if name not in names:
            raise errors.UsageError(
                f"column_types names {name!r}, which is not a column. The columns "
                f"are: {', '.join(names)}"
            )
        if kind not in table_typing.COLUMN_TYPES:
            raise errors.UsageError(
                f"Column {name!r}'s type must be one of "
                f"{', '.join(table_typing.COLUMN_TYPES)}. "
                f"Received: {kind!r}"
            )


def schema_of(summaries: list, column_types: dict[str, str]) -> dict:
    """Returns the schema of summarized training columns, logging each type.

    Args:
        summaries: a `table_typing.ColumnSummary` per column, in order.
        column_types: {column: type} overriding the inference.

    Returns:
        The `infer_schema` dict.
    """
    columns = []
    for summary in summaries:
        columns.append(
            table_typing.column_entry(summary, column_types.get(summary.name))
        )
        logging.info("Column %r: %s", summary.name, columns[-1]["type"])
    return {"columns": columns}


def infer_schema(
    train: pd.DataFrame,
    column_types: dict[str, str] | None = None,
    max_categories: int = MAX_CATEGORIES,
) -> dict:
    """Returns the schema of a training split: its columns' types and statistics.

    Args:
        train: the training split.
        column_types: {column: type} overriding the inference, a type from
            `table_typing.COLUMN_TYPES`.
        max_categories: the most categories a categorical column may have, an
            int of at least `MIN_CATEGORIES`.

    Returns:
        {"columns": [{"name", "type", "categories" (categorical), "mean" and
        "std" (real, positive and count; of the values, their log or log1p)}]},
        JSON-able.

    Raises:
        errors.UsageError: a column that cannot be modelled, an override of
            an unknown column or type, a bad `max_categories`; naming it.

    Example:

    ```python
    schema = tfvae.infer_schema(train_frame, column_types={"proline": "real"})
    [column["type"] for column in schema["columns"]]  # ["real", "count", ...]
    ```
    """
    column_types = dict(column_types or {})
    names = [str(c) for c in train.columns]
    check_max_categories(max_categories)
    check_column_types(names, column_types)
    summaries = [
        table_typing.ColumnSummary(name, max_categories).add(train[label])
        for name, label in zip(names, train.columns, strict=True)
    ]
    return schema_of(summaries, column_types)


def read_table(
    source,
    test_fraction: float = TEST_FRACTION,
    seed: int = 0,
    column_types: dict[str, str] | None = None,
    max_categories: int = MAX_CATEGORIES,
) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Reads a table, splits it, and types its columns from the training split.

    Args:
        source: a pandas DataFrame, a dict {column: array}, or a path: a CSV,
            Parquet, `.npy` (columns "0", "1", ...) or `.npz` file, or a
            folder holding `train.*` and `test.*` (then not split again).
        test_fraction: the share of a single table's rows held out as test.
        seed: seeds the split.
        column_types, max_categories: as `infer_schema`.

    Returns:
        (schema, train, test): the `infer_schema` dict and the two splits as
        DataFrames.

    Example:
        >>> x = np.linspace(-2.0, 3.0, 50)
        >>> schema, train, test = read_table({"x": x}, test_fraction=0.2, seed=0)
        >>> schema["columns"][0]["type"], len(train) + len(test)
        ('real', 50)
    """
    if not isinstance(source, pd.DataFrame | dict) and os.path.isdir(source):
        train, test = read_split_files(os.fspath(source))
    else:
        train, test = split_table(_as_frame(source), test_fraction, seed)
    train.columns = [str(c) for c in train.columns]
    test.columns = [str(c) for c in test.columns]
    return infer_schema(train, column_types, max_categories), train, test


def table_columns(frame: pd.DataFrame, schema: dict) -> dict[str, np.ndarray]:
    """Returns a DataFrame's columns in the form a table VAE takes.

    Numbers as float32 with NaN for missing cells; categories as strings
    with "" for missing cells. Columns the schema lacks are refused, as are
    extra ones.

    Returns:
        {column name: `[rows]` array}, in the schema's order.
    """
    names = [c["name"] for c in schema["columns"]]
    given = [str(c) for c in frame.columns]
    if sorted(given) != sorted(names):
        missing, extra = (
            sorted(set(names) - set(given)),
            sorted(set(given) - set(names)),
        )
        raise errors.UsageError(
            f"The table's columns must be the schema's. Missing: {missing}; "
            f"extra: {extra}"
        )
    frame = frame.set_axis(given, axis=1)
    arrays = {}
    for column in schema["columns"]:
        name, values = column["name"], frame[column["name"]]
        if column["type"] == "categorical":
            text = table_typing.category_cells(values)
            arrays[name] = text.to_numpy(dtype=object)
        else:
            numbers = table_typing.numbers(name, values, column["type"])
            arrays[name] = numbers.astype(np.float32)
    return arrays


def checked_labels(labels, rows: int) -> np.ndarray:
    """Returns `labels` `[rows]` (any values) as an array; refuses another shape.

    The one check of rows' labels (batches, evaluation, pictures).

    Example:
        >>> checked_labels([0, 2, 1], 3).tolist()
        [0, 2, 1]
    """
    labels = np.asarray(labels)
    if labels.shape != (rows,):
        raise errors.UsageError(
            f"labels must hold one value per row, [{rows}]. Received: labels of "
            f"shape {list(labels.shape)}"
        )
    return labels


def table_batches(
    frame: pd.DataFrame,
    schema: dict,
    batch_size: int,
    shuffle_seed: int | None = None,
    *,
    labels=None,
    first_epoch: int | None = None,
) -> tf.data.Dataset:
    """Returns a `tf.data.Dataset` of `frame`'s rows (`tfvae.table_rows`).

    Rows, float32 `[batch, columns]`, are made and checked once, here: a bad
    cell is refused before any training, and a step given rows runs XLA.

    Args:
        frame: a split of the table (e.g. from `read_table`).
        schema: the table's schema.
        batch_size: rows per batch.
        shuffle_seed: None gives every row once, in order, the last batch
            short (evaluation); a seed shuffles the rows for training.
        labels: `[rows]` labels: then batches are `(rows, labels [batch])`.
        first_epoch: None: a pass per epoch, as `fit(epochs=...)` makes,
            reshuffled by tf.data; an int: the endless stream of epochs from
            that one, each `len(frame) // batch_size` full batches permuted
            by (`shuffle_seed`, epoch), `data.shuffled_batches`'s (for
            `fit(steps_per_epoch=...)`, resumed runs, several replicas).

    Returns:
        The prefetched batches, for `VAE.fit`, `evaluate`, `evaluate_table`.

    Raises:
        errors.UsageError: labels not one per row; `first_epoch` without a
            `shuffle_seed` or with a batch larger than the frame.
        tf.errors.InvalidArgumentError: a cell outside its column, named.

    Example:
        >>> batches = table_batches(train, schema, 32, shuffle_seed=0)  # doctest: +SKIP
    """
    rows = table_rows.RowObserver(schema)(table_columns(frame, schema)).numpy()
    if labels is not None:
        rows = (rows, checked_labels(labels, len(frame)))
    if first_epoch is not None:  # data.shuffled_batches refuses too big a batch.
        if shuffle_seed is None:
            raise errors.UsageError(f"{first_epoch=} needs a shuffle_seed")
        return data.shuffled_batches(rows, batch_size, shuffle_seed, first_epoch)
    tensors = tf.nest.map_structure(tf.constant, rows)
    order = tf.data.Dataset.range(len(frame))
    if shuffle_seed is not None:
        # Row numbers, not rows (moving every cell one row at a time cost
        # more than a step). A pass does not know its epoch: tf.data reshuffles.
        order = order.shuffle(len(frame), seed=shuffle_seed)
    return data.prefetched(
        order.batch(batch_size).map(
            lambda index: tf.nest.map_structure(lambda a: tf.gather(a, index), tensors)
        )
    )
