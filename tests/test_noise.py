"""Tests for tfvae.noise: the generator choice and replica-independent noise."""

import numpy as np
import tensorflow as tf

from tfvae import noise

SEED = tf.constant([7, 3], tf.int64)


def _in_function(fn, jit_compile):
    return tf.function(fn, jit_compile=jit_compile, autograph=False)()


def test_threefry_under_xla_philox_elsewhere():
    assert noise.algorithm() == "philox"
    for jit_compile in (False, True):
        # XLA cannot return strings.
        threefry = _in_function(
            lambda: tf.constant(noise.algorithm() == "threefry"), jit_compile
        )
        assert bool(threefry.numpy()) == jit_compile


def test_each_generator_is_uniform_and_reproducible():
    shape = tf.constant([200, 28, 28, 1])
    draws = {}
    for jit_compile in (False, True):
        first, again = (
            _in_function(lambda: noise.uniform(shape, SEED), jit_compile).numpy()
            for _ in range(2)
        )
        np.testing.assert_array_equal(first, again)
        assert first.shape == (200, 28, 28, 1)
        assert 0.0 <= first.min() and first.max() < 1.0
        # 156,800 draws: the mean of U[0, 1) is 0.5 +- 0.0007 (1 sd).
        assert abs(first.mean() - 0.5) < 0.004
        draws[jit_compile] = first
    # Different generators: the same seed gives other (equally valid) noise.
    assert not np.array_equal(draws[False], draws[True])


def test_normal_noise_has_unit_moments_under_xla():
    z = _in_function(
        lambda: noise.normal_samples(1, tf.constant([100_000, 2]), SEED), True
    ).numpy()
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1.0) < 0.02


def test_sample_noise_keeps_its_first_samples_whatever_their_number():
    seed = tf.constant([4, 2], tf.int64)
    few = noise.normal_samples(3, tf.constant([5, 2]), seed)
    many = noise.normal_samples(40, tf.constant([5, 2]), seed)
    assert few.shape == (3, 5, 2) and many.shape == (40, 5, 2)
    np.testing.assert_array_equal(few, many[:3])
    # One sample is the plain draw of the batch's shape.
    np.testing.assert_array_equal(
        noise.normal_samples(1, tf.constant([5, 2]), seed)[0],
        tf.random.stateless_normal([5, 2], seed, alg=noise.algorithm()),
    )
    # Per-row seeds: a row's samples do not depend on the other rows.
    rows = noise.example_seeds(tf.constant([[1], [2], [3]], tf.uint8), seed)
    both = noise.normal_samples(4, tf.constant([3, 2]), rows)
    alone = noise.normal_samples(4, tf.constant([1, 2]), rows[1:2])
    np.testing.assert_array_equal(both[:, 1:2], alone)


def test_each_layer_draws_from_its_own_seed():
    seed = tf.constant([4, 2], tf.int64)
    assert noise.layer_seed(seed, 0) is seed
    layers = {tuple(noise.layer_seed(seed, layer).numpy()) for layer in range(4)}
    assert len(layers) == 4
    rows = tf.stack([seed, seed + 1])
    np.testing.assert_array_equal(
        noise.layer_seed(rows, 2)[1], noise.layer_seed(seed + 1, 2)
    )
