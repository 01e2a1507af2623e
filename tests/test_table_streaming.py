"""Tests for tfvae.table_streaming: a table read in chunks, as it is in memory."""

import os

import numpy as np
import pandas as pd
import pyarrow.csv as pa_csv
import pytest
import tensorflow as tf

from tfvae import errors, memory, table_files, table_streaming, tables


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of a few dozen rows, so that tiny tables span many of them."""
    monkeypatch.setattr(table_files, "PARQUET_ROWS", 37)
    monkeypatch.setattr(table_files, "CSV_READ", pa_csv.ReadOptions(block_size=2048))


def _frame(rows=500, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "id": np.arange(rows) + 0.5,
            "positive": np.exp(rng.normal(size=rows)),
            "count": rng.poisson(3.0, size=rows),
            "binary": rng.integers(0, 2, size=rows),
            "kind": rng.choice(["a", "b", "c"], size=rows),
            "code": rng.integers(1, 4, size=rows),
        }
    )
    frame.loc[::9, "positive"] = np.nan
    frame.loc[::11, "kind"] = None
    frame["code"] = frame["code"].astype("Int64")
    frame.loc[300, "code"] = None  # Whole numbers, floats in some chunks only.
    return frame


# Where the id column sits in a row.
ID = 0


def _write(frame, folder, suffix):
    path = folder / f"t{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, row_group_size=100)
    return str(path)


def _same_schema(streamed, in_memory):
    for a, b in zip(streamed["columns"], in_memory["columns"], strict=True):
        assert a.keys() == b.keys()
        for key, value in a.items():
            expected = pytest.approx(b[key]) if key in ("mean", "std") else b[key]
            assert value == expected, (a, b)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_same_split_schema_and_test_rows_as_in_memory(tmp_path, suffix):
    path = _write(_frame(), tmp_path, suffix)
    assert len(list(table_files.chunks(path))) > 3  # Typed across chunks.
    types = {"code": "categorical"}
    schema, train, test = tables.read_table(path, 0.3, seed=4, column_types=types)
    table = table_streaming.streamed_table(path, 0.3, seed=4, column_types=types)
    _same_schema(table.schema, schema)
    assert schema["columns"][-1]["categories"] == ["1", "2", "3"]
    assert (table.num_train, table.num_test) == (len(train), len(test))
    batches = list(table.test_batches(64).as_numpy_iterator())
    assert [len(b) for b in batches[:-1]] == [64] * (len(batches) - 1)
    # The rows in memory's: the same cells, observed alike.
    expected = next(iter(tables.table_batches(test, schema, len(test)))).numpy()
    np.testing.assert_array_equal(np.concatenate(batches), expected)


def _epochs(table, count, **kwargs):
    steps = table.steps_per_epoch(50)
    dataset = table.train_batches(50, **kwargs)
    # Endless, and says so (tf.distribute needs it).
    assert dataset.cardinality() == tf.data.INFINITE_CARDINALITY
    batches = iter(dataset)
    epochs = []
    for _ in range(count):
        epoch = [next(batches) for _ in range(steps)]
        assert all(len(b) == 50 for b in epoch)  # Full batches only.
        epochs.append(np.concatenate([b[:, ID].numpy() for b in epoch]))
    del batches  # Before the interpreter exits: a live generator can hang it.
    return epochs


def test_full_batches_of_distinct_rows_reshuffled_and_reproducible(tmp_path):
    path = _write(_frame(), tmp_path, ".parquet")
    _, train, _ = tables.read_table(path, 0.2, seed=1)
    table = table_streaming.streamed_table(path, 0.2, seed=1)
    assert table.steps_per_epoch(50) == len(train) // 50  # As in memory.
    first, second, third = _epochs(table, 3, seed=7, shuffle_buffer=120)
    ids = train["id"].to_numpy(np.float32)
    for epoch in (first, second, third):
        assert len(np.unique(epoch)) == len(train) // 50 * 50
        # Blocks of 100 rows: only the last block's remainder is left out.
        left_out = np.setdiff1d(ids, epoch)
        assert len(left_out) == len(train) % 50 and np.isin(left_out, ids[300:]).all()
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, np.sort(first))
    again = _epochs(table, 1, seed=7, shuffle_buffer=120)[0]
    np.testing.assert_array_equal(again, first)
    # A resumed run's stream starts at its epoch.
    resumed = _epochs(table, 1, seed=7, shuffle_buffer=120, first_epoch=2)[0]
    np.testing.assert_array_equal(resumed, third)
    # The buffer bounds how far a row moves: a block of 100 rows at a time.
    block = _epochs(table, 1, seed=7, shuffle_buffer=100)[0]
    np.testing.assert_array_equal(
        np.sort(block[:100]), train["id"].to_numpy(np.float32)[:100]
    )


def test_folder_of_train_and_test_files(tmp_path):
    frame = _frame()
    frame[:400].to_csv(tmp_path / "train.csv", index=False)
    frame[400:].to_parquet(tmp_path / "test.parquet")
    table = table_streaming.streamed_table(str(tmp_path))
    schema, _, _ = tables.read_table(str(tmp_path))
    _same_schema(table.schema, schema)
    assert (table.num_train, table.num_test) == (400, 100)
    frame[400:].drop(columns="id").to_parquet(tmp_path / "test.parquet")
    with pytest.raises(errors.UsageError, match="must have the same columns"):
        table_streaming.streamed_table(str(tmp_path))


def test_fits_the_budget_or_streams(tmp_path):
    path = _write(_frame(), tmp_path, ".csv")
    assert table_streaming.table_fits(path, "1GB")
    assert not table_streaming.table_fits(path, "0")
    np.save(tmp_path / "t.npy", np.ones((100, 3)))
    assert table_streaming.table_fits(str(tmp_path / "t.npy"), "1GB")
    with pytest.raises(errors.UsageError, match=r"t\.npy .*convert it to Parquet"):
        table_streaming.table_fits(str(tmp_path / "t.npy"), "0")


def test_refusals_name_the_column_or_file(tmp_path, monkeypatch):
    frame = _frame()
    path = _write(frame, tmp_path, ".parquet")
    with pytest.raises(errors.UsageError, match="'nope', which is not a column"):
        # Before any cell is read.
        with monkeypatch.context() as patch:
            patch.setattr(table_files, "chunks", None)
            table_streaming.streamed_table(path, column_types={"nope": "real"})
    (tmp_path / "constant").mkdir()
    constant = _write(frame.assign(binary=1), tmp_path / "constant", ".csv")
    with pytest.raises(errors.UsageError, match="'binary' is constant"):
        table_streaming.streamed_table(constant)
    with pytest.raises(errors.UsageError, match="leaves .* test rows"):
        table_streaming.streamed_table(path, test_fraction=1e-9)
    # A cell of another type after the first block: refused, naming the file.
    text = frame.astype({"id": object})
    text.loc[450, "id"] = "broken"
    bad = _write(text, tmp_path, ".csv")
    with pytest.raises(errors.UsageError, match=r"t\.csv cannot be read in chunks"):
        table_streaming.streamed_table(bad)


def test_a_folder_reads_only_the_split_it_gives(tmp_path, monkeypatch):
    frame = _frame()
    frame[:400].to_csv(tmp_path / "train.csv", index=False)
    frame[400:].to_csv(tmp_path / "test.csv", index=False)
    table = table_streaming.streamed_table(str(tmp_path))
    read = []
    chunks = table_files.chunks

    def spied(path):
        read.append(os.path.basename(path))
        return chunks(path)

    monkeypatch.setattr(table_files, "chunks", spied)
    batches = iter(table.train_batches(50, seed=0))
    for _ in range(table.steps_per_epoch(50) + 1):  # Into the second epoch.
        next(batches)
    del batches
    assert set(read) == {"train.csv"}
    read.clear()
    assert sum(len(b) for b in table.test_batches(64)) == 100
    assert set(read) == {"test.csv"}


def test_missing_cell_markers_type_a_csv_alike_whole_and_in_chunks(tmp_path):
    rows = 300
    frame = pd.DataFrame({"x": np.arange(rows) + 0.5, "y": np.arange(rows) % 7})
    text = frame.astype(str)
    text.loc[::5, "x"] = "None"  # pyarrow's own markers lack these two.
    text.loc[1::5, "y"] = "<NA>"
    text.loc[2::5, "y"] = "NA"
    path = tmp_path / "t.csv"
    text.to_csv(path, index=False)
    schema, train, test = tables.read_table(str(path), seed=2)
    assert [c["type"] for c in schema["columns"]] == ["real", "count"]
    assert train["x"].isna().any() and train["y"].isna().any()
    table = table_streaming.streamed_table(str(path), seed=2)
    _same_schema(table.schema, schema)
    assert (table.num_train, table.num_test) == (len(train), len(test))


def test_a_table_fits_when_reading_it_whole_does(tmp_path, monkeypatch):
    path = _write(_frame(), tmp_path, ".csv")
    needed = table_streaming.table_bytes(path)
    # Its cells fit the budget, but reading them whole takes READ_FACTOR times.
    assert not table_streaming.table_fits(path, str(2 * needed))
    factor = table_streaming.READ_FACTOR
    assert table_streaming.table_fits(path, str(factor * needed))
    monkeypatch.setattr(memory, "physical_memory", lambda: factor * needed - 1)
    with pytest.raises(errors.UsageError, match="more than this machine's"):
        table_streaming.table_fits(path, "1GB")
    assert not table_streaming.table_fits(path, "50%")  # Streamed instead.


def test_bad_max_categories_is_refused_before_reading(tmp_path, monkeypatch):
    path = _write(_frame(), tmp_path, ".parquet")
    monkeypatch.setattr(table_files, "chunks", None)
    with pytest.raises(errors.UsageError, match="max_categories=0"):
        table_streaming.streamed_table(path, max_categories=0)
