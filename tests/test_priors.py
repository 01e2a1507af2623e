"""Tests for tfvae.priors: each prior's density and its sampler agree."""

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import tiny_vae
from tfvae import priors


def _vae_prior(tmp_path, prior):
    vae = tiny_vae(
        tmp_path, latent_dim=2, prior=prior, prior_components=3, kl="monte_carlo"
    )
    # Spread the components apart, so a sampler that ignored the weights or
    # the components would be caught.
    for weight in vae.prior.trainable_weights:
        weight.assign(
            np.random.default_rng(0).normal(size=weight.shape).astype(np.float32) * 2
        )
    return vae


@pytest.mark.parametrize("prior", ["standard", "mog", "vamp"])
def test_samples_follow_the_prior_density(tmp_path, prior):
    vae = _vae_prior(tmp_path, prior)
    distribution = vae.prior_distribution()
    samples = vae.prior.sample(40_000, tf.constant([1, 2], tf.int64), vae.encoder)
    assert samples.shape == (40_000, 2)
    np.testing.assert_allclose(
        samples.numpy().mean(axis=0), distribution.mean(), atol=0.05
    )
    np.testing.assert_allclose(
        np.cov(samples.numpy().T), distribution.covariance(), atol=0.1
    )


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_the_learned_density_integrates_to_one(tmp_path, prior):
    vae = _vae_prior(tmp_path, prior)
    axis = np.linspace(-12, 12, 301, dtype=np.float32)
    grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    density = np.exp(vae.prior_distribution().log_prob(grid).numpy())
    assert density.sum() * (axis[1] - axis[0]) ** 2 == pytest.approx(1.0, abs=1e-3)


def test_the_same_seed_gives_the_same_samples(tmp_path):
    vae = _vae_prior(tmp_path, "vamp")
    seed = tf.constant([3, 4], tf.int64)
    a = vae.prior.sample(5, seed, vae.encoder)
    np.testing.assert_array_equal(a, vae.prior.sample(5, seed, vae.encoder))
    assert not np.allclose(a, vae.prior.sample(5, seed + 1, vae.encoder))


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda: priors.StandardNormal(0), "latent_dim must be a positive integer"),
        (lambda: priors.MixtureOfGaussians(2, 0), "components must be a positive"),
        (lambda: priors.VampPrior(2, -1, (8, 8, 1)), "Received: components=-1"),
    ],
)
def test_bad_sizes_are_refused(make, problem):
    with pytest.raises(ValueError, match=problem):
        make()


def test_the_vamp_prior_needs_the_encoder():
    prior = priors.VampPrior(2, 3, (8, 8, 1))
    prior.build(None)
    with pytest.raises(ValueError, match="needs the encoder"):
        prior.distribution()


@pytest.mark.parametrize("prior", ["standard", "mog", "vamp"])
def test_log_prob_is_the_distributions(tmp_path, prior):
    vae = _vae_prior(tmp_path, prior)
    z = tf.random.stateless_normal([7, 5, 2], [1, 1]) * 3
    np.testing.assert_allclose(
        vae.prior.log_prob(z, vae.encoder),
        vae.prior_distribution().log_prob(z),
        rtol=1e-5,
        atol=1e-4,
    )


def test_a_vamp_prior_over_vectors_has_free_pseudo_inputs():
    bounded = priors.VampPrior(2, 3, (8, 8, 1))
    free = priors.VampPrior(2, 3, (5,), bounded=False)
    for prior in bounded, free:
        prior.build(None)
    assert free.pseudo_inputs().shape == (3, 5)
    np.testing.assert_array_equal(free.pseudo_inputs(), free.trainable_weights[0])
    assert (free.pseudo_inputs().numpy() < 0).any()
    pixels = bounded.pseudo_inputs().numpy()
    assert pixels.shape == (3, 8, 8, 1) and ((0 < pixels) & (pixels < 1)).all()
    again = priors.VampPrior.from_config(free.get_config())
    assert (again.pseudo_shape, again.bounded) == ((5,), False)
