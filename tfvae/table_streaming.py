"""Tables larger than memory: split, typed and batched chunk by chunk, never whole.

`table_fits` says whether a table (a CSV or Parquet file, or a folder holding
`train.*` and `test.*`) fits `--memory_budget` (`tfvae.streaming`'s rule of
the budget); one that does not is read by `streamed_table` in chunks
(`table_files.chunks`, pyarrow's):

- one pass splits the rows by `tables.test_rows` (drawn in file order: the
  split in memory) and types the training columns by `tfvae.table_typing`'s
  rules, chunk by chunk (the schema in memory); a bad table is refused after
  this pass, before any training, naming the column or file;
- `StreamedTable.train_batches` reads the file again each epoch and permutes
  each block of `shuffle_buffer` consecutive training rows with a seed of
  (seed, epoch, block), in full batches: memory holds a block and a chunk,
  not the table, and a seed gives the same batches, also from a resumed epoch;
- `StreamedTable.test_batches` gives the test split once, in file order.
  Batches are rows float32 `[batch, columns]`, as `tables.table_batches`'s.

Example:

    if not table_fits("big.parquet", "25%"):
        table = streamed_table("big.parquet", test_fraction=0.2, seed=0)
        vae = tfvae.build_table_vae(table.schema)
        vae.fit(table.train_batches(256, seed=0), epochs=10,
                steps_per_epoch=table.steps_per_epoch(256))
"""

import dataclasses
import math
import os
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import tensorflow as tf
from absl import logging

from tfvae import (
    data,
    errors,
    streaming,
    table_files,
    table_rows,
    table_typing,
    tables,
)

# The test split is handed to tf.data in blocks of about this many rows.
_TEST_BLOCK = 8192
# Reading a table whole and making its batches peaks at about this many
# times its cells' bytes as a DataFrame (`table_bytes`).
READ_FACTOR = 4


def _files(path: str) -> dict[str, str]:
    """Returns {"train": file} for one table, or {"train", "test"} for a folder."""
    paths = tables.split_paths(path) if os.path.isdir(path) else {"train": path}
    for file in paths.values():
        if not os.path.isfile(file):
            raise errors.UsageError(f"No table at {file}: give a CSV or Parquet file")
        if table_files.suffix(file) not in table_files.STREAMED_SUFFIXES:
            raise errors.UsageError(
                f"{file} is larger than the memory budget, and only CSV and Parquet "
                "tables are read in chunks: convert it to Parquet, or raise "
                "--memory_budget to read it whole"
            )
    return paths


def _file_bytes(path: str) -> int:
    """Returns about the bytes of a table file's cells as a DataFrame: its first
    chunk's (pandas' deep memory usage), per row, times its rows."""
    if table_files.suffix(path) not in table_files.STREAMED_SUFFIXES:
        return os.path.getsize(path)  # .npy, .npz: the arrays, raw.
    first = next(table_files.chunks(path), None)
    if first is None or not len(first):
        return 0
    per_row = first.memory_usage(deep=True, index=False).sum() / len(first)
    if table_files.suffix(path) == ".parquet":
        rows = pq.ParquetFile(path).metadata.num_rows
    else:
        size = os.path.getsize(path)
        rows = len(first) * size / min(size, table_files.CSV_READ.block_size)
    return int(per_row * rows)


def table_bytes(path: str) -> int:
    """Returns about the bytes a table takes in memory, reading one chunk of it.

    Args:
        path: a table file, or a folder holding `train.*` and `test.*`.

    Returns:
        Its cells as a DataFrame: pandas' deep memory usage of the first
        chunk, per row, times the rows (a Parquet file's metadata's, or a
        CSV's size over its first chunk's). Reading it whole and making its
        batches takes about `READ_FACTOR` times this.
    """
    paths = tables.split_paths(path) if os.path.isdir(path) else {"train": path}
    return sum(_file_bytes(file) for file in paths.values())


def table_fits(path: str, memory_budget: str) -> bool:
    """Returns whether `tables.read_table` may read a table whole; logs why.

    Args:
        path: a table file, or a folder holding `train.*` and `test.*`.
        memory_budget: `--memory_budget`'s value ("25%", "512MB", "0").

    Returns:
        True if `READ_FACTOR * table_bytes(path)` is within the budget; else
        the table is streamed (`streamed_table`).

    Raises:
        errors.UsageError: a table over the budget that cannot be streamed
            (`.npy`, `.npz`), or a budget holding in memory more than this
            machine has; naming the fix.

    Example:
        >>> table_fits("../shared/datasets/tabular/wine.csv", "25%")  # doctest: +SKIP
        True
    """
    needed = READ_FACTOR * table_bytes(path)
    budget = streaming.memory_budget_bytes(memory_budget)
    fits = needed <= budget
    if fits:
        streaming.check_in_memory(needed, memory_budget, "the table, read whole,")
    else:
        _files(path)  # Refuses what cannot be streamed.
    logging.info(
        "Table input: %s (reading it whole takes about %.1f MB; "
        "--memory_budget=%s allows %.1f MB).",
        "in memory" if fits else "streamed in chunks",
        needed / 2**20,
        memory_budget,
        budget / 2**20,
    )
    return fits


@dataclasses.dataclass(frozen=True)
class StreamedTable:
    """A table read in chunks: its schema, split sizes and batches.

    Attributes:
        schema: the training split's schema, as `tables.infer_schema`'s.
        num_train, num_test: the rows of each split.
        files: {"train": file} for a table split by the rule, or {"train":
            file, "test": file} for a folder's `train.*` and `test.*`.
        test_fraction, split_seed: the rule's fraction and seed (unused for
            a folder).
    """

    schema: dict
    num_train: int
    num_test: int
    files: dict
    test_fraction: float
    split_seed: int

    def split_chunks(self, split: str) -> Iterator[pd.DataFrame]:
        """Yields the rows of `split` ("train" or "test") in file order, by chunk:
        a folder's from its own file only."""
        chunks = _split_chunks(self.files, self.test_fraction, self.split_seed, split)
        for _, chunk in chunks:
            if len(chunk):
                yield chunk

    def _columns(self, split: str) -> Iterator[dict[str, np.ndarray]]:
        for chunk in self.split_chunks(split):
            yield tables.table_columns(chunk, self.schema)

    def _batches(self, blocks, args, batch_size: int, only_full: bool):
        """Returns the batches of rows of the blocks `blocks(*args)` yields:
        Python hands tf.data whole blocks (converting cells costs per call),
        observed as rows (`table_rows.RowObserver`, which checks them) and
        cut there (into full batches only if `only_full`)."""
        spec = {
            c["name"]: tf.TensorSpec(
                [None], tf.string if c["type"] == "categorical" else tf.float32
            )
            for c in self.schema["columns"]
        }
        observe = table_rows.RowObserver(self.schema)
        return (
            tf.data.Dataset.from_generator(blocks, args=args, output_signature=spec)
            .map(observe)
            .flat_map(lambda rows: _batched(rows, batch_size, only_full))
        )

    def steps_per_epoch(self, batch_size: int) -> int:
        """Returns the full batches of an epoch: `num_train // batch_size`."""
        return self.num_train // batch_size

    def _blocks(self, epoch, seed, block):
        """Yields epoch `epoch`'s training rows: each block of `block` rows in
        file order, permuted by a generator seeded by (seed, epoch, block)."""
        blocks = _rebatch(self._columns("train"), int(block))
        for index, columns in enumerate(blocks):
            rng = np.random.default_rng([int(seed), int(epoch), index])
            order = rng.permutation(_rows(columns))
            yield {name: cells[order] for name, cells in columns.items()}

    def _test_blocks(self, block):
        yield from _rebatch(self._columns("test"), int(block))

    def train_batches(
        self,
        batch_size: int,
        seed: int,
        shuffle_buffer: int = 10_000,
        first_epoch: int = 0,
    ) -> tf.data.Dataset:
        """Returns the training rows, shuffled anew each epoch, epoch after epoch.

        Args:
            batch_size: rows per batch.
            seed: seeds the shuffle: epoch e's block b is permuted with a
                generator seeded by (seed, e, b).
            shuffle_buffer: the rows of a block: with a chunk, what memory holds.
            first_epoch: the epoch the stream starts at (a resumed run's).

        Returns:
            An endless `tf.data.Dataset` of rows float32 `[batch, columns]`; each
            epoch is `steps_per_epoch(batch_size)` full batches, every
            training row once but the `num_train % batch_size` the last
            block leaves over (as `data.shuffled_batches`): give `fit` that
            `steps_per_epoch`.
        """
        if shuffle_buffer < 1 or batch_size < 1:
            raise errors.UsageError(
                "batch_size and shuffle_buffer must be at least 1. Received: "
                f"{batch_size=}, {shuffle_buffer=}"
            )
        block = _block(batch_size, shuffle_buffer)
        epochs = tf.data.Dataset.range(first_epoch, tf.int64.max).flat_map(
            lambda e: self._batches(self._blocks, (e, seed, block), batch_size, True)
        )
        # flat_map hides that the stream is endless; say it, for tf.distribute.
        return data.prefetched(
            epochs.apply(
                tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY)
            )
        )

    def test_batches(self, batch_size: int) -> tf.data.Dataset:
        """Returns the test rows once, in file order, in batches of `batch_size`
        (the last one short): rows float32 `[batch, columns]`."""
        block = _block(batch_size, _TEST_BLOCK)
        batches = self._batches(self._test_blocks, (block,), batch_size, False)
        count = math.ceil(self.num_test / batch_size)
        return data.prefetched(
            batches.apply(tf.data.experimental.assert_cardinality(count))
        )


def _batched(rows: tf.Tensor, batch_size: int, only_full: bool) -> tf.data.Dataset:
    """Returns consecutive batches of `batch_size` of a block's rows `[n, columns]`:
    full ones only if `only_full`, else the last one short."""
    count = tf.shape(rows)[0]
    whole = count // batch_size * batch_size
    # Reshaped at once: slicing batch after batch cost more than the model.
    full = tf.data.Dataset.from_tensor_slices(
        tf.reshape(rows[:whole], [-1, batch_size, rows.shape[1]])
    )
    if only_full:
        return full
    rest = tf.data.Dataset.from_tensors(rows[whole:])
    return full.concatenate(rest.filter(lambda _: whole < count))


def _block(batch_size: int, rows: int) -> int:
    """Returns about `rows` rows, a multiple of the batch: only the last batch of
    a pass is short."""
    return max(batch_size, rows // batch_size * batch_size)


def _rows(columns: dict[str, np.ndarray]) -> int:
    return len(next(iter(columns.values())))


def _rebatch(parts, rows: int) -> Iterator[dict[str, np.ndarray]]:
    """Yields the rows of `parts` (column dicts) again in dicts of `rows` rows,
    in order, the last one short."""
    pending = []
    for part in parts:
        pending.append(part)
        joined = {k: np.concatenate([p[k] for p in pending]) for k in part}
        whole = _rows(joined) // rows * rows
        for start in range(0, whole, rows):
            yield {k: v[start : start + rows] for k, v in joined.items()}
        pending = [{k: v[whole:] for k, v in joined.items()}]
    if pending and _rows(pending[0]):
        yield pending[0]


def _split_chunks(
    files, test_fraction, seed, *splits: str
) -> Iterator[tuple[str, pd.DataFrame]]:
    """Yields (split, rows) by chunk, in file order, for each of `splits`
    ("train", "test"): each split's own file (the others' unread), or the rows
    `tables.test_rows` picks from one file."""
    if "test" in files:
        for split in splits:
            for chunk in table_files.chunks(files[split]):
                yield split, chunk
        return
    generator = np.random.default_rng(seed)
    for chunk in table_files.chunks(files["train"]):
        test = tables.test_rows(generator, len(chunk), test_fraction)
        for split, picked in (("train", ~test), ("test", test)):
            if split in splits:
                yield split, chunk[picked].reset_index(drop=True)


def streamed_table(
    path: str,
    test_fraction: float = tables.TEST_FRACTION,
    seed: int = 0,
    column_types: dict[str, str] | None = None,
    max_categories: int = tables.MAX_CATEGORIES,
) -> StreamedTable:
    """Splits and types a table larger than memory in one pass over its chunks.

    Args:
        path: a CSV or Parquet file (split by `test_fraction` and `seed`, as
            `tables.split_table` splits), or a folder holding `train.*` and
            `test.*`.
        test_fraction: each row's chance of being a test row.
        seed: seeds the split.
        column_types, max_categories: as `tables.infer_schema`'s.

    Returns:
        The `StreamedTable`: the same schema and split as `tables.read_table`
        gives in memory.

    Raises:
        errors.UsageError: a file that is not a CSV or Parquet table, folder
            files with other columns, an override naming an unknown column or
            type or a bad `max_categories` (before reading), a column that
            cannot be modelled or a split leaving a side empty (after the
            pass); naming the file or column and the fix.

    Example:

    ```python
    table = streamed_table("big.parquet", test_fraction=0.2, seed=0)
    table.schema["columns"][0]["type"], table.num_train  # ("real", 800123)
    ```
    """
    files = _files(os.fspath(path))
    names = {split: table_files.column_names(file) for split, file in files.items()}
    if "test" in names and names["test"] != names["train"]:
        raise errors.UsageError(
            f"{path}'s train and test tables must have the same columns. "
            f"Received: {names['train']} and {names['test']}"
        )
    column_types = dict(column_types or {})
    if "test" not in files:
        tables.check_test_fraction(test_fraction)
    tables.check_max_categories(max_categories)
    tables.check_column_types(names["train"], column_types)
    summaries = {
        n: table_typing.ColumnSummary(n, max_categories) for n in names["train"]
    }
    counts = {"train": 0, "test": 0}
    for split, chunk in _split_chunks(files, test_fraction, seed, "train", "test"):
        counts[split] += len(chunk)
        if split == "train":
            for name, summary in summaries.items():
                summary.add(chunk[name])
    if "test" not in files:
        tables.check_split(counts["train"], counts["test"], test_fraction)
    schema = tables.schema_of(list(summaries.values()), column_types)
    logging.info("Streamed %s: %d training, %d test rows.", path, *counts.values())
    return StreamedTable(schema, *counts.values(), files, test_fraction, seed)
