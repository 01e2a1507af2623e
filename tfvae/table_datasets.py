"""A TFDS dataset of scalar features as a table: `--dataset=wine_quality/red`.

A TFDS dataset whose every feature (nested `FeaturesDict`s flattened) is a
scalar number, string, `Text` or `ClassLabel`, or a fixed-length 1-D vector
of numbers, is a table (`is_table_dataset`); `tfvae.train --dataset=NAME`
then trains on it as on `--table=PATH` (`tfvae.table_training`), with the
same flags. Which it is, the builder's metadata says: `Config.table_run`
asks `dataset_is_table` (once per process and dataset), the one place that
decides between the image and the table path.

Its splits are read whole with TFDS and tf.data (`read_split`), into the
columns `tfds.as_dataframe` would make (nested names joined by "/", such as
`features/alcohol`; a vector's elements as `name/0`, `name/1`, ...), with
strings decoded to `str`, "" as a missing cell, and a `ClassLabel`'s classes
as its names, so categories serve as words. A dataset with a `train` and a
`test` split keeps them; one with only `train` (wine_quality, titanic,
higgs) is split by `--test_fraction` and `--seed`, as a single table file.
split.json records the dataset's full name (name, config and version) and
its splits' rows instead of a file's sha256 (`read_dataset`), so a resumed
run refuses another version. A dataset larger than `--memory_budget` is
refused, naming the fix (a Parquet file through `--table` streams); TFDS's
own stand-ins for a missing number (such as titanic's -1) are values here.

Example:

    train, test, split = read_dataset("wine_quality/red", None, None, "25%")
    # test is None: only a train split, which the run divides by --test_fraction.
"""

import functools
import math

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds
from absl import logging

from tfvae import data, errors, streaming, table_streaming, tfds_sources
from tfvae.splits import TEST_SPLIT, TRAIN_SPLIT

# A text cell's bytes in memory, about (a short Python str and its pointer),
# in the estimate of a dataset's size against --memory_budget.
_TEXT_BYTES = 64


def _leaves(features, path=()):
    """Yields (path, feature) for every leaf of nested `FeaturesDict`s, in
    TFDS's (sorted) order, the order of `tfds.as_dataframe`'s columns."""
    for name in sorted(features.keys()):
        feature = features[name]
        if isinstance(feature, tfds.features.FeaturesDict):
            yield from _leaves(feature, (*path, name))
        else:
            yield (*path, name), feature


def _leaf_problem(feature) -> str | None:
    """Returns why one feature is not a table's column (or columns), or None."""
    if isinstance(feature, (tfds.features.ClassLabel, tfds.features.Text)):
        return None if feature.shape == () else f"{feature!r} is not a scalar"
    if type(feature) not in (tfds.features.Tensor, tfds.features.Scalar):
        return f"{type(feature).__name__} is not a scalar or a fixed-length vector"
    if feature.shape == ():
        return None
    if len(feature.shape) == 1 and feature.shape[0] is not None:
        if np.dtype(feature.np_dtype).kind in "biuf":
            return None
        return f"{feature!r} is a vector of {feature.np_dtype}, not of numbers"
    return f"{feature!r} has a variable or multi-dimensional shape"


def feature_problem(builder: tfds.core.DatasetBuilder) -> str | None:
    """Returns why a TFDS dataset is not a table, naming the feature, or None.

    Args:
        builder: the dataset's TFDS builder (its metadata only is read).

    Returns:
        None if every leaf feature is a scalar `Tensor`, `ClassLabel` or
        `Text`, or a fixed-length 1-D numeric `Tensor`; else which feature is
        not, and why.

    Example:
        >>> feature_problem(tfds.builder("mnist"))
        "the feature 'image' (Image) is not a scalar or a fixed-length vector"
    """
    leaves = list(_leaves(builder.info.features or {}))
    if not leaves:
        return "it has no features"
    for path, feature in leaves:
        problem = _leaf_problem(feature)
        if problem:
            return f"the feature {'/'.join(path)!r} ({problem})"
    return None


def is_table_dataset(builder: tfds.core.DatasetBuilder) -> bool:
    """Returns whether a TFDS dataset trains as a table (`feature_problem`).

    Example:
        >>> is_table_dataset(tfds.builder("wine_quality/red"))
        True
    """
    return feature_problem(builder) is None


@functools.cache
def dataset_is_table(name: str, data_dir: str | None) -> bool:
    """Returns whether `--dataset=name` is a table; reads metadata, once per
    process and (name, data_dir).

    Args:
        name: `--dataset`, a TFDS name (with its config and version, if any).
        data_dir: `--data_dir` (None: TFDS's default).

    Returns:
        True for a table (`is_table_dataset`); False for a dataset with an
        `image` feature, and for an unknown name (the image path's
        `data.load_builder` names that problem).

    Raises:
        errors.UsageError: a dataset that is neither, naming the feature.

    Example:
        >>> dataset_is_table("mnist", None)
        False
    """
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except (tfds.core.registered.DatasetNotFoundError, ValueError, AssertionError):
        return False
    features = builder.info.features or {}
    if "image" in features and isinstance(features["image"], tfds.features.Image):
        return False
    problem = feature_problem(builder)
    if problem:
        raise errors.UsageError(
            f"--dataset={name} is neither an image dataset (it has no 'image' "
            f"feature) nor a table: {problem}. tfvae trains TFDS datasets whose "
            "every feature is a scalar or a fixed-length vector as tables; write "
            "the columns you want to a CSV or Parquet file and pass --table=FILE."
        )
    return True


def _column(feature, values: np.ndarray) -> np.ndarray:
    """Returns one leaf's cells as a table's: class names, str, or numbers."""
    if isinstance(feature, tfds.features.ClassLabel):
        return np.asarray(feature.names, object)[values]
    if values.dtype.kind in "SO":
        # "" is a missing cell, as an empty cell of a CSV file.
        return np.array([v.decode("utf-8") or None for v in values], object)
    return values


def read_split(builder: tfds.core.DatasetBuilder, split: str) -> pd.DataFrame:
    """Returns a prepared TFDS table's split as a DataFrame, in TFDS's order.

    Read whole (`as_dataset(batch_size=-1)`), not row by row as
    `tfds.as_dataframe` does, with its column names.

    Args:
        builder: a prepared TFDS builder that `is_table_dataset`.
        split: a split name ("train", "test").

    Returns:
        One column per scalar feature, named by its path ("features/alcohol");
        a vector feature `v` of length n gives columns "v/0" .. "v/{n-1}".
        Strings decode to `str` ("" becomes missing), a `ClassLabel` to its
        class names; numbers keep their dtype.

    Raises:
        errors.UsageError: the split's files are damaged, naming the fix.

    Example:
        >>> read_split(tfds.builder("iris"), "train").columns[:2].tolist()
        ['features/0', 'features/1']
    """
    with data.reading(builder, split):
        whole = tfds.as_numpy(
            builder.as_dataset(split=split, batch_size=-1, shuffle_files=False)
        )
    columns = {}
    for path, feature in _leaves(builder.info.features):
        values = functools.reduce(lambda tree, key: tree[key], path, whole)
        name = "/".join(path)
        if values.ndim == 2:
            columns.update(
                {f"{name}/{i}": values[:, i] for i in range(values.shape[1])}
            )
        else:
            columns[name] = _column(feature, values)
    return pd.DataFrame(columns)


def _row_bytes(builder: tfds.core.DatasetBuilder) -> int:
    """Returns about the bytes of one row in memory (text cells: _TEXT_BYTES)."""
    size = 0
    for _, feature in _leaves(builder.info.features):
        dtype = np.dtype(feature.np_dtype)
        if dtype.kind in "SOU":
            size += _TEXT_BYTES
        else:  # A class name is one of few shared strings: a pointer.
            size += dtype.itemsize * math.prod(feature.shape)
    return size


def _check_fits(builder, name: str, splits: list[str], memory_budget: str) -> None:
    """Refuses a dataset whose splits would not fit `--memory_budget`; logs it."""
    rows = sum(builder.info.splits[split].num_examples for split in splits)
    # Read whole as a table file is: its batches and copies included.
    needed = table_streaming.READ_FACTOR * rows * _row_bytes(builder)
    budget = streaming.memory_budget_bytes(memory_budget)
    if needed > budget:
        raise errors.UsageError(
            f"--dataset={name} takes about {needed / 2**20:.0f} MB in memory ("
            f"{rows} rows), more than --memory_budget={memory_budget} allows "
            f"({budget / 2**20:.0f} MB), and a TFDS table is read whole. Raise "
            "--memory_budget, or write it to a Parquet file (e.g. with "
            "pyarrow.parquet.ParquetWriter over tfds.as_numpy(ds.batch(100_000)))"
            " and pass --table=FILE, which streams past the budget."
        )
    logging.info(
        "Table input: --dataset=%s in memory (about %.1f MB; --memory_budget=%s "
        "allows %.1f MB).",
        name,
        needed / 2**20,
        memory_budget,
        budget / 2**20,
    )


def read_dataset(
    name: str,
    data_dir: str | None,
    manual_dir: str | None,
    memory_budget: str,
    recorded: dict | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None, dict]:
    """Prepares a TFDS table if needed and reads its splits; checks a resume.

    Args:
        name: `--dataset` (a table: `dataset_is_table`).
        data_dir, manual_dir: `--data_dir`, `--manual_dir` (`data.prepare_builder`).
        memory_budget: `--memory_budget`; a larger dataset is refused.
        recorded: a resumed run's split.json, or None.

    Returns:
        (train, test, split): the `train` split's rows, the `test` split's
        (None if the dataset has none: the caller divides train by the
        split rule), and split.json's dict so far: {"tfds": the full name
        "wine_quality/red/1.0.0", "splits": {split: rows}, "rows": None,
        "test_rows": None}.

    Raises:
        errors.UsageError: another dataset or version than `recorded`'s
            (checked before preparing), a `manual_dir` TFDS would not read,
            one without a train split, one past the budget, what
            `data.prepare_builder` refuses; naming the fix.

    Example:
        >>> train, test, split = read_dataset("iris", None, None, "25%")
        >>> split["tfds"], test is None
        ('iris/2.1.0', True)
    """
    builder = tfds.builder(name, data_dir=data_dir)
    full_name = builder.info.full_name
    if recorded is not None and recorded.get("tfds") != full_name:
        raise errors.UsageError(
            f"--dataset={name} is {full_name} (in {builder.data_dir}), and this "
            f"run began with {recorded.get('tfds')} (split.json): its split and "
            "schema would not fit. Train on it in a new --model_dir, or resume "
            "with the run's version (the TFDS release and --data_dir it used)."
        )
    manual = (
        tfds_sources.expected_manual_files(builder)
        or builder.MANUAL_DOWNLOAD_INSTRUCTIONS
    )
    if manual_dir and not manual and not builder.is_prepared():
        # TFDS would ignore the folder, and download.
        raise errors.UsageError(
            f"--manual_dir={manual_dir} cannot build --dataset={name}: TFDS "
            "registers no files for it, so it downloads them itself. Remove "
            "--manual_dir and run once with a network (--data_dir keeps the "
            "dataset), or write the table to a CSV or Parquet file for --table."
        )
    data.prepare_builder(builder, name, data_dir, manual_dir)
    available = builder.info.splits
    if TRAIN_SPLIT not in available:
        raise errors.UsageError(
            f"--dataset={name} has no {TRAIN_SPLIT!r} split (it has "
            f"{sorted(available)}); a table trains on 'train' and tests on 'test' "
            "or, without one, on a share of 'train' (--test_fraction)."
        )
    splits = [TRAIN_SPLIT, *([TEST_SPLIT] if TEST_SPLIT in available else [])]
    rows = {split: available[split].num_examples for split in splits}
    if recorded is not None and recorded.get("splits") != rows:
        raise errors.UsageError(
            f"--dataset={name} ({full_name}) now has the rows {rows}, and this "
            f"run's split.json records {recorded.get('splits')}: it was prepared "
            "anew with other data. Train on it in a new --model_dir."
        )
    _check_fits(builder, name, splits, memory_budget)
    frames = [read_split(builder, split) for split in splits]
    split = {"tfds": full_name, "splits": rows, "rows": None, "test_rows": None}
    return frames[0], frames[1] if len(frames) == 2 else None, split
