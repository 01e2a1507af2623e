"""Tests for tfvae.heads: shapes, observations and validation of every head."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import heads

tfd = tfp.distributions

BATCH, SHAPE = 3, (5, 4, 2)
SEED = tf.constant([1, 2], tf.int64)


def _images():
    rng = np.random.default_rng(0)
    return tf.constant(rng.integers(0, 256, size=(BATCH, *SHAPE), dtype=np.uint8))


LIKELIHOOD_HEADS = {
    "bernoulli": lambda: heads.BernoulliHead(binarize=True),
    "gray_bernoulli": lambda: heads.BernoulliHead(binarize=False),
    "continuous_bernoulli": heads.ContinuousBernoulliHead,
    "gaussian_learned": lambda: heads.GaussianHead(scale=None),
    "gaussian_fixed": lambda: heads.GaussianHead(scale=0.1),
    "categorical": heads.CategoricalHead,
}


@pytest.mark.parametrize("name", sorted(LIKELIHOOD_HEADS))
def test_likelihood_shapes_and_log_prob(name):
    head = LIKELIHOOD_HEADS[name]()
    params = tf.random.normal([BATCH, *SHAPE, head.params_per_value], seed=0)
    dist = head(params)
    assert dist.batch_shape == [BATCH]
    assert dist.event_shape == list(SHAPE)
    x = head.observe(_images(), SEED)
    assert x.shape == (BATCH, *SHAPE)
    log_prob = dist.log_prob(x)
    assert log_prob.shape == (BATCH,)
    assert np.all(np.isfinite(log_prob.numpy()))
    mean = head.mean_image(dist).numpy()
    assert mean.shape == (BATCH, *SHAPE)
    assert mean.min() >= 0.0 and mean.max() <= 1.0
    for value in head.parameters(dist).values():
        assert value.shape[:4] == (BATCH, *SHAPE)
    encoder_input = head.encoder_input(x).numpy()
    assert encoder_input.dtype == np.float32
    assert 0.0 <= encoder_input.min() and encoder_input.max() <= 1.0


def test_bernoulli_log_prob_is_the_sum_over_pixels():
    head = heads.BernoulliHead(binarize=True)
    logits = tf.constant([[[[[0.3]], [[-1.2]]]]])  # [1, 1, 2, 1, 1]
    x = tf.constant([[[[1.0], [0.0]]]])
    expected = np.log(1 / (1 + np.exp(-0.3))) + np.log(1 - 1 / (1 + np.exp(1.2)))
    np.testing.assert_allclose(head(logits).log_prob(x), [expected], rtol=1e-6)


@pytest.mark.parametrize("binarize", [True, False])
def test_bernoulli_log_prob_and_gradient_match_tfp(binarize):
    head = heads.BernoulliHead(binarize=binarize)
    x = head.observe(_images(), SEED)
    # Includes logits large enough for softplus(s) - s to lose digits.
    logits = tf.constant(
        np.random.default_rng(1).uniform(-40, 40, size=(BATCH, *SHAPE, 1)),
        tf.float32,
    )
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        ours = head(logits).log_prob(x)
        theirs = tfd.Independent(tfd.Bernoulli(logits=logits[..., 0]), 3).log_prob(x)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(
        tape.gradient(ours, logits), tape.gradient(theirs, logits), atol=1e-6
    )


def test_dynamic_binarization_is_binary_fresh_per_seed_and_unbiased():
    head = heads.BernoulliHead(binarize=True)
    images = tf.fill([200, *SHAPE], tf.constant(64, tf.uint8))
    a = head.observe(images, SEED).numpy()
    b = head.observe(images, SEED + 1).numpy()
    assert set(np.unique(a)) <= {0.0, 1.0}
    assert np.any(a != b)
    np.testing.assert_array_equal(a, head.observe(images, SEED).numpy())
    assert abs(a.mean() - 64 / 255) < 0.02


def test_gray_bernoulli_and_categorical_observations():
    images = _images()
    gray = heads.BernoulliHead(binarize=False).observe(images, SEED)
    np.testing.assert_allclose(gray, images.numpy() / 255.0, rtol=1e-6)
    ints = heads.CategoricalHead().observe(images, SEED)
    assert ints.dtype == tf.int32
    np.testing.assert_array_equal(ints, images.numpy())


def test_categorical_mean_image_is_expected_pixel_value():
    head = heads.CategoricalHead()
    logits = np.full([1, 1, 1, 1, 256], -1e9, np.float32)
    logits[..., 51] = 0.0
    logits[..., 153] = 0.0
    mean = head.mean_image(head(tf.constant(logits)))
    np.testing.assert_allclose(mean, [[[[102 / 255]]]], rtol=1e-5)


@pytest.mark.parametrize("head_cls", [heads.NormalDiagHead, heads.NormalTriLHead])
def test_posterior_shapes_and_reparameterization(head_cls):
    head = head_cls(latent_dim=4)
    q = head(tf.random.normal([BATCH, 7], seed=1))
    assert q.batch_shape == [BATCH]
    assert q.event_shape == [4]
    eps = tf.random.normal([6, BATCH, 4], seed=2)
    z = head.reparameterize(q, eps)
    assert z.shape == (6, BATCH, 4)
    # z = loc + scale @ eps: reproduces q's moments when eps is standard normal.
    expected = q.loc + tf.linalg.matvec(q.scale.to_dense(), eps)
    np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-6)
    assert np.all(q.stddev().numpy() >= heads.SCALE_FLOOR)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: heads.NormalDiagHead(latent_dim=0), "latent_dim=0"),
        (lambda: heads.GaussianHead(scale=-1.0), "scale=-1.0"),
        (lambda: heads.BernoulliHead(binarize="yes"), "binarize='yes'"),
    ],
)
def test_constructors_echo_bad_values(make, message):
    with pytest.raises(ValueError, match=message):
        make()
