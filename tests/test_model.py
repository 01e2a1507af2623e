"""Tests for tfvae.model: the negative ELBO, KL estimators, training, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tests.conftest import tiny_images, tiny_vae
from tfvae import model, noise, priors

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
    eps = noise.normal_samples(1, tf.constant([2, 1]), z_seed)[0].numpy()
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
    prior = vae.prior_distribution()
    estimates = (q.log_prob(z) - prior.log_prob(z)).numpy()  # [samples, batch]
    analytic = tfd.kl_divergence(q, prior).numpy()
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
    elbo = -tf.reduce_mean(tf.reshape(recon, [4000, 2]), 0) - tfd.kl_divergence(
        q, vae.prior_distribution()
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
    with pytest.raises(ValueError, match="kl must be one of analytic, monte_carlo. "):
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
        {"likelihood": "logistic_mixture", "mixture_components": 2},
        {"latent_dim": (3, 2), "kl": "monte_carlo", "objective": "iwae"},
        {"prior": "vamp", "prior_components": 3, "kl": "monte_carlo"},
        {"prior": "mog", "prior_components": 3, "kl": "monte_carlo", "beta": 0.5},
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


def _normal_log_density(z, loc, scale):
    return np.sum(
        -0.5 * ((z - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi),
        axis=-1,
    )


def _bernoulli_log_mass(x, logits):
    return np.sum(x * logits - np.log1p(np.exp(logits)), axis=(-3, -2, -1))


def _diag_parameters(posterior):
    return posterior.loc.numpy(), posterior.stddev().numpy()


@pytest.mark.parametrize("latent_dim", [(3,), (3, 2)])
def test_iwae_loss_is_a_hand_computed_logmeanexp(tmp_path, latent_dim):
    """The K-sample bound written out in numpy from the networks' outputs."""
    vae = tiny_vae(tmp_path, latent_dim=latent_dim, kl="monte_carlo", objective="iwae")
    images = tiny_images(3, seed=4)
    seed, num_samples = tf.constant([3, 8], tf.int64), 5
    terms, chain = vae.objective_terms(images, seed, num_samples=num_samples)
    x, _ = vae.observe_and_encode(images, noise.split_seed(seed)[0])
    x = x.numpy()

    def shaped(v):
        return np.reshape(v, [num_samples, 3, *np.shape(v)[1:]])

    zs = [z.numpy() for z in chain.zs]
    log_w = _bernoulli_log_mass(
        x, shaped(vae.decoder(chain.zs[0]).distribution.logits.numpy())
    )
    loc, scale = _diag_parameters(vae.encoder(x))
    log_w -= _normal_log_density(shaped(zs[0]), loc, scale)
    for layer in range(1, len(latent_dim)):
        loc, scale = _diag_parameters(
            vae.upper_encoders[layer - 1](chain.zs[layer - 1])
        )
        log_w -= shaped(_normal_log_density(zs[layer], loc, scale))
        loc, scale = _diag_parameters(vae.upper_decoders[layer - 1](chain.zs[layer]))
        log_w += shaped(_normal_log_density(zs[layer - 1], loc, scale))
    log_w += shaped(_normal_log_density(zs[-1], 0.0, 1.0))
    expected = -(np.log(np.mean(np.exp(log_w.astype(np.float64)), axis=0)))

    np.testing.assert_allclose(terms["loss"], expected, rtol=1e-4)
    # The true -ELBO is the average of the K samples' -log w.
    np.testing.assert_allclose(terms["neg_elbo"], -log_w.mean(axis=0), rtol=1e-4)


def test_iwae_with_one_sample_is_the_elbo(tmp_path):
    images = tiny_images(4, seed=5)
    seed = tf.constant([1, 2], tf.int64)
    iwae = tiny_vae(tmp_path, kl="monte_carlo", objective="iwae")
    terms, _ = iwae.objective_terms(images, seed)
    np.testing.assert_allclose(terms["loss"], terms["neg_elbo"], rtol=1e-6)
    # And with K > 1 the bound is tighter than the average ELBO.
    terms, _ = iwae.objective_terms(images, seed, num_samples=50)
    assert np.all(terms["loss"].numpy() < terms["neg_elbo"].numpy())


def test_a_kl_warmup_anneals_the_iwae_weights_but_not_the_reported_elbo(tmp_path):
    """During warm-up, log w = log p(x|z) + w * (log p(z) - log q(z|x))."""
    vae = tiny_vae(tmp_path, latent_dim=(3, 2), kl="monte_carlo", objective="iwae")
    images, seed = tiny_images(4, seed=7), tf.constant([5, 6], tf.int64)
    exact, chain = vae.objective_terms(images, seed, num_samples=6)
    vae.kl_weight.assign(0.3)
    annealed, _ = vae.objective_terms(images, seed, num_samples=6)
    latent = (tf.add_n(chain.log_p) - tf.add_n(chain.log_q)).numpy()
    log_w = chain.log_px.numpy() + 0.3 * latent
    expected = -np.log(np.mean(np.exp(log_w.astype(np.float64)), axis=0))
    np.testing.assert_allclose(annealed["loss"], expected, rtol=1e-5)
    assert not np.allclose(annealed["loss"], exact["loss"])
    np.testing.assert_allclose(annealed["neg_elbo"], exact["neg_elbo"], rtol=1e-6)


def _seeded_vae(tmp_path, **overrides):
    keras.utils.set_random_seed(0)
    return tiny_vae(tmp_path, **overrides)


def test_beta_and_free_bits_change_the_loss_but_not_the_reported_elbo(tmp_path):
    images, seed = tiny_images(4, seed=6), tf.constant([4, 4], tf.int64)
    plain, _ = _seeded_vae(tmp_path, latent_dim=3).objective_terms(images, seed)
    terms, _ = _seeded_vae(tmp_path, latent_dim=3, beta=0.25).objective_terms(
        images, seed
    )
    np.testing.assert_allclose(terms["neg_elbo"], plain["neg_elbo"], rtol=1e-6)
    np.testing.assert_allclose(
        terms["loss"], terms["reconstruction"] + 0.25 * terms["kl"], rtol=1e-5
    )
    floor = float(plain["kl"].numpy().max()) + 1.0
    terms, _ = _seeded_vae(tmp_path, latent_dim=3, free_bits=floor).objective_terms(
        images, seed
    )
    np.testing.assert_allclose(terms["loss"], terms["reconstruction"] + floor)
    np.testing.assert_allclose(terms["neg_elbo"], plain["neg_elbo"], rtol=1e-6)


def _gradients(vae, images):
    """Returns [(is an encoder weight, gradient)] of one train_step's update."""
    vae.compile(optimizer=keras.optimizers.SGD(1.0))
    before = [w.numpy() for w in vae.trainable_weights]
    vae.train_step(images)
    encoder = {id(w) for w in vae.encoder.trainable_weights}
    return [
        (id(w) in encoder, old - w.numpy())
        for w, old in zip(vae.trainable_weights, before, strict=True)
    ]


def test_dreg_changes_only_the_encoder_gradient(tmp_path):
    images = tiny_images(8, seed=7)
    settings = dict(kl="monte_carlo", objective="iwae", train_samples=4, latent_dim=3)
    standard = _gradients(_seeded_vae(tmp_path, **settings), images)
    dreg = _gradients(_seeded_vae(tmp_path, gradient="dreg", **settings), images)
    assert [e for e, _ in standard] == [e for e, _ in dreg]
    assert any(e for e, _ in standard) and not all(e for e, _ in standard)
    for (encoder, a), (_, b) in zip(standard, dreg, strict=True):
        if encoder:
            assert not np.allclose(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_two_layers_sample_top_down_and_decode_the_bottom_latent(tmp_path):
    vae = tiny_vae(tmp_path, latent_dim=(4, 2), kl="monte_carlo")
    assert vae.latent_dims == (4, 2) and vae.latent_dim == 4
    assert vae.prior.latent_dim == 2
    seed = tf.constant([1, 1], tf.int64)
    z = vae.sample_latent(6, seed)
    assert z.shape == (6, 4)
    np.testing.assert_array_equal(z, vae.sample_latent(6, seed))
    assert vae.decode_mean(z).shape == (6, 8, 8, 1)
    # z1 is drawn from p(z1|z2), not from the prior: its spread follows the
    # network, so it differs from a standard-normal draw with the same seed.
    assert not np.allclose(z[:, :2], tf.random.stateless_normal([6, 2], seed))


@pytest.mark.parametrize(
    "settings, problem",
    [
        ({"kl": "analytic", "prior": "vamp"}, "kl='analytic' needs"),
        ({"objective": "iwae", "beta": 2.0}, "drop beta and free_bits"),
        ({"objective": "iwae", "free_bits": 1.0}, "Received: beta=1.0 free_bits=1.0"),
        ({"gradient": "dreg"}, "gradient='dreg' is a gradient of the IWAE bound"),
        (
            {"objective": "iwae", "gradient": "dreg", "prior": "vamp"},
            "not prior='vamp'",
        ),
        ({"prior": "vamp", "num_classes": 10}, "conditional=True cannot use prior="),
        ({"upper_encoders": "one"}, "L - 1 upper encoders"),
    ],
)
def test_the_model_refuses_settings_that_do_not_fit(tmp_path, settings, problem):
    vae = tiny_vae(tmp_path, latent_dim=2)
    parts = {
        "encoder": vae.encoder,
        "decoder": vae.decoder,
        "prior": vae.prior,
        "image_shape": vae.image_shape,
        "kl": "monte_carlo",
        "seed": 0,
    }
    if settings.get("prior") == "vamp":
        settings["prior"] = priors.VampPrior(2, 3, vae.image_shape)
    if settings.get("upper_encoders"):
        settings["upper_encoders"] = [vae.encoder]
    with pytest.raises(ValueError, match=problem):
        model.VAE(**{**parts, **settings})


def test_a_vae_defaults_to_the_analytic_kl_and_seed_0(tmp_path):
    vae = tiny_vae(tmp_path, latent_dim=2)
    plain = model.VAE(vae.encoder, vae.decoder, vae.prior, vae.image_shape)
    assert (plain.kl, plain.seed, plain.built) == ("analytic", 0, True)
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*32\)"):
        model.VAE(vae.encoder, vae.decoder, vae.prior, vae.image_shape, seed=-1)
