"""Tests for tfvae.distributions: the discretized logistic mixture's gradient."""

import numpy as np
import pytest
import tensorflow as tf

from tfvae import distributions
from tfvae.distributions import PIXEL_MAX, DiscretizedLogisticMixture

# Rows of (logits, loc, log_scale) for two components: a wide and a sharp
# component, a log-scale below the clip (its gradient is 0), locations
# outside [-1, 1].
PARAMS = np.array(
    [
        [0.3, -0.4, -0.2, 0.5, -2.0, -3.0],
        [1.0, 2.0, 0.9, -0.95, -9.0, -5.0],
        [-3.0, 0.0, 1.7, -2.5, -4.0, 1.5],
        [0.5, -0.5, 0.02, -0.01, -6.5, -4.5],
    ],
    np.float32,
)
VALUES = np.array([0, 1, 17, 128, 200, 254, 255])


def _direct_log_prob(logits, loc, log_scale, values):
    """log p(v) in float64 from the definition: sum_k w_k (F(b) - F(a))."""
    scale = tf.exp(tf.maximum(log_scale, DiscretizedLogisticMixture.MIN_LOG_SCALE))
    centers = tf.cast(values, tf.float64)[..., None] / (PIXEL_MAX / 2) - 1.0
    half_bin = 1.0 / PIXEL_MAX
    upper = tf.where(
        centers >= 1.0, 1.0, tf.sigmoid((centers + half_bin - loc) / scale)
    )
    lower = tf.where(
        centers <= -1.0, 0.0, tf.sigmoid((centers - half_bin - loc) / scale)
    )
    weights = tf.nn.softmax(logits)
    return tf.math.log(tf.reduce_sum(weights * (upper - lower), -1))


def _log_prob_and_gradients(make, dtype):
    # Every row against every value: params [values, rows, 6], x [values, rows].
    params = tf.constant(np.broadcast_to(PARAMS, (len(VALUES), *PARAMS.shape)), dtype)
    x = tf.constant(np.broadcast_to(VALUES[:, None], (len(VALUES), len(PARAMS))))
    with tf.GradientTape() as tape:
        tape.watch(params)
        log_prob = make(*tf.split(params, 3, axis=-1), x)
    return log_prob.numpy(), tape.gradient(log_prob, params).numpy()


def _our_log_prob(logits, loc, log_scale, values):
    """log p(v) of `DiscretizedLogisticMixture` (the same signature as above)."""
    params = tf.concat([logits, loc, log_scale], axis=-1)
    return DiscretizedLogisticMixture(params).log_prob(values)


def test_the_written_out_gradient_matches_autodiff_of_the_definition():
    ours, our_gradient = _log_prob_and_gradients(_our_log_prob, tf.float32)
    direct, direct_gradient = _log_prob_and_gradients(_direct_log_prob, tf.float64)
    # Where the definition still has the digits in float64 (mass > 1e-9).
    usable = direct > np.log(1e-9)
    assert usable.mean() > 0.6
    np.testing.assert_allclose(ours[usable], direct[usable], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        our_gradient[usable], direct_gradient[usable], rtol=1e-3, atol=1e-4
    )
    assert np.all(np.isfinite(ours)) and np.all(np.isfinite(our_gradient))
    # The clipped log-scale (-9 < -7) gets no gradient.
    assert np.all(our_gradient[:, 1, 4] == 0.0)


def test_log_prob_broadcasts_the_pixels_against_the_parameters():
    params = tf.constant(PARAMS[:2])  # Batch [2], two components.
    mixture = DiscretizedLogisticMixture(params)
    x = tf.constant([[0, 255], [17, 17], [128, 3]])  # [3, 2] against batch [2].
    log_prob = mixture.log_prob(x)
    assert log_prob.shape == (3, 2)
    for row in range(3):
        np.testing.assert_allclose(log_prob[row], mixture.log_prob(x[row]), rtol=1e-6)


def test_log_prob_without_xla_matches_the_compiled_one():
    """Exports trace plain ops (`without_xla`); training runs the XLA function."""
    compiled = _log_prob_and_gradients(_our_log_prob, tf.float32)
    with distributions.without_xla():
        plain = _log_prob_and_gradients(_our_log_prob, tf.float32)
    # XLA's exp, log and tanh differ from TensorFlow's kernels in the last
    # bits; the tolerances of the float64 check above.
    np.testing.assert_allclose(compiled[0], plain[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(compiled[1], plain[1], rtol=1e-3, atol=1e-4)


def test_params_must_hold_three_values_per_component():
    with pytest.raises(ValueError, match=r"3 values per component.*\(2, 4\)"):
        DiscretizedLogisticMixture(tf.zeros([2, 4]))
    # The three separate tensors of the old signature are refused, not read
    # as the parameters and a name.
    with pytest.raises(TypeError):
        DiscretizedLogisticMixture(tf.zeros([2, 2]), tf.zeros([2, 2]))
