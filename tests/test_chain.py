"""Tests for tfvae.chain's "vampprior" hierarchy (Tomczak & Welling's HVAE):
its densities, its draws from the model, its refusals, and a run to export."""

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import TINY_SHAPE, tiny_config, tiny_images, tiny_vae
from tfvae import chain, errors, evaluation, noise, run_dir, training

HVAE = dict(
    hierarchy="vampprior",
    latent_dim=(3, 2),
    kl="monte_carlo",
    prior="vamp",
    prior_components=4,
)


def test_the_hvae_takes_z2_from_x_and_z1_from_x_and_z2(tmp_path):
    vae = tiny_vae(tmp_path, **HVAE)
    assert vae.latent_dims == (3, 2) and vae.latent_dim == 5
    # The encoder gives z2, so the VampPrior's components are q(z2|u_k).
    assert vae.encoder.head.latent_dim == vae.prior.latent_dim == 2
    assert vae.layer_encoders == [vae.upper_encoders[0], vae.encoder]
    assert vae.upper_encoders[0].condition == "vector"


def test_log_weights_are_the_hvaes_densities_at_the_drawn_z(tmp_path):
    vae = tiny_vae(tmp_path, **HVAE)
    rng = np.random.default_rng(0)
    for weight in vae.trainable_weights:
        weight.assign(0.3 * rng.normal(size=weight.shape).astype(np.float32))
    x, q2 = vae.observe_and_encode(tiny_images(4), noise.seed(1, 2))
    drawn = chain.draw(vae, x, q2, 3, noise.seed(1, 3))
    z1, z2 = drawn.zs
    flat_x = tf.tile(x, [3, 1, 1, 1])  # Sample-major, as the chain's rows.
    encoder_input = vae.likelihood.encoder_input(flat_x)
    q2_flat = vae.encoder(encoder_input)
    q1 = vae.upper_encoders[0](encoder_input, z2)
    expected = (
        vae.decode(tf.concat([z1, z2], axis=-1)).log_prob(flat_x)
        + vae.upper_decoders[0](z2).log_prob(z1)
        + vae.prior.log_prob(z2, vae.encoder)
        - q1.log_prob(z1)
        - q2_flat.log_prob(z2)
    )
    np.testing.assert_allclose(
        drawn.log_weights().numpy().ravel(), expected.numpy(), rtol=1e-4, atol=1e-4
    )


def test_samples_and_means_give_the_decoder_both_layers(tmp_path):
    vae = tiny_vae(tmp_path, **HVAE)
    z = vae.sample_latent(6, noise.seed(0, 1))
    assert z.shape == (6, 5)
    # z1 comes from p(z1|z2) at the z2 drawn from the prior.
    z2 = vae.prior.sample(6, noise.seed(0, 1), vae.encoder)
    np.testing.assert_allclose(z[:, 3:].numpy(), z2.numpy(), rtol=1e-6)
    means = vae.posterior_mean(tiny_images(4))
    assert means.shape == (4, 5)
    assert vae.decode_mean(means).shape == (4, *TINY_SHAPE)


@pytest.mark.parametrize(
    "settings, problem",
    [
        ({"latent_dim": (3,)}, "two-layer HVAE"),
        ({"latent_dim": (3, 2, 2)}, "two-layer HVAE"),
        ({"conditional": True, "prior": "standard"}, "no --conditional"),
        ({"hierarchy": "iwae"}, "needs --hierarchy=vampprior"),
    ],
)
def test_the_hvae_refuses_what_it_cannot_be(tmp_path, settings, problem):
    with pytest.raises(errors.UsageError, match=problem):
        tiny_vae(tmp_path, **{**HVAE, **settings})


def test_an_hvae_trains_evaluates_and_exports(tmp_path):
    # Unbinarized pixels: reconstruct is deterministic.
    config = tiny_config(tmp_path, epochs=1, export=True, binarize=False, **HVAE)
    metrics = training.train_and_evaluate(config)
    assert 0 < metrics["test_neg_elbo"] < 1000
    # The IWAE bound through the export (its log_weights), and the pictures.
    evaluated = evaluation.evaluate(
        metrics["export_path"],
        tiny_images(8).numpy(),
        num_samples=10,
        output_dir=str(tmp_path / "pictures"),
    )
    assert 0 < evaluated["nll"] < evaluated["neg_elbo"]
    loaded = tf.saved_model.load(metrics["export_path"]).signatures
    images = tiny_images(3)
    encoded = loaded["encode"](images=images)
    assert encoded["z"].shape == (3, 3) and encoded["z_2"].shape == (3, 2)
    # decode takes [z1, z2]; reconstruct decodes both layers' means.
    _, _, vae = run_dir.load_run(config.model_dir)
    z = tf.concat([encoded["z"], encoded["z_2"]], axis=-1)
    np.testing.assert_allclose(
        loaded["decode"](z=z)["mean"].numpy(), vae.decode_mean(z).numpy(), atol=1e-5
    )
    np.testing.assert_allclose(
        loaded["reconstruct"](images=images)["images"].numpy(),
        vae.decode_mean(vae.posterior_mean(images)).numpy(),
        atol=1e-5,
    )
    seed = tf.constant([1, 2], tf.int64)
    sampled = loaded["sample"](num_samples=tf.constant(2), seed=seed)
    assert sampled["images"].shape == (2, *TINY_SHAPE)
    weights = loaded["log_weights"](
        images=images, num_samples=tf.constant(4), seed=seed
    )["log_weights"]
    assert weights.shape == (3, 4) and np.isfinite(weights.numpy()).all()
