"""Tests for tfvae.table_typing: the typing rules, whole or chunk by chunk."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tests.test_tables import _frame
from tfvae import errors, table_typing, tables


def test_moments_merge_equals_moments_of_the_whole():
    values = np.random.default_rng(0).gamma(2.0, size=1001) + 1e6
    merged = table_typing._Moments()
    for part in np.array_split(values, 7):
        merged = merged.merge(table_typing._Moments.of(part))
    centred = values - values.mean()
    assert merged.n == len(values)
    assert merged.mean == pytest.approx(values.mean())
    assert merged.std == pytest.approx(values.std())
    assert merged.skew == pytest.approx(np.mean(centred**3) / values.std() ** 3)


def test_category_texts_drop_the_point_of_whole_numbers():
    texts = table_typing.category_texts(pd.Series([1.0, 2.5, 3, -4.0]))
    assert texts.tolist() == ["1", "2.5", "3", "-4"]
    assert table_typing.category_texts(pd.Series([True])).tolist() == ["True"]


def test_typing_chunk_by_chunk_equals_in_memory():
    frame = _frame(rows=300, seed=1)
    frame.loc[::7, "real"] = np.nan
    frame["kind"] = frame["kind"].where(frame.index % 5 > 0, None)
    # A whole-number column read as floats in some chunks (missing cells).
    frame["code"] = pd.array(np.arange(300) % 3 + 1, dtype="Int64")
    frame.loc[10, "code"] = None
    types = {"code": "categorical"}
    whole = tables.infer_schema(frame, column_types=types)
    summaries = [table_typing.ColumnSummary(n, 50) for n in frame.columns]
    for start in range(0, 300, 64):
        chunk = frame[start : start + 64]
        if start == 0:
            chunk = chunk.astype({"code": "float64"})
        for summary in summaries:
            summary.add(chunk[summary.name])
    chunked = tables.schema_of(summaries, types)
    assert [c["type"] for c in chunked["columns"]] == [
        c["type"] for c in whole["columns"]
    ]
    for a, b in zip(chunked["columns"], whole["columns"], strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == (
                pytest.approx(b[key]) if key in ("mean", "std") else b[key]
            )
    assert whole["columns"][-1]["categories"] == ["1", "2", "3"]


def test_refusals_need_no_more_than_the_summary():
    summary = table_typing.ColumnSummary("note", max_categories=3)
    for chunk in np.array_split(np.array([f"w{i}" for i in range(100)]), 10):
        summary.add(pd.Series(chunk))
    assert len(summary.texts) == 4  # Bounded, whatever the rows.
    with pytest.raises(errors.UsageError, match="'note'.*max_categories=3"):
        table_typing.column_entry(summary, None)
    with pytest.raises(errors.UsageError, match="'note' is real but holds 'w0'"):
        table_typing.column_entry(summary, "real")


def test_support_rules_refuse_infinity_on_arrays_and_tensors_alike():
    values = np.array([0.0, 1.0, 2.5, -1.0, np.inf, -np.inf, np.nan])
    expected = {
        "binary": [1, 1, 0, 0, 0, 0, 0],
        "count": [1, 1, 0, 0, 0, 0, 0],
        "positive": [0, 1, 1, 0, 0, 0, 0],
        "real": [1, 1, 1, 1, 0, 0, 0],
    }
    for kind, fits in expected.items():
        assert table_typing.in_support(kind, values).tolist() == [bool(f) for f in fits]
        tensor = table_typing.in_support(kind, tf.constant(values, tf.float32))
        assert tensor.numpy().tolist() == [bool(f) for f in fits]
    np.testing.assert_allclose(
        table_typing.to_scale("positive", tf.constant([1.0, np.e]), tf.math), [0, 1]
    )


@pytest.mark.parametrize("kind", ["real", "positive", "count", None])
def test_an_infinite_cell_is_refused_naming_the_column_and_value(kind):
    summary = table_typing.ColumnSummary("n", max_categories=5)
    summary.add(pd.Series([1.0, 2.0, np.inf]))
    with pytest.raises(errors.UsageError, match="'n' is typed .* but holds inf"):
        table_typing.column_entry(summary, kind)


@pytest.mark.parametrize("kind", ["real", "count", "binary", "categorical"])
def test_a_constant_column_is_refused_whatever_its_given_type(kind):
    summary = table_typing.ColumnSummary("flat", max_categories=5)
    summary.add(pd.Series([1.0] * 4 + [np.nan]))
    with pytest.raises(errors.UsageError, match="'flat' is constant .*drop it"):
        table_typing.column_entry(summary, kind)


def test_columns_group_by_type_in_the_types_order():
    groups = table_typing.positions_by_type(["real", "categorical", "binary", "real"])
    assert [kind for kind, _ in groups] == ["binary", "real", "categorical"]
    assert [where.tolist() for _, where in groups] == [[2], [0, 3], [1]]
