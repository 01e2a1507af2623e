"""Tests for tfvae.row_distribution: p(x|z) of rows from per-type groups."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.row_distribution import RowDistribution, column_order, in_column_order

tfd = tfp.distributions


def _rows():
    # Columns 0 and 2 real, 1 and 3 categorical (3 slots), in a batch of 2.
    normal = tfd.Normal([[0.0, 5.0], [1.0, 6.0]], 1.0)
    categorical = tfd.Categorical(logits=tf.zeros([2, 2, 3]))
    return RowDistribution(
        [normal, categorical], ["real", "categorical"], [[0, 2], [1, 3]]
    )


def test_column_order_inverts_the_groups_positions():
    order = column_order([[3, 0], [1, 2]])
    pieces = [tf.constant([[30.0, 0.0]]), tf.constant([[10.0, 20.0]])]
    assert in_column_order(pieces, order).numpy().tolist() == [[0, 10, 20, 30]]


def test_scores_means_and_draws_are_in_the_columns_order():
    rows = _rows()
    assert rows.batch_shape == [2] and rows.event_shape == [4]
    x = np.array([[0.5, 2.0, 5.0, np.nan], [np.nan, 0.0, 7.0, 1.0]], np.float32)
    cells = rows.column_log_probs(x).numpy()
    normal = tfd.Normal(0.0, 1.0)
    assert cells[0, 0] == pytest.approx(normal.log_prob(0.5).numpy())
    assert cells[1, 2] == pytest.approx(normal.log_prob(1.0).numpy())
    assert cells[0, 1] == pytest.approx(np.log(1 / 3))
    assert cells[0, 3] == 0.0 and cells[1, 0] == 0.0
    assert rows.log_prob(x).numpy() == pytest.approx(cells.sum(axis=-1))
    assert rows.mean().numpy().tolist() == [[0, 0, 5, 0], [1, 0, 6, 0]]
    draws = rows.sample(50, seed=tf.constant([4, 2], tf.int32)).numpy()
    assert draws.shape == (50, 2, 4)
    # Codes are whole and below 3; the real columns are near their means.
    assert set(np.unique(draws[..., [1, 3]])) <= {0.0, 1.0, 2.0}
    assert abs(draws[:, 0, 2].mean() - 5.0) < 1.0


def test_imputation_is_the_mean_of_numbers_and_the_mode_of_binary_cells():
    rows = RowDistribution(
        [
            tfd.Poisson(rate=[[2.5]]),
            tfd.Bernoulli(probs=[[0.73, 0.2]], dtype=tf.float32),
            tfd.Categorical(probs=[[[0.2, 0.5, 0.3]]]),
        ],
        ["count", "binary", "categorical"],
        [[1], [0, 3], [2]],
    )
    np.testing.assert_allclose(rows.imputation().numpy(), [[1.0, 2.5, 1.0, 0.0]])
    # The mean keeps a binary column's share of ones.
    np.testing.assert_allclose(rows.mean().numpy(), [[0.73, 2.5, 1.0, 0.2]])
