"""Table files: each format tfvae reads, whole or in chunks, typed alike.

`READERS` reads a CSV, Parquet, `.npy` (columns "0", "1", ...) or `.npz` file
whole with pandas (for `tables.read_file`); `chunks` reads a CSV or Parquet
file chunk by chunk with pyarrow (for `tfvae.table_streaming`). Both take
the same cells as missing (`MISSING_CELLS`), so a column gets one type
either way.

Example:

    frame = READERS[".csv"]("wine.csv")
    for chunk in chunks("big.parquet"):
        ...
"""

import os
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from tfvae import errors

# The CSV cells that are missing: pandas' default markers (pyarrow's lack
# "None" and "<NA>": `1, None, 3` was numbers whole, strings in chunks).
MISSING_CELLS = (
    *("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan"),
    *("1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a"),
    *("nan", "null"),
)
# The formats `chunks` reads.
STREAMED_SUFFIXES = (".csv", ".parquet")
# A chunk: the rows of a Parquet batch, the bytes of a CSV block.
PARQUET_ROWS = 65_536
CSV_READ = pa_csv.ReadOptions(block_size=8 * 2**20)


def suffix(path: str) -> str:
    """Returns a file's suffix, lower case (".csv")."""
    return os.path.splitext(path)[1].lower()


def _load_arrays(path: str) -> pd.DataFrame:
    """Returns a `.npy` or `.npz` file's table; refuses object arrays, which
    only pickle (running the file's code) loads."""
    try:
        if suffix(path) == ".npy":
            return pd.DataFrame(np.load(path)).rename(columns=str)
        with np.load(path) as arrays:
            return pd.DataFrame({name: arrays[name] for name in arrays.files})
    except ValueError as error:
        if "allow_pickle" not in str(error):
            raise
        raise errors.UsageError(
            f"{path} holds an object array, which tfvae does not load (it needs "
            "pickle, which can run code): save strings as np.str_ arrays "
            "(np.asarray(cells, dtype=str)) and numbers as float arrays, or "
            "write the table as CSV or Parquet"
        ) from None


# The whole-file reader of each suffix tfvae reads.
READERS = {
    ".csv": lambda path: pd.read_csv(
        path, na_values=list(MISSING_CELLS), keep_default_na=False
    ),
    ".parquet": pd.read_parquet,
    ".npy": _load_arrays,
    ".npz": _load_arrays,
}


def _csv_options(path: str) -> pa_csv.ConvertOptions:
    """Returns how to convert a CSV's cells: pyarrow types the columns from the
    first block, so whole numbers read as floats (a later block may have a
    fraction) and a column empty there as numbers (pandas' typing)."""
    missing = {"null_values": list(MISSING_CELLS), "strings_can_be_null": True}
    first = pa_csv.ConvertOptions(**missing)
    with pa_csv.open_csv(path, CSV_READ, convert_options=first) as reader:
        schema = reader.schema
    widened = {
        f.name: pa.float64()
        for f in schema
        if pa.types.is_integer(f.type) or pa.types.is_null(f.type)
    }
    return pa_csv.ConvertOptions(column_types=widened, **missing)


def chunks(path: str) -> Iterator[pd.DataFrame]:
    """Yields a CSV or Parquet file's rows in order, a chunk at a time.

    Args:
        path: the file.

    Returns:
        An iterator of DataFrames (column names as strings): `PARQUET_ROWS`
        rows of Parquet, a `CSV_READ` block of CSV.

    Raises:
        errors.UsageError: a file pyarrow cannot read chunk by chunk (a
            column's cells changing type after the first block), naming it.

    Example:
        >>> rows = sum(len(c) for c in chunks("big.csv"))  # doctest: +SKIP
    """
    try:
        if suffix(path) == ".parquet":
            # Not pre-buffered: pyarrow would read ahead the column chunks of
            # every row group (memory grew with the file: 300 MB of pool for a
            # 200 MB table, against one row group's 100 MB without).
            parquet = pq.ParquetFile(path, pre_buffer=False)
            batches = parquet.iter_batches(batch_size=PARQUET_ROWS)
        else:
            batches = pa_csv.open_csv(
                path, read_options=CSV_READ, convert_options=_csv_options(path)
            )
        for batch in batches:
            chunk = batch.to_pandas()
            chunk.columns = [str(c) for c in chunk.columns]
            yield chunk
    except (pa.ArrowInvalid, OSError) as error:
        raise errors.UsageError(
            f"{path} cannot be read in chunks: {error}. Fix the cell it names (a "
            "column's cells must keep one type all through the file), or "
            "convert the table to Parquet"
        ) from error


def column_names(path: str) -> list[str]:
    """Returns a CSV or Parquet file's column names, reading no cells."""
    if suffix(path) == ".parquet":
        return [str(n) for n in pq.ParquetFile(path).schema_arrow.names]
    with pa_csv.open_csv(path) as reader:
        return [str(n) for n in reader.schema.names]
