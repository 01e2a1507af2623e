"""Tables: reading one, typing its columns, and the schema a table VAE is made from.

`read_table(source)` reads a pandas DataFrame, a dict of arrays or a path (CSV,
Parquet, `.npy`/`.npz`, or a folder holding `train.*` and `test.*`) with
pandas and pyarrow, splits a single table into train and test by
`test_fraction` and `seed`, and types each column from the training split:

    real         floats                                   -> Gaussian
    positive     floats > 0, more symmetric on a log scale -> log-normal
    count        integers >= 0                            -> negative binomial
    binary       numbers 0 and 1 only, or booleans        -> Bernoulli
    categorical  strings (at most `max_categories`)       -> categorical

`column_types={"name": "type"}` overrides the inference. Columns that cannot
be modelled (free text, dates, too many categories, a constant column, an
all-missing one) are refused before any work, naming the column and the fix.
The schema is a JSON-able dict (each column's name, type, categories and the
training split's statistics) that the likelihood (`tfvae.table_likelihood`)
standardizes with; `table_batches` turns a DataFrame into the batches a table
VAE takes: a dict {column: tensor}, float32 for numbers (NaN is missing) and
strings for categories ("" is missing).

Example:

    schema, train, test = read_table("wine.csv", test_fraction=0.2, seed=0)
    dataset = table_batches(train, schema, batch_size=32, shuffle_seed=0)
"""

import os

import numpy as np
import pandas as pd
import tensorflow as tf
from absl import logging

from tfvae import errors

# The column types, in the order the inference tries them.
COLUMN_TYPES = ("binary", "count", "positive", "real", "categorical")
# The most categories a column may have by default.
MAX_CATEGORIES = 50
# The file types `read_table` reads, by suffix.
_READERS = {
    ".csv": pd.read_csv,
    ".parquet": pd.read_parquet,
    ".npy": lambda path: pd.DataFrame(np.load(path)).rename(columns=str),
    ".npz": lambda path: pd.DataFrame(dict(np.load(path))),
}
# The split's fraction must leave rows on both sides.
_MIN_ROWS = 2


def _read_file(path: str) -> pd.DataFrame:
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in _READERS:
        raise errors.UsageError(
            f"{path} is not a table tfvae reads: give a {', '.join(_READERS)} file "
            "or a folder holding train.* and test.*"
        )
    return _READERS[suffix](path)


def _split_files(folder: str) -> tuple[pd.DataFrame, pd.DataFrame]:
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
        found[split] = _read_file(os.path.join(folder, names[0]))
    return found["train"], found["test"]


def _as_frame(source) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        return source.reset_index(drop=True)
    if isinstance(source, dict):
        return pd.DataFrame({str(k): np.asarray(v) for k, v in source.items()})
    return _read_file(os.fspath(source))


def split_table(
    frame: pd.DataFrame, test_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Returns (train, test): a random `test_fraction` of the rows is the test split.

    The rows are permuted by NumPy's generator seeded with `seed`, so the
    split depends on the seed and the number of rows only.
    """
    if not 0 < test_fraction < 1:
        raise errors.UsageError(
            f"test_fraction must be between 0 and 1. Received: {test_fraction=}"
        )
    rows = len(frame)
    test_rows = round(rows * test_fraction)
    if test_rows < 1 or rows - test_rows < _MIN_ROWS:
        raise errors.UsageError(
            f"A table of {rows} rows split with test_fraction={test_fraction} "
            "leaves a split (almost) empty: give more rows or another fraction"
        )
    order = np.random.default_rng(seed).permutation(rows)
    test, train = order[:test_rows], order[test_rows:]
    return (
        frame.iloc[np.sort(train)].reset_index(drop=True),
        frame.iloc[np.sort(test)].reset_index(drop=True),
    )


def _skew(values: np.ndarray) -> float:
    centred = values - values.mean()
    spread = centred.std()
    return float(np.mean(centred**3) / spread**3) if spread > 0 else 0.0


def _infer(name: str, column: pd.Series, max_categories: int) -> str:
    """Returns the type of one training column, or refuses it naming the fix."""
    present = column.dropna()
    override = f"or give it a type with column_types={{{name!r}: ...}}"
    if pd.api.types.is_datetime64_any_dtype(column):
        raise errors.UsageError(
            f"Column {name!r} holds dates, which tfvae does not model: drop it or "
            "turn it into numbers (e.g. days since a date, day of the week)"
        )
    if present.nunique() == 1:
        raise errors.UsageError(
            f"Column {name!r} is constant ({present.iloc[0]!r}) in the training "
            "split, so there is nothing to model: drop it"
        )
    if pd.api.types.is_bool_dtype(present):
        return "binary"
    if pd.api.types.is_numeric_dtype(present):
        values = present.to_numpy(np.float64)
        if set(np.unique(values)) <= {0.0, 1.0}:
            return "binary"
        if np.all(values >= 0) and np.all(values == np.round(values)):
            return "count"
        if np.all(values > 0) and abs(_skew(np.log(values))) < abs(_skew(values)):
            return "positive"
        return "real"
    text = present.astype(str)
    if text.nunique() <= max_categories:
        return "categorical"
    dates = pd.to_datetime(text.head(100), errors="coerce", format="mixed")
    if dates.notna().all():
        raise errors.UsageError(
            f"Column {name!r} holds dates, which tfvae does not model: drop it or "
            "turn it into numbers (e.g. days since a date, day of the week)"
        )
    raise errors.UsageError(
        f"Column {name!r} has {text.nunique()} distinct values, more than "
        f"max_categories={max_categories}: free text or an identifier cannot be "
        f"modelled. Drop it, raise max_categories, {override}"
    )


def _numbers(name: str, column: pd.Series, kind: str) -> np.ndarray:
    values = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
    bad = column.notna().to_numpy() & np.isnan(values)
    if bad.any():
        raise errors.UsageError(
            f"Column {name!r} is {kind} but holds {column[bad].iloc[0]!r}, not a "
            "number: fix the cell, or type the column categorical"
        )
    return values


def _column(name: str, column: pd.Series, kind: str, max_categories: int) -> dict:
    """Returns one column's schema entry, checking its training values fit `kind`."""
    entry = {"name": name, "type": kind}
    if kind == "categorical":
        categories = sorted(column.dropna().astype(str).unique().tolist())
        if len(categories) > max_categories:
            raise errors.UsageError(
                f"Column {name!r} has {len(categories)} categories, more than "
                f"max_categories={max_categories}: raise max_categories or drop it"
            )
        return {**entry, "categories": categories}
    values = _numbers(name, column, kind)
    values = values[~np.isnan(values)]
    rule = {
        "binary": (np.isin(values, (0, 1)), "0 or 1"),
        "count": ((values >= 0) & (values == np.round(values)), "integers >= 0"),
        "positive": (values > 0, "above 0"),
        "real": (np.isfinite(values), "finite"),
    }
    fits, wanted = rule[kind]
    if not fits.all():
        raise errors.UsageError(
            f"Column {name!r} is typed {kind}, whose values are {wanted}, but "
            f"holds {values[~fits][0]!r}: fix the data or give it another type"
        )
    # The scale the model standardizes on (`table_likelihood`): the values,
    # their logarithm (positive) or log1p (count).
    scaled = {"positive": np.log, "count": np.log1p}.get(kind, lambda v: v)(values)
    if kind != "binary":
        entry.update(mean=float(scaled.mean()), std=float(scaled.std()) or 1.0)
    return entry


def infer_schema(
    train: pd.DataFrame,
    column_types: dict[str, str] | None = None,
    max_categories: int = MAX_CATEGORIES,
) -> dict:
    """Returns the schema of a training split: its columns' types and statistics.

    Args:
        train: the training split.
        column_types: {column: type} overriding the inference, a type from
            `COLUMN_TYPES`.
        max_categories: the most categories a categorical column may have.

    Returns:
        {"columns": [{"name", "type", "categories" (categorical), "mean" and
        "std" (real, positive and count; of the values, their log or log1p)}]},
        JSON-able.

    Raises:
        errors.UsageError: a column that cannot be modelled, or an override
            naming an unknown column or type; naming the column and the fix.

    Example:

    ```python
    schema = tfvae.infer_schema(train_frame, column_types={"proline": "real"})
    [column["type"] for column in schema["columns"]]  # ["real", "count", ...]
    ```
    """
    column_types = dict(column_types or {})
    names = [str(c) for c in train.columns]
    if len(set(names)) != len(names):
        raise errors.UsageError(f"Column names must be unique. Received: {names}")
    for name, kind in column_types.items():
        if name not in names:
            raise errors.UsageError(
                f"column_types names {name!r}, which is not a column. The columns "
                f"are: {', '.join(names)}"
            )
        if kind not in COLUMN_TYPES:
            raise errors.UsageError(
                f"Column {name!r}'s type must be one of {', '.join(COLUMN_TYPES)}. "
                f"Received: {kind!r}"
            )
    columns = []
    for name, label in zip(names, train.columns, strict=True):
        column = train[label]
        # Before any type, inferred or given: nothing to model or infer from.
        if column.dropna().empty:
            raise errors.UsageError(
                f"Column {name!r} is entirely missing in the training split: drop it"
            )
        kind = column_types.get(name) or _infer(name, column, max_categories)
        columns.append(_column(name, column, kind, max_categories))
        logging.info("Column %r: %s", name, kind)
    return {"columns": columns}


def read_table(
    source,
    test_fraction: float = 0.2,
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
        >>> schema, train, test = read_table({"x": [0.5, 1.5, -2.0, 3.0, 1.0]})
        >>> schema["columns"][0]["type"], len(train), len(test)
        ('real', 4, 1)
    """
    if not isinstance(source, pd.DataFrame | dict) and os.path.isdir(source):
        train, test = _split_files(os.fspath(source))
        if list(train.columns) != list(test.columns):
            raise errors.UsageError(
                f"{source}'s train and test tables must have the same columns. "
                f"Received: {list(train.columns)} and {list(test.columns)}"
            )
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
            text = values.astype(str).where(values.notna(), "")
            arrays[name] = text.to_numpy(dtype=object)
        else:
            arrays[name] = _numbers(name, values, column["type"]).astype(np.float32)
    return arrays


def table_batches(
    frame: pd.DataFrame,
    schema: dict,
    batch_size: int,
    shuffle_seed: int | None = None,
):
    """Returns a `tf.data.Dataset` of batches {column: `[batch]` tensor} of `frame`.

    Args:
        frame: a split of the table (e.g. from `read_table`).
        schema: the table's schema.
        batch_size: rows per batch (the last batch may hold fewer).
        shuffle_seed: None keeps the rows' order; a seed shuffles them anew
            each epoch (for training).

    Returns:
        The batched dataset, for `VAE.fit`, `evaluate` and `evaluate_table`.

    Example:

    ```python
    schema, train, test = tfvae.read_table("../shared/datasets/tabular/wine.csv")
    vae.fit(tfvae.table_batches(train, schema, 32, shuffle_seed=0), epochs=100)
    ```
    """
    dataset = tf.data.Dataset.from_tensor_slices(table_columns(frame, schema))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(frame), seed=shuffle_seed)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
