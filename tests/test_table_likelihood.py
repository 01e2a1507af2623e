"""Tests for tfvae.table_likelihood: the likelihood of a table's row."""

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from tfvae.table_likelihood import COUNT_LIKELIHOODS, TableHead

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


@pytest.mark.parametrize("count_likelihood", COUNT_LIKELIHOODS)
def test_count_likelihoods_have_the_standardized_mean(count_likelihood):
    head = TableHead(SCHEMA, count_likelihood)
    likelihood = head(tf.zeros([1, head.params_per_value]))
    mean = likelihood.columns[2].mean().numpy()
    expected = np.exp(1.0)
    if count_likelihood == "zero_inflated_negative_binomial":
        expected *= 0.5  # Half the mass at zero, by inflated_loc_logits 0.
    assert mean == pytest.approx([expected], rel=1e-3)
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
        ("k", ["w", "x"], "'k' holds a category the model never saw"),
        ("p", [0.0, 1.0], "'p' is positive but holds"),
        ("c", [1.5, 1.0], "'c' is count but holds"),
        ("b", [2.0, 1.0], "'b' is binary but holds"),
    ],
)
def test_refuses_cells_outside_the_columns(column, value, message):
    head = TableHead(SCHEMA)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        head.observe({**BATCH, column: tf.constant(value)}, None)


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
