"""Tests for tfvae.table_likelihood: the likelihood of a table's row."""

import numpy as np
import pytest
import scipy.special
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.table_likelihood import COUNT_LIKELIHOODS, TableHead

tfd = tfp.distributions

SCHEMA = {
    "columns": [
        {"name": "r", "type": "real", "mean": 10.0, "std": 2.0},
        {"name": "p", "type": "positive", "mean": 0.5, "std": 1.5},
        {"name": "c", "type": "count", "mean": 1.0, "std": 0.5},
        {"name": "b", "type": "binary"},
        {"name": "k", "type": "categorical", "categories": ["x", "y", "z"]},
    ]
}
BATCH = {
    "r": tf.constant([11.0, np.nan]),
    "p": tf.constant([2.0, 0.5]),
    "c": tf.constant([3.0, 0.0]),
    "b": tf.constant([1.0, 0.0]),
    "k": tf.constant(["z", ""]),
}


def test_params_and_observations():
    head = TableHead(SCHEMA)
    assert head.params_per_value == 2 + 2 + 2 + 1 + 3
    x = head.observe(BATCH, None).numpy()
    assert x.shape == (2, 5)
    assert x[0].tolist() == [11.0, 2.0, 3.0, 1.0, 2.0]
    assert np.isnan(x[1, 0]) and np.isnan(x[1, 4])


def test_log_prob_is_in_the_data_units_and_leaves_missing_cells_out():
    head = TableHead(SCHEMA)
    params = tf.zeros([2, head.params_per_value])
    x = head.observe(BATCH, None)
    likelihood = head(params)
    cells = likelihood.column_log_probs(x).numpy()
    scale = 2.0 * (np.log(2.0) + 1e-4)  # std * (softplus(0) + floor)
    assert cells[0, 0] == pytest.approx(scipy.stats.norm(10.0, scale).logpdf(11.0))
    log_scale = 1.5 * (np.log(2.0) + 1e-4)
    assert cells[0, 1] == pytest.approx(
        scipy.stats.lognorm(log_scale, scale=np.exp(0.5)).logpdf(2.0), rel=1e-5
    )
    assert cells[0, 3] == pytest.approx(np.log(0.5))
    assert cells[0, 4] == pytest.approx(np.log(1 / 3))
    assert cells[1, 0] == 0.0 and cells[1, 4] == 0.0
    assert likelihood.log_prob(x).numpy() == pytest.approx(cells.sum(axis=1))
    assert np.all(np.isfinite(likelihood.mean().numpy()))


class _ScipyCounts:
    """A count column's p(x|z) by scipy, from its raw parameters `[batch, k]`.

    The documented parameterization: mean m = typical count (expm1 of the
    column's mean log1p, + 1e-3) times e^raw0; the negative binomial's
    total count r = softplus(raw1) + 1e-4 (variance m + m^2 / r); the zero
    inflation's share of zeros sigmoid(2 raw2) (TFP's `Inflated` mixes the
    two parts by the logits (raw2, -raw2)).
    """

    def __init__(self, column, raw, count_likelihood):
        raw = np.asarray(raw, np.float64)
        m = (np.expm1(column["mean"]) + 1e-3) * np.exp(raw[:, 0])
        self.zeros = 0.0
        if count_likelihood == "poisson":
            self.counts = scipy.stats.poisson(m)
            return
        r = np.logaddexp(0.0, raw[:, 1]) + 1e-4
        self.counts = scipy.stats.nbinom(r, r / (r + m))
        if count_likelihood == "zero_inflated_negative_binomial":
            self.zeros = scipy.special.expit(2 * raw[:, 2])

    def log_prob(self, k):
        pmf = self.counts.pmf(k)
        return np.log(self.zeros * (k == 0) + (1 - self.zeros) * pmf)

    def mean(self):
        return (1 - self.zeros) * self.counts.mean()

    def variance(self):
        # A mixture's: the components' second moments, less the mean squared.
        second = (1 - self.zeros) * (self.counts.var() + self.counts.mean() ** 2)
        return second - self.mean() ** 2


@pytest.mark.parametrize("count_likelihood", COUNT_LIKELIHOODS)
def test_count_likelihoods_are_scipys_from_the_typical_count(count_likelihood):
    head = TableHead(SCHEMA, count_likelihood)
    # Raw 0, and random raw parameters.
    raw = np.zeros([2, head.params_per_value], np.float32)
    raw[1] = np.random.default_rng(0).uniform(-1, 1, head.params_per_value)
    likelihood = head(tf.constant(raw))
    # Every count up to far in the tail, in column c (index 2).
    grid = np.zeros([400, 2, 5], np.float32)
    grid[..., 2] = np.arange(400)[:, None]
    log_pmf = likelihood.column_log_probs(grid).numpy()[..., 2].astype(np.float64)
    count_raw = np.split(raw, np.cumsum(head.sizes)[:-1], axis=-1)[2]
    reference = _ScipyCounts(SCHEMA["columns"][2], count_raw, count_likelihood)
    np.testing.assert_allclose(
        log_pmf[:30], reference.log_prob(np.arange(30)[:, None]), rtol=1e-4, atol=1e-5
    )
    # At raw 0 the mean is the typical count, e - 1 for a mean log1p of 1.
    pmf, k = np.exp(log_pmf), np.arange(400)[:, None]
    mean = (pmf * k).sum(axis=0)
    expected = np.expm1(1.0) + 1e-3
    if count_likelihood == "zero_inflated_negative_binomial":
        expected *= 0.5  # Half the mass at zero, by inflated_loc_logits 0.
    assert mean[0] == pytest.approx(expected, rel=1e-3)
    np.testing.assert_allclose(mean, reference.mean(), rtol=1e-3)
    np.testing.assert_allclose(likelihood.mean().numpy()[:, 2], mean, rtol=1e-3)
    variance = (pmf * (k - mean) ** 2).sum(axis=0)
    np.testing.assert_allclose(variance, reference.variance(), rtol=2e-3)
    with pytest.raises(ValueError, match="count_likelihood must be one of"):
        TableHead(SCHEMA, "binomial")


def test_encoder_input_standardizes_and_masks():
    head = TableHead(SCHEMA)
    features = head.encoder_input(head.observe(BATCH, None)).numpy()
    # r, p, c, b, then k one-hot (3), then the 5 presence flags.
    assert features.shape == (2, 4 + 3 + 5)
    assert features[0, 0] == pytest.approx((11.0 - 10.0) / 2.0)
    assert features[0, 1] == pytest.approx((np.log(2.0) - 0.5) / 1.5)
    assert features[0, 2] == pytest.approx((np.log1p(3.0) - 1.0) / 0.5)
    assert features[0, 4:7].tolist() == [0, 0, 1]
    assert features[1, 0] == 0 and features[1, 4:7].tolist() == [0, 0, 0]
    assert features[:, 7:].tolist() == [[1] * 5, [0, 1, 1, 1, 0]]


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("k", ["w", "x"], "`k` holds a category the model never saw"),
        ("p", [0.0, 1.0], "`p` is positive but holds"),
        ("c", [1.5, 1.0], "`c` is count but holds"),
        ("b", [2.0, 1.0], "`b` is binary but holds"),
        ("r", [np.inf, 1.0], "`r` is real but holds"),
        ("p", [np.inf, 1.0], "(?s)`p` is positive but holds.*inf"),
        ("c", [np.inf, 1.0], "(?s)`c` is count but holds.*inf"),
        ("k", [-2, 0], "(?s)`k`'s codes must be -1 \\(missing\\) to 2.*-2"),
    ],
)
def test_refuses_cells_outside_the_columns(column, value, message):
    head = TableHead(SCHEMA)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        head.observe({**BATCH, column: tf.constant(value)}, None)


def test_a_refusal_names_the_bad_column_of_its_type():
    schema = {
        "columns": [
            {"name": "a", "type": "positive", "mean": 0.0, "std": 1.0},
            {"name": "k", "type": "categorical", "categories": ["x"]},
            {"name": "b", "type": "positive", "mean": 0.0, "std": 1.0},
            {"name": "j", "type": "categorical", "categories": ["x", "y"]},
        ]
    }
    head = TableHead(schema)
    good = {"a": [1.0], "k": ["x"], "b": [2.0], "j": ["y"]}
    with pytest.raises(tf.errors.InvalidArgumentError, match="`b` is positive"):
        head.observe({**good, "b": tf.constant([-3.0])}, None)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`j` holds a category"):
        head.observe({**good, "j": tf.constant(["w"])}, None)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`j`'s codes must be"):
        head.observe({**good, "j": tf.constant([2])}, None)


def test_refuses_missing_and_extra_columns():
    head = TableHead(SCHEMA)
    batch = {**BATCH, "extra": tf.constant([1.0, 2.0])}
    del batch["r"]
    with pytest.raises(ValueError, match=r"Missing: \['r'\]; extra: \['extra'\]"):
        head.observe(batch, None)
    with pytest.raises(ValueError, match="'r' is real: give numbers"):
        head.observe({**BATCH, "r": tf.constant(["1", "2"])}, None)


def test_int_codes_and_config_round_trip():
    head = TableHead(SCHEMA, "poisson")
    x = head.observe({**BATCH, "k": tf.constant([2, -1])}, None).numpy()
    assert x[0, 4] == 2.0 and np.isnan(x[1, 4])
    again = TableHead.from_config(head.get_config())
    assert again.count_likelihood == "poisson"
    assert again.params_per_value == head.params_per_value


def _mixed_schema(rng):
    """Every type, interleaved, and categoricals of different category counts."""
    kinds = ["categorical", "real", "count", "categorical", "binary", "positive"]
    kinds += ["categorical", "count", "real", "binary", "positive", "categorical"]
    columns = []
    for index, kind in enumerate(kinds):
        column = {"name": f"{kind}{index}", "type": kind}
        if kind == "categorical":
            column["categories"] = [f"v{j}" for j in range(int(rng.integers(2, 7)))]
        elif kind != "binary":
            # A count column's mean log1p is never negative.
            mean = rng.normal() if kind != "count" else rng.uniform(0, 2)
            column.update(mean=float(mean), std=float(rng.uniform(0.5, 2)))
        columns.append(column)
    return {"columns": columns}


def _reference(column, raw, count_likelihood):
    """One column's distribution, built on its own as a per-column model would."""
    kind = column["type"]
    if kind == "categorical":
        return tfd.Categorical(logits=raw)
    if kind == "binary":
        return tfd.Bernoulli(logits=raw[:, 0], dtype=tf.float32)
    if kind in ("real", "positive"):
        loc = column["mean"] + column["std"] * raw[:, 0]
        scale = column["std"] * (tf.math.softplus(raw[:, 1]) + 1e-4)
        return (tfd.Normal if kind == "real" else tfd.LogNormal)(loc, scale)
    return _ScipyCounts(column, raw, count_likelihood)


def _random_rows(rng, schema, rows):
    """Cells in each column's support as `observe` returns them, 20% missing."""
    x = np.empty([rows, len(schema["columns"])], np.float32)
    for index, column in enumerate(schema["columns"]):
        kind = column["type"]
        if kind == "categorical":
            x[:, index] = rng.integers(0, len(column["categories"]), rows)
        elif kind in ("binary", "count"):
            x[:, index] = rng.integers(0, 2 if kind == "binary" else 9, rows)
        else:
            x[:, index] = rng.lognormal(size=rows)
    x[rng.random(x.shape) < 0.2] = np.nan
    return x


@pytest.mark.parametrize("count_likelihood", COUNT_LIKELIHOODS)
def test_vectorized_row_matches_a_per_column_reference(count_likelihood):
    rng = np.random.default_rng(7)
    schema = _mixed_schema(rng)
    head = TableHead(schema, count_likelihood)
    params = tf.constant(rng.normal(size=[16, head.params_per_value]), tf.float32)
    x = _random_rows(rng, schema, 16)
    pieces = tf.split(params, head.sizes, axis=-1)
    references = [
        _reference(c, p, count_likelihood)
        for c, p in zip(schema["columns"], pieces, strict=True)
    ]
    expected = np.stack(
        [
            np.where(
                np.isnan(x[:, i]), 0.0, np.asarray(r.log_prob(np.nan_to_num(x[:, i])))
            )
            for i, r in enumerate(references)
        ],
        axis=-1,
    )
    likelihood = head(params)
    np.testing.assert_allclose(
        likelihood.column_log_probs(x).numpy(), expected, rtol=1e-5, atol=1e-5
    )
    reference_means = [
        r.mode() if c["type"] == "categorical" else r.mean()
        for c, r in zip(schema["columns"], references, strict=True)
    ]
    np.testing.assert_allclose(
        likelihood.mean().numpy(),
        np.stack([np.asarray(m, np.float32) for m in reference_means], axis=-1),
        rtol=1e-5,
    )
    draws = likelihood.sample(3, seed=tf.constant([1, 2], tf.int32)).numpy()
    assert draws.shape == (3, 16, len(schema["columns"]))
    assert np.all(np.isfinite(likelihood.log_prob(draws).numpy()))


def test_categorical_padding_has_no_probability():
    rng = np.random.default_rng(3)
    schema = _mixed_schema(rng)
    head = TableHead(schema)
    params = tf.constant(rng.normal(size=[4, head.params_per_value]), tf.float32)
    likelihood = head(params)
    draws = likelihood.sample(500, seed=tf.constant([0, 5], tf.int32)).numpy()
    for index, column in enumerate(schema["columns"]):
        if column["type"] != "categorical":
            continue
        count = len(column["categories"])
        assert draws[..., index].max() < count
        x = np.zeros([count, 4, len(schema["columns"])], np.float32)
        x[..., index] = np.arange(count)[:, None]
        cells = likelihood.column_log_probs(x).numpy()[..., index]
        # The column's own categories hold all the mass: the padding none.
        np.testing.assert_allclose(np.exp(cells).sum(axis=0), 1.0, rtol=1e-6)


def test_encoder_input_keeps_the_columns_order():
    rng = np.random.default_rng(5)
    schema = _mixed_schema(rng)
    head = TableHead(schema)
    x = _random_rows(rng, schema, 8)
    expected = []
    for index, column in enumerate(schema["columns"]):
        value, kind = x[:, index], column["type"]
        if kind == "categorical":
            count = len(column["categories"])
            codes = np.nan_to_num(value, nan=-1).astype(int)
            expected.append((codes[:, None] == np.arange(count)).astype(np.float32))
            continue
        scaled = {"positive": np.log, "count": np.log1p}.get(kind, lambda v: v)(value)
        if kind != "binary":
            scaled = (scaled - column["mean"]) / column["std"]
        expected.append(np.nan_to_num(scaled, nan=0.0)[:, None])
    expected.append((~np.isnan(x)).astype(np.float32))
    np.testing.assert_allclose(
        head.encoder_input(tf.constant(x)).numpy(),
        np.concatenate(expected, axis=-1),
        rtol=1e-5,
        atol=1e-6,
    )
