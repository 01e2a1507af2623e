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
        lambda: noise.normal(tf.constant([100_000, 2]), SEED), True
    ).numpy()
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1.0) < 0.02
