"""Tests for tfvae.model: the negative ELBO, KL estimators, training, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tests.conftest import tiny_vae
from tfvae import model, noise

tfd = tfp.distributions


def _softplus(v):
    return np.log1p(np.exp(v))


def test_neg_elbo_matches_a_hand_computation(tmp_path):
    """1-pixel image, 1 hidden unit, 1 latent: the ELBO written out in numpy."""
    vae = tiny_vae(tmp_path, (1, 1, 1), hidden_units=(1,), latent_dim=1, binarize=False)
    rng = np.random.default_rng(0)
    for weight in vae.trainable_weights:
        weight.assign(rng.normal(size=weight.shape).astype(np.float32))
    images = tf.constant([[[[51]]], [[[204]]]], tf.uint8)
    seed = tf.constant([7, 9], tf.int64)
    reconstruction, kl = vae.neg_elbo_terms(images, seed)

    enc_dense = vae.encoder.body.layers[1]
    projection = vae.encoder.head.projection
    dec_dense, dec_out = vae.decoder.body.layers[0], vae.decoder.body.layers[1]
    x = images.numpy().reshape(2, 1) / 255.0
    hidden = _softplus(x @ enc_dense.kernel.numpy() + enc_dense.bias.numpy())
    params = hidden @ projection.kernel.numpy() + projection.bias.numpy()
    loc, scale = params[:, :1], _softplus(params[:, 1:]) + 1e-4
    _, z_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    eps = noise.normal(tf.constant([2, 1]), z_seed).numpy()
    z = loc + scale * eps
    hidden = _softplus(z @ dec_dense.kernel.numpy() + dec_dense.bias.numpy())
    logits = hidden @ dec_out.kernel.numpy() + dec_out.bias.numpy()
    log_p = x * -_softplus(-logits) + (1 - x) * -_softplus(logits)
    expected_kl = 0.5 * (scale**2 + loc**2 - 1.0) - np.log(scale)

    np.testing.assert_allclose(reconstruction, -log_p[:, 0], rtol=1e-4)
    np.testing.assert_allclose(kl, expected_kl[:, 0], rtol=1e-4)


@pytest.mark.parametrize("posterior", ["diag", "full"])
def test_monte_carlo_kl_agrees_with_analytic_kl(posterior, tmp_path):
    vae = tiny_vae(tmp_path, posterior=posterior, latent_dim=3)
    images = tf.constant(
        np.random.default_rng(1).integers(0, 256, (2, 8, 8, 1)), tf.uint8
    )
    _, q = vae.observe_and_encode(images, tf.constant([0, 0], tf.int64))
    z = q.sample(20_000, seed=[3, 4])
    estimates = model.monte_carlo_kl(
        q, vae.prior.distribution(), z
    ).numpy()  # [samples, batch]
    analytic = model.analytic_kl(q, vae.prior.distribution(), None).numpy()
    standard_error = estimates.std(axis=0) / np.sqrt(len(estimates))
    assert np.all(np.abs(estimates.mean(axis=0) - analytic) < 4 * standard_error + 1e-3)


def test_neg_elbo_is_deterministic_per_seed(tmp_path):
    vae = tiny_vae(tmp_path)
    images = tf.constant(
        np.random.default_rng(2).integers(0, 256, (4, 8, 8, 1)), tf.uint8
    )
    a = vae.neg_elbo_terms(images, tf.constant([1, 1], tf.int64))
    b = vae.neg_elbo_terms(images, tf.constant([1, 1], tf.int64))
    c = vae.neg_elbo_terms(images, tf.constant([1, 2], tf.int64))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.allclose(a[0], c[0])


def test_log_weights_average_to_the_elbo(tmp_path):
    vae = tiny_vae(tmp_path, latent_dim=3)
    images = tf.constant(
        np.random.default_rng(3).integers(0, 256, (2, 8, 8, 1)), tf.uint8
    )
    x, q = vae.observe_and_encode(images, tf.constant([5, 5], tf.int64))
    log_w = vae.log_weights(x, q, 4000, tf.constant([6, 6], tf.int64)).numpy()
    assert log_w.shape == (4000, 2)
    # E_q[log w] is the ELBO: -E[log p(x|z)] + KL, with the analytic KL.
    z = q.sample(4000, seed=[8, 8])
    recon = -vae.decoder(tf.reshape(z, [-1, 3])).log_prob(tf.tile(x, [4000, 1, 1, 1]))
    elbo = -tf.reduce_mean(tf.reshape(recon, [4000, 2]), 0) - model.analytic_kl(
        q, vae.prior.distribution(), z
    )
    np.testing.assert_allclose(log_w.mean(axis=0), elbo, rtol=0.01)


def test_training_lowers_the_negative_elbo(tmp_path):
    keras.utils.set_random_seed(0)
    vae = tiny_vae(tmp_path)
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    images = np.zeros((64, 8, 8, 1), np.uint8)
    images[:32, 2, :, 0] = 255
    images[32:, :, 5, 0] = 255
    ds = tf.data.Dataset.from_tensor_slices(images).batch(16)
    history = vae.fit(ds, epochs=15, verbose=0, shuffle=False).history["neg_elbo"]
    assert history[-1] < 0.5 * history[0]
    assert vae.noise_step.numpy() == 15 * 4


def test_unknown_kl_estimator_is_refused(tmp_path):
    vae = tiny_vae(tmp_path)
    with pytest.raises(ValueError, match="kl='exact'"):
        model.VAE(
            vae.encoder, vae.decoder, vae.prior, vae.image_shape, kl="exact", seed=0
        )


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"network": "conv", "hidden_units": (8,), "posterior": "full"},
        {"likelihood": "gaussian", "kl": "monte_carlo"},
        {"likelihood": "categorical"},
    ],
)
def test_keras_saving_round_trips_the_model(tmp_path, settings):
    vae = tiny_vae(tmp_path, **settings)
    vae.noise_step.assign(41)
    images = tf.constant(
        np.random.default_rng(2).integers(0, 256, (4, 8, 8, 1)), tf.uint8
    )
    path = str(tmp_path / "vae.keras")
    vae.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is model.VAE and loaded.latent_dim == vae.latent_dim
    assert int(loaded.noise_step.numpy()) == 41
    seed = loaded.next_seed()
    assert seed.numpy().tolist() == [0, 42]
    expected = sum(vae.neg_elbo_terms(images, seed))
    np.testing.assert_allclose(sum(loaded.neg_elbo_terms(images, seed)), expected)
