"""Tests for tfvae.tables: reading, splitting and typing a table."""

import inspect
import json
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tfvae import data, errors, table_streaming, tables

WINE = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "datasets", "tabular", "wine.csv"
)


def _frame(rows=40, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "real": rng.normal(size=rows),
            "positive": np.exp(rng.normal(size=rows)),
            "count": rng.poisson(3.0, size=rows),
            "binary": rng.integers(0, 2, size=rows),
            "flag": rng.integers(0, 2, size=rows).astype(bool),
            "kind": rng.choice(["a", "b", "c"], size=rows),
        }
    )


# Where a column of _frame sits in a row.
REAL, KIND = 0, 5


def test_infers_each_type_and_is_json():
    schema = tables.infer_schema(_frame())
    types = {c["name"]: c["type"] for c in schema["columns"]}
    assert types == {
        "real": "real",
        "positive": "positive",
        "count": "count",
        "binary": "binary",
        "flag": "binary",
        "kind": "categorical",
    }
    by_name = {c["name"]: c for c in schema["columns"]}
    assert by_name["kind"]["categories"] == ["a", "b", "c"]
    frame = _frame()
    assert by_name["positive"]["mean"] == pytest.approx(
        np.log(frame["positive"]).mean()
    )
    assert json.loads(json.dumps(schema)) == schema


def test_override_and_its_checks():
    schema = tables.infer_schema(_frame(), column_types={"count": "real"})
    assert schema["columns"][2]["type"] == "real"
    with pytest.raises(errors.UsageError, match="'nope', which is not a column"):
        tables.infer_schema(_frame(), column_types={"nope": "real"})
    with pytest.raises(errors.UsageError, match="must be one of"):
        tables.infer_schema(_frame(), column_types={"real": "text"})
    with pytest.raises(errors.UsageError, match="typed positive.*holds"):
        tables.infer_schema(_frame(), column_types={"real": "positive"})


@pytest.mark.parametrize(
    "column, message",
    [
        ([np.nan] * 10, "entirely missing"),
        ([3.0] * 10, "constant"),
        ([f"word {i}" for i in range(10)], "more than max_categories=5"),
        ([f"2024-01-{i + 1:02d}" for i in range(10)], "dates"),
        (pd.date_range("2024-01-01", periods=10), "dates"),
    ],
)
def test_refuses_columns_naming_them(column, message):
    frame = pd.DataFrame({"ok": np.arange(10.0) / 3, "bad": column})
    with pytest.raises(errors.UsageError, match=f"'bad'.*{message}|{message}"):
        tables.infer_schema(frame, max_categories=5)


def test_split_is_seeded_and_complete():
    frame = _frame(rows=50)
    train, test = tables.split_table(frame, 0.2, seed=3)
    assert len(train) + len(test) == 50 and 0 < len(test) < 25
    again, _ = tables.split_table(frame, 0.2, seed=3)
    other, _ = tables.split_table(frame, 0.2, seed=4)
    pd.testing.assert_frame_equal(train, again)
    assert not train.equals(other)
    together = pd.concat([train, test]).sort_values("real")
    assert np.allclose(together["real"], np.sort(frame["real"]))
    with pytest.raises(errors.UsageError, match="test_fraction"):
        tables.split_table(frame, 1.5, seed=0)
    with pytest.raises(errors.UsageError, match="leaves .* training and 0 test"):
        tables.split_table(frame[:2], 0.01, seed=0)


def test_split_rule_is_the_same_chunk_by_chunk():
    rows, fraction = 10_007, 0.3
    whole = tables.test_rows(np.random.default_rng(5), rows, fraction)
    generator = np.random.default_rng(5)
    chunks = [tables.test_rows(generator, n, fraction) for n in (1, 999, 4000, 5007)]
    np.testing.assert_array_equal(np.concatenate(chunks), whole)
    assert abs(whole.mean() - fraction) < 0.02
    # The rows of split_table are the rule's.
    frame = pd.DataFrame({"i": np.arange(rows)})
    _, test = tables.split_table(frame, fraction, seed=5)
    np.testing.assert_array_equal(test["i"], np.flatnonzero(whole))


def test_reads_files_and_folders(tmp_path):
    frame = _frame()
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    np.save(tmp_path / "t.npy", frame[["real", "count"]].to_numpy())
    for name in ("t.csv", "t.parquet"):
        schema, train, test = tables.read_table(tmp_path / name, 0.25, seed=0)
        expected, _ = tables.split_table(frame, 0.25, seed=0)
        assert len(train) == len(expected) and len(train) + len(test) == 40
        assert [c["type"] for c in schema["columns"]][-1] == "categorical"
    schema, _, _ = tables.read_table(tmp_path / "t.npy")
    assert [c["name"] for c in schema["columns"]] == ["0", "1"]
    folder = tmp_path / "splits"
    folder.mkdir()
    frame[:30].to_csv(folder / "train.csv", index=False)
    frame[30:].to_csv(folder / "test.csv", index=False)
    _, train, test = tables.read_table(folder)
    assert len(train) == 30 and len(test) == 10
    with pytest.raises(errors.UsageError, match="is not a table tfvae reads"):
        tables.read_table(tmp_path / "t.txt")


def test_batches_carry_missing_cells():
    frame = _frame(rows=6)
    schema = tables.infer_schema(frame)
    frame.loc[1, "real"] = np.nan
    frame.loc[2, "kind"] = None
    columns = tables.table_columns(frame, schema)
    assert columns["real"].dtype == np.float32 and np.isnan(columns["real"][1])
    assert columns["kind"][2] == "" and columns["kind"][0] in ("a", "b", "c")
    # Batches are rows: categories as codes, NaN where a cell is missing.
    batch = next(iter(tables.table_batches(frame, schema, batch_size=4))).numpy()
    assert batch.dtype == np.float32 and batch.shape == (4, 6)
    assert np.isnan(batch[1, REAL]) and np.isnan(batch[2, KIND])
    categories = schema["columns"][KIND]["categories"]
    assert categories[int(batch[0, KIND])] == columns["kind"][0]
    with pytest.raises(errors.UsageError, match=r"Missing: \['real'\]"):
        tables.table_columns(frame.drop(columns="real"), schema)


@pytest.mark.skipif(not os.path.exists(WINE), reason="needs ../shared/datasets")
def test_wine():
    schema, train, test = tables.read_table(WINE, test_fraction=0.2, seed=0)
    types = {c["name"]: c["type"] for c in schema["columns"]}
    assert len(train) + len(test) == 178 and 20 < len(test) < 50
    assert types["cultivar"] == "categorical"
    assert types["magnesium"] == "count" and types["alcohol"] in ("real", "positive")


def test_batches_shuffle_anew_each_epoch_and_reproducibly():
    frame = _frame(rows=90)
    schema = tables.infer_schema(frame)
    dataset = tables.table_batches(frame, schema, batch_size=32, shuffle_seed=5)
    epochs = [
        np.concatenate([b[:, REAL] for b in dataset.as_numpy_iterator()])
        for _ in range(2)
    ]
    for epoch in epochs:
        np.testing.assert_array_equal(
            np.sort(epoch), np.sort(frame["real"].to_numpy(np.float32))
        )
    assert not np.array_equal(epochs[0], epochs[1])
    again = tables.table_batches(frame, schema, batch_size=32, shuffle_seed=5)
    first = np.concatenate([b[:, REAL] for b in again.as_numpy_iterator()])
    np.testing.assert_array_equal(first, epochs[0])
    in_order = tables.table_batches(frame, schema, batch_size=32)
    batches = list(in_order.as_numpy_iterator())
    assert [len(b) for b in batches] == [32, 32, 26]
    np.testing.assert_array_equal(
        np.concatenate([b[:, REAL] for b in batches]), frame["real"].astype(np.float32)
    )


def test_endless_batches_are_the_command_lines_stream():
    frame = _frame(rows=90)
    schema = tables.infer_schema(frame)
    labels = np.arange(90) % 3
    stream = tables.table_batches(
        frame, schema, 32, shuffle_seed=5, labels=labels, first_epoch=0
    )
    assert stream.cardinality() == tf.data.INFINITE_CARDINALITY
    columns = tables.table_columns(frame, schema)
    expected = data.shuffled_batches((columns, labels), 32, seed=5)
    batches = iter(stream)
    for want in expected.take(2 * (90 // 32)).as_numpy_iterator():  # Two epochs.
        got_rows, got_labels = next(batches)
        assert len(got_labels) == 32  # Full batches only.
        np.testing.assert_array_equal(got_labels, want[1])
        np.testing.assert_array_equal(got_rows[:, REAL], want[0]["real"])
    # A resumed run starts at its epoch: epoch 1's first batch.
    resumed = tables.table_batches(frame, schema, 32, shuffle_seed=5, first_epoch=1)
    epoch_1 = list(expected.skip(90 // 32).take(1).as_numpy_iterator())[0]
    np.testing.assert_array_equal(next(iter(resumed))[:, REAL], epoch_1[0]["real"])
    # In order, with labels: every row once, the last batch short.
    once = list(tables.table_batches(frame, schema, 32, labels=labels))
    assert [len(y) for _, y in once] == [32, 32, 26]
    with pytest.raises(errors.UsageError, match="labels must hold one value per row"):
        tables.table_batches(frame, schema, 32, labels=labels[:5])
    with pytest.raises(errors.UsageError, match="batch_size=100 is larger than the 90"):
        tables.table_batches(frame, schema, 100, shuffle_seed=0, first_epoch=0)


@pytest.mark.parametrize("bad", [0, 1, 2.5, "3"])
def test_max_categories_is_checked_echoing_it(bad):
    with pytest.raises(errors.UsageError, match=f"Received: max_categories={bad!r}"):
        tables.infer_schema(_frame(), max_categories=bad)


def test_one_test_fraction_default():
    assert tables.test_fraction_problem(tables.TEST_FRACTION) is None
    assert tables.test_fraction_problem(1.0) == "must be between 0 and 1"
    for read in (tables.read_table, table_streaming.streamed_table):
        default = inspect.signature(read).parameters["test_fraction"].default
        assert default == tables.TEST_FRACTION


def test_npz_of_object_arrays_is_refused_naming_the_file(tmp_path):
    np.savez(tmp_path / "good.npz", x=np.arange(10.0), kind=np.array(["a", "b"] * 5))
    _, train, test = tables.read_table(tmp_path / "good.npz", seed=0)
    assert len(train) + len(test) == 10 and train["kind"].isin(["a", "b"]).all()
    np.savez(tmp_path / "bad.npz", x=np.array([1, "a", None] * 4, dtype=object))
    with pytest.raises(errors.UsageError, match=r"bad\.npz holds an object array"):
        tables.read_table(tmp_path / "bad.npz")
    np.save(tmp_path / "bad.npy", np.array([[1, "a"]] * 4, dtype=object))
    with pytest.raises(errors.UsageError, match=r"bad\.npy holds an object array"):
        tables.read_table(tmp_path / "bad.npy")
