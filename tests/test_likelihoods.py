"""Tests for tfvae.likelihoods: shapes, observations and validation of every head."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from absl import flags

from tests.conftest import REPO, tiny_vae
from tfvae import builder, fields, likelihoods, model
from tfvae import config as config_lib

tfd = tfp.distributions

BATCH, SHAPE = 3, (5, 4, 2)
SEED = tf.constant([1, 2], tf.int64)


def _images():
    rng = np.random.default_rng(0)
    return tf.constant(rng.integers(0, 256, size=(BATCH, *SHAPE), dtype=np.uint8))


LIKELIHOOD_HEADS = {
    "bernoulli": lambda: likelihoods.BernoulliHead(binarize=True),
    "gray_bernoulli": lambda: likelihoods.BernoulliHead(binarize=False),
    "continuous_bernoulli": likelihoods.ContinuousBernoulliHead,
    "gaussian_learned": lambda: likelihoods.GaussianHead(scale=None),
    "gaussian_fixed": lambda: likelihoods.GaussianHead(scale=0.1),
    "categorical": likelihoods.CategoricalHead,
    "logistic_mixture": lambda: likelihoods.LogisticMixtureHead(components=3),
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
    head = likelihoods.BernoulliHead(binarize=True)
    logits = tf.constant([[[[[0.3]], [[-1.2]]]]])  # [1, 1, 2, 1, 1]
    x = tf.constant([[[[1.0], [0.0]]]])
    expected = np.log(1 / (1 + np.exp(-0.3))) + np.log(1 - 1 / (1 + np.exp(1.2)))
    np.testing.assert_allclose(head(logits).log_prob(x), [expected], rtol=1e-6)


@pytest.mark.parametrize("binarize", [True, False])
def test_bernoulli_log_prob_and_gradient_match_tfp(binarize):
    head = likelihoods.BernoulliHead(binarize=binarize)
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
    head = likelihoods.BernoulliHead(binarize=True)
    images = tf.fill([200, *SHAPE], tf.constant(64, tf.uint8))
    a = head.observe(images, SEED).numpy()
    b = head.observe(images, SEED + 1).numpy()
    assert set(np.unique(a)) <= {0.0, 1.0}
    assert np.any(a != b)
    np.testing.assert_array_equal(a, head.observe(images, SEED).numpy())
    assert abs(a.mean() - 64 / 255) < 0.02


def test_gray_bernoulli_and_categorical_observations():
    images = _images()
    gray = likelihoods.BernoulliHead(binarize=False).observe(images, SEED)
    np.testing.assert_allclose(gray, images.numpy() / 255.0, rtol=1e-6)
    ints = likelihoods.CategoricalHead().observe(images, SEED)
    assert ints.dtype == tf.int32
    np.testing.assert_array_equal(ints, images.numpy())


def test_categorical_mean_image_is_expected_pixel_value():
    head = likelihoods.CategoricalHead()
    logits = np.full([1, 1, 1, 1, 256], -1e9, np.float32)
    logits[..., 51] = 0.0
    logits[..., 153] = 0.0
    mean = head.mean_image(head(tf.constant(logits)))
    np.testing.assert_allclose(mean, [[[[102 / 255]]]], rtol=1e-5)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: likelihoods.GaussianHead(scale=-1.0), "scale=-1.0"),
        (lambda: likelihoods.BernoulliHead(binarize="yes"), "binarize='yes'"),
        (lambda: likelihoods.LogisticMixtureHead(components=0), "components=0"),
    ],
)
def test_constructors_echo_bad_values(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("shape", [(8, 8, 1), (5, 4, 2)])
def test_a_likelihood_head_says_what_input_it_needs(shape):
    head = likelihoods.LogisticMixtureHead(components=2)
    assert head.input_shape_for(shape) == (None, *shape, 6)
    assert likelihoods.BernoulliHead(binarize=True).image_dtype == tf.uint8


# --- The discretized logistic mixture ------------------------------------------

# Raw decoder outputs for one pixel value each: [logits, locations on [-1, 1],
# log-scales] of 2 components. Includes sharp and broad components and
# locations beyond the pixel range, where the edge bins hold nearly all mass.
MIXTURE_PARAMS = np.array(
    [
        [0.3, -0.4, -0.2, 0.5, -2.0, -3.0],
        [1.0, 2.0, 0.9, -0.95, -9.0, -5.0],
        [-3.0, 0.0, 1.7, -2.5, -4.0, 1.5],
        [0.0, 0.0, 0.0039, -0.0039, -7.0, -7.0],
        [0.5, -0.5, 40.0, -40.0, -7.0, -6.0],
    ],
    np.float32,
)


def _mixture_mass_numpy(params: np.ndarray) -> np.ndarray:
    """Returns P(x = v) for v = 0..255 of each row of raw `params`, directly.

    The PixelCNN++ formula in float64: F(v + 1/2) - F(v - 1/2) on [-1, 1]
    (bins of half-width 1/255), with the tails in the edge bins.
    """
    logits, loc, log_scale = np.split(params.astype(np.float64), 3, axis=-1)
    weights = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    scale = np.exp(np.maximum(log_scale, -7.0))
    values = np.arange(256)[None, :, None]  # [1, 256, 1] against [rows, 1, K].
    centers = values / 127.5 - 1.0
    loc, scale, weights = loc[:, None, :], scale[:, None, :], weights[:, None, :]

    def cdf(edge):  # The logistic CDF, a sigmoid, written without overflow.
        return 0.5 + 0.5 * np.tanh((edge - loc) / (2 * scale))

    upper = np.where(values == 255, 1.0, cdf(centers + 1 / 255))
    lower = np.where(values == 0, 0.0, cdf(centers - 1 / 255))
    return ((upper - lower) * weights).sum(-1)  # [rows, 256]


def _per_value_log_prob(head, params):
    """log p(v) for every value v = 0..255 of every row: `[rows, 256]`."""
    rows = params.shape[0]
    # One pixel per row and value: batch 256, image [rows, 1, 1].
    tiled = tf.tile(
        tf.constant(params)[tf.newaxis, :, None, None, :], [256, 1, 1, 1, 1]
    )
    values = tf.tile(
        tf.range(256)[:, tf.newaxis, tf.newaxis, tf.newaxis], [1, rows, 1, 1]
    )
    pixelwise = head(tiled).distribution  # Batch [256, rows, 1, 1], no sum.
    return tf.transpose(pixelwise.log_prob(values)[:, :, 0, 0]).numpy()


def test_logistic_mixture_probabilities_sum_to_one_over_the_256_values():
    head = likelihoods.LogisticMixtureHead(components=2)
    probs = np.exp(_per_value_log_prob(head, MIXTURE_PARAMS).astype(np.float64))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_logistic_mixture_log_prob_matches_a_direct_computation():
    head = likelihoods.LogisticMixtureHead(components=2)
    mass = _mixture_mass_numpy(MIXTURE_PARAMS)
    actual = _per_value_log_prob(head, MIXTURE_PARAMS)
    # Where the direct formula still has the digits (mass above 1e-6).
    usable = mass > 1e-6
    np.testing.assert_allclose(
        actual[usable], np.log(mass[usable]), rtol=1e-4, atol=1e-5
    )
    # And an image's log_prob is the sum over its pixels (values 0, 17, 255).
    params = tf.constant(MIXTURE_PARAMS[None, :3, None, None, :])
    x = tf.constant([[[[0]], [[17]], [[255]]]])
    np.testing.assert_allclose(
        head(params).log_prob(x),
        [np.log(mass[0, 0] * mass[1, 17] * mass[2, 255])],
        rtol=1e-5,
    )


def test_logistic_mixture_is_finite_with_finite_gradients_far_in_the_tails():
    head = likelihoods.LogisticMixtureHead(components=2)
    # Sharp components far from the observed values: tiny masses.
    params = tf.constant(
        [[[[[0.0, 0.0, 30.0, -30.0, -7.0, -7.0]], [[0.0, 0.0, 1.0, 1.0, -7.0, -9.0]]]]]
    )
    x = tf.constant([[[[128], [0]]]])
    with tf.GradientTape() as tape:
        tape.watch(params)
        log_prob = head(params).log_prob(x)
    assert np.all(np.isfinite(log_prob.numpy())) and log_prob.numpy()[0] < -1e3
    assert np.all(np.isfinite(tape.gradient(log_prob, params).numpy()))


def test_logistic_mixture_mean_image_is_the_expected_pixel_value():
    head = likelihoods.LogisticMixtureHead(components=2)
    params = tf.constant(MIXTURE_PARAMS[None, :, None, None, :])
    mean = head.mean_image(head(params)).numpy()[0, :, 0, 0]
    expected = _mixture_mass_numpy(MIXTURE_PARAMS) @ np.arange(256) / 255
    np.testing.assert_allclose(mean, expected, atol=1e-5)
    assert np.all((0 <= mean) & (mean <= 1))


def test_logistic_mixture_parameters_are_per_component():
    head = likelihoods.LogisticMixtureHead(components=3)
    params = tf.random.normal([BATCH, *SHAPE, head.params_per_value], seed=3)
    parameters = head.parameters(head(params))
    assert head.params_per_value == 9 and head.discrete
    assert set(parameters) == {"logits", "loc", "scale"}
    assert all(v.shape == (BATCH, *SHAPE, 3) for v in parameters.values())
    assert np.all(parameters["scale"].numpy() > 0)


def _train_one_step(vae: model.VAE, images: np.ndarray) -> dict:
    """Compiles `vae` as training does and fits one batch; returns the logs."""
    vae.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True)
    before = [w.numpy() for w in vae.trainable_weights]
    batches = tf.data.Dataset.from_tensors(tf.constant(images))
    history = vae.fit(batches, verbose=0, shuffle=False).history
    logs = {name: values[-1] for name, values in history.items()}
    assert all(np.isfinite(value) for value in logs.values()), logs
    after = [w.numpy() for w in vae.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    return logs


def test_a_tiny_vae_with_the_logistic_mixture_trains_a_step(tmp_path):
    vae = tiny_vae(tmp_path, likelihood="logistic_mixture", mixture_components=2)
    assert vae.likelihood.params_per_value == 6 and vae.likelihood.discrete
    images = np.random.default_rng(4).integers(0, 256, (16, 8, 8, 1), np.uint8)
    logs = _train_one_step(vae, images)
    # Random pixels: about 8 bits of each of the 64 values, in nats.
    assert logs["reconstruction"] > 0.5 * 64 * 8 * np.log(2)


def test_the_cifar10_flagfile_trains_on_cifar_shaped_data(tmp_path):
    """configs/cifar10.flags, as `tfvae.train` reads it, on generated 32x32x3 data."""
    values = flags.FlagValues()
    fields.define_flags(config_lib.Config, values)
    values(
        [
            "train",
            f"--flagfile={REPO / 'configs' / 'cifar10.flags'}",
            f"--model_dir={tmp_path / 'run'}",
        ]
    )
    config = fields.from_flags(config_lib.Config, values)
    assert (config.dataset, config.likelihood) == ("cifar10", "logistic_mixture")
    assert config.network == "conv"
    keras.utils.set_random_seed(config.seed)
    vae = builder.build_vae((32, 32, 3), seed=config.seed, **config.model_settings())
    assert vae.likelihood.params_per_value == 3 * config.mixture_components
    images = np.random.default_rng(5).integers(0, 256, (8, 32, 32, 3), np.uint8)
    _train_one_step(vae, images)
    mean = vae.likelihood.mean_image(vae.decoder(tf.zeros([2, vae.latent_dim])))
    assert mean.shape == (2, 32, 32, 3)
