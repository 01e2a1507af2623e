"""Tests for tfvae.table_baseline: each column's fit against scipy's densities."""

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import tensorflow as tf

from tfvae import table_baseline, tables


def _frame(rows=200, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "real": rng.normal(2.0, 3.0, size=rows),
            "positive": np.exp(rng.normal(size=rows)),
            "count": rng.negative_binomial(2.0, 0.3, size=rows),
            "binary": rng.integers(0, 2, size=rows),
            "kind": rng.choice(["a", "b", "c"], size=rows, p=[0.5, 0.3, 0.2]),
        }
    )


def test_each_column_is_its_maximum_likelihood_or_moment_fit():
    train, test = _frame(), _frame(seed=1)
    schema = tables.infer_schema(train)
    assert [c["type"] for c in schema["columns"]] == [
        "real",
        "positive",
        "count",
        "binary",
        "categorical",
    ]
    nll = table_baseline.IndependentColumns(schema, train).column_nll(test)
    logs = np.log(train["positive"])
    mean, variance = train["count"].mean(), train["count"].var(ddof=0)
    total_count = mean**2 / (variance - mean)
    # Add-one smoothing of binary values and categories.
    ones = (train["binary"].sum() + 1) / (len(train) + 2)
    frequencies = (train["kind"].value_counts() + 1) / (len(train) + 3)
    expected = np.stack(
        [
            -scipy.stats.norm(train["real"].mean(), train["real"].std(ddof=0)).logpdf(
                test["real"]
            ),
            -scipy.stats.lognorm(logs.std(ddof=0), scale=np.exp(logs.mean())).logpdf(
                test["positive"]
            ),
            -scipy.stats.nbinom(total_count, total_count / (total_count + mean)).logpmf(
                test["count"]
            ),
            -scipy.stats.bernoulli(ones).logpmf(test["binary"]),
            -np.log(frequencies[test["kind"]].to_numpy()),
        ],
        axis=-1,
    )
    # float32, as the VAE's likelihood.
    np.testing.assert_allclose(nll, expected, rtol=1e-5, atol=1e-5)


def test_missing_cells_cost_nothing_and_underdispersed_counts_are_poisson():
    train = pd.DataFrame({"count": [1, 2, 2, 3, 2, 2], "x": [0.0, 1, 2, 3, 4, 5]})
    schema = tables.infer_schema(train)
    baseline = table_baseline.IndependentColumns(schema, train)
    test = pd.DataFrame({"count": [2.0, np.nan], "x": [np.nan, 1.0]})
    nll = baseline.column_nll(test)
    assert nll[1, 0] == 0 and nll[0, 1] == 0
    assert nll[0, 0] == pytest.approx(-scipy.stats.poisson(2.0).logpmf(2))
    np.testing.assert_allclose(baseline.row_nll(test), nll.sum(axis=1))


def test_refuses_a_category_the_model_lacks_as_the_vae_does():
    train = pd.DataFrame({"kind": ["a", "b", "a"]})
    baseline = table_baseline.IndependentColumns(tables.infer_schema(train), train)
    with pytest.raises(tf.errors.InvalidArgumentError, match="(?s)`kind` holds.*z"):
        baseline.row_nll(pd.DataFrame({"kind": ["a", "z"]}))


def test_values_the_training_split_lacks_score_finite():
    # The schema's split has every value; the baseline's rows lack some: a
    # binary column of ones, counts of zeros, a category never seen, a real
    # column whose cells are all alike.
    frame = pd.DataFrame(
        {
            "b": [1, 1, 1, 0],
            "n": [0, 0, 0, 4],
            "k": ["x", "x", "x", "y"],
            "r": [2.0, 2.0, 2.0, 5.0],
        }
    )
    schema = tables.infer_schema(frame)
    baseline = table_baseline.IndependentColumns(schema, frame.iloc[:3])
    nll = baseline.column_nll(frame)
    assert np.all(np.isfinite(nll)), nll
    # Add-one: 1 zero-valued pseudo-count among 3 ones + 2.
    assert nll[3, 0] == pytest.approx(-np.log(1 / 5))
