"""Tests for tfvae.adapters: a Keras VAE and its export evaluate alike."""

import numpy as np
import tensorflow as tf

from tests.conftest import TINY_SHAPE, tiny_config, tiny_images, tiny_vae
from tfvae import adapters, data, saved_model


def test_per_image_noise_does_not_depend_on_the_rest_of_the_batch(tmp_path):
    adapter = adapters.VAEAdapter(tiny_vae(tmp_path), per_image_noise=True)
    batch, seed = tiny_images(6, seed=1), tf.constant([2, 5], tf.int64)
    alone = adapter.log_weights(batch[3:4], 20, seed, 1)
    np.testing.assert_allclose(
        adapter.log_weights(batch, 20, seed, 1)[:, 3:4], alone, rtol=1e-6
    )
    reordered = tf.reverse(batch, [0])
    np.testing.assert_allclose(
        adapter.neg_elbo_terms(reordered, seed)[0][::-1],
        adapter.neg_elbo_terms(batch, seed)[0],
        rtol=1e-6,
    )
    # Other chunks (and other batch seeds) still draw other z.
    assert not np.allclose(adapter.log_weights(batch, 20, seed, 2), alone)


def test_the_saved_model_adapter_matches_the_vae_adapter(tmp_path):
    # Binarized: the observation noise must be the export's too.
    config = tiny_config(tmp_path, latent_dim=2)
    vae = tiny_vae(tmp_path, latent_dim=2)
    info = data.DatasetInfo("tiny_images", TINY_SHAPE, 96, 40, 16)
    exported = adapters.SavedModelAdapter(
        saved_model.export(
            vae, str(tmp_path / "export"), config=config, dataset_info=info
        )
    )
    keras_path = adapters.VAEAdapter(vae, per_image_noise=True)
    batch, z = tiny_images(12, seed=8), tf.random.normal([5, 2])
    seed = tf.constant([7, 3], tf.int64)
    assert (exported.latent_dim, exported.discrete) == (2, False)
    assert exported.config == config
    for chunk in (0, 3):
        np.testing.assert_allclose(
            exported.log_weights(batch, 30, seed, chunk),
            keras_path.log_weights(batch, 30, seed, chunk),
            rtol=1e-5,
        )
    np.testing.assert_allclose(
        exported.neg_elbo_terms(batch, None),
        keras_path.neg_elbo_terms(batch, seed),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        exported.encode_mean(batch), keras_path.encode_mean(batch), atol=1e-5
    )
    np.testing.assert_allclose(
        exported.decode_mean(z), keras_path.decode_mean(z), atol=1e-6
    )
    # uint8 pixels: float32 round-off may move one across a rounding boundary.
    np.testing.assert_allclose(
        exported.reconstruction_grid(batch).numpy().astype(int),
        keras_path.reconstruction_grid(batch).numpy().astype(int),
        atol=1,
    )
    np.testing.assert_allclose(
        exported.prior_samples(9, 1), keras_path.prior_samples(9, 1), atol=1e-6
    )
