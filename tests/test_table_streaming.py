"""Tests for tfvae.table_streaming: a table read in chunks, as it is in memory."""

import numpy as np
import pandas as pd
import pyarrow.csv as pa_csv
import pytest

from tfvae import errors, table_streaming, tables


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of a few dozen rows, so that tiny tables span many of them."""
    monkeypatch.setattr(table_streaming, "_PARQUET_ROWS", 37)
    monkeypatch.setattr(
        table_streaming, "_CSV_READ", pa_csv.ReadOptions(block_size=2048)
    )


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
    types = {"code": "categorical"}
    schema, train, test = tables.read_table(path, 0.3, seed=4, column_types=types)
    table = table_streaming.streamed_table(path, 0.3, seed=4, column_types=types)
    _same_schema(table.schema, schema)
    assert schema["columns"][-1]["categories"] == ["1", "2", "3"]
    assert (table.num_train, table.num_test) == (len(train), len(test))
    batches = list(table.test_batches(64).as_numpy_iterator())
    assert [len(b["id"]) for b in batches[:-1]] == [64] * (len(batches) - 1)
    expected = tables.table_columns(test, schema)
    for name, cells in expected.items():
        got = np.concatenate([b[name] for b in batches])
        if cells.dtype == object:
            np.testing.assert_array_equal(got.astype(str), cells.astype(str))
        else:
            np.testing.assert_array_equal(got, cells)


def _epochs(table, count, **kwargs):
    steps = table.steps_per_epoch(50)
    batches = iter(table.train_batches(50, **kwargs))
    epochs = []
    for _ in range(count):
        epoch = [next(batches) for _ in range(steps)]
        assert all(len(b["id"]) == 50 for b in epoch[:-1])
        epochs.append(np.concatenate([b["id"].numpy() for b in epoch]))
    del batches  # Before the interpreter exits: a live generator can hang it.
    return epochs


def test_every_training_row_once_per_epoch_reshuffled_and_reproducible(tmp_path):
    path = _write(_frame(), tmp_path, ".parquet")
    _, train, _ = tables.read_table(path, 0.2, seed=1)
    table = table_streaming.streamed_table(path, 0.2, seed=1)
    first, second, third = _epochs(table, 3, seed=7, shuffle_buffer=120)
    for epoch in (first, second, third):
        np.testing.assert_array_equal(np.sort(epoch), train["id"].to_numpy(np.float32))
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
            patch.setattr(table_streaming, "_chunks", None)
            table_streaming.streamed_table(path, column_types={"nope": "real"})
    constant = _write(frame.assign(binary=1), tmp_path / "..", ".csv")
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
