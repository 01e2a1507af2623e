"""The VAE: encoder q(z|x), decoder p(x|z), prior p(z), and the negative ELBO.

One batch of raw `uint8` images `[batch, H, W, C]` goes through
`VAE.neg_elbo_terms`, the only place the ELBO is written:

    x      = likelihood.observe(images)          # binarize / scale / keep ints
    q      = encoder(likelihood.encoder_input(x))  # q(z|x), event [latent_dim]
    z      = q.loc + q.scale @ eps                 # reparameterized sample
    -ELBO  = -log p(x|z) + KL(q(z|x) || p(z))      # nats per example, [batch]

`train_step` and `test_step` both call it.
"""

import math
import os
from collections.abc import Callable

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import config as config_lib
from tfvae import data, heads, networks, noise
from tfvae.config import Config

tfd = tfp.distributions

# The latest weights of a run, saved at the end of every epoch.
WEIGHTS_FILENAME = "model.weights.h5"

POSTERIORS: dict[str, Callable[[Config], heads.PosteriorHead]] = {
    "diag": lambda c: heads.NormalDiagHead(c.latent_dim, name="posterior"),
    "full": lambda c: heads.NormalTriLHead(c.latent_dim, name="posterior"),
}

LIKELIHOODS: dict[str, Callable[[Config], heads.LikelihoodHead]] = {
    "bernoulli": lambda c: heads.BernoulliHead(c.binarize, name="likelihood"),
    "continuous_bernoulli": lambda c: heads.ContinuousBernoulliHead(name="likelihood"),
    "gaussian": lambda c: heads.GaussianHead(c.gaussian_scale, name="likelihood"),
    "categorical": lambda c: heads.CategoricalHead(name="likelihood"),
}

NETWORKS: dict[str, Callable[..., tuple[keras.Sequential, keras.Sequential]]] = {
    "mlp": lambda c, shape, k: networks.mlp(shape, k, c.hidden_units, c.activation),
    "conv": lambda c, shape, k: networks.conv(
        shape, k, c.hidden_units, c.activation, c.conv_filters
    ),
}


def analytic_kl(q: tfd.Distribution, prior: tfd.Distribution, z: tf.Tensor):
    """Returns KL(q || prior) in closed form, `[batch]`."""
    del z
    return tfd.kl_divergence(q, prior)


def monte_carlo_kl(q: tfd.Distribution, prior: tfd.Distribution, z: tf.Tensor):
    """Returns the one-sample estimate log q(z) - log p(z) at z ~ q, `[batch]`."""
    return q.log_prob(z) - prior.log_prob(z)


KL_ESTIMATORS = {"analytic": analytic_kl, "monte_carlo": monte_carlo_kl}


class Encoder(keras.Model):
    """x `[batch, H, W, C]` float in [0, 1] -> q(z|x), event shape `[latent_dim]`."""

    def __init__(self, body: keras.Layer, head: heads.PosteriorHead, **kwargs):
        super().__init__(**kwargs)
        self.body = body
        self.head = head

    def call(self, x):
        return self.head(self.body(x))


class Decoder(keras.Model):
    """z `[batch, latent_dim]` -> p(x|z), event shape `[H, W, C]`."""

    def __init__(self, body: keras.Layer, head: heads.LikelihoodHead, **kwargs):
        super().__init__(**kwargs)
        self.body = body
        self.head = head

    def call(self, z):
        return self.head(self.body(z))


class VAE(keras.Model):
    """A variational autoencoder trained by minimizing the negative ELBO.

    Randomness (binarization and the reparameterization noise) comes from
    stateless ops seeded by `(seed, step)`, where `step` is a counter saved
    with the weights: runs with the same seed agree, a resumed run continues
    the sequence, and the noise does not depend on the number of replicas.
    """

    def __init__(
        self,
        encoder: Encoder,
        decoder: Decoder,
        latent_dim: int,
        kl: str,
        seed: int,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kl not in KL_ESTIMATORS:
            raise ValueError(
                f"kl must be one of {sorted(KL_ESTIMATORS)}. Received: {kl=}"
            )
        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = latent_dim
        self.kl = kl
        self.seed = seed
        self.noise_step = self.add_weight(
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            # Every replica computes the same next value; keep one.
            aggregation="only_first_replica",
            name="noise_step",
        )
        self.neg_elbo_tracker = keras.metrics.Mean(name="neg_elbo")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")

    @property
    def likelihood(self) -> heads.LikelihoodHead:
        return self.decoder.head

    @property
    def prior(self) -> tfd.Distribution:
        """p(z) = N(0, I), event shape `[latent_dim]`."""
        return tfd.MultivariateNormalDiag(
            loc=tf.zeros([self.latent_dim]), scale_diag=tf.ones([self.latent_dim])
        )

    @property
    def metrics(self):
        return [self.neg_elbo_tracker, self.reconstruction_tracker, self.kl_tracker]

    def next_seed(self) -> tf.Tensor:
        """Returns a fresh stateless seed, int64 `[2]`, and advances the counter."""
        step = self.noise_step.assign_add(1)
        return tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])

    def observe_and_encode(
        self, images: tf.Tensor, observe_seed: tf.Tensor
    ) -> tuple[tf.Tensor, tfd.Distribution]:
        """Returns (x, q): observations `[batch, H, W, C]` and q(z|x).

        `images` are raw `uint8 [batch, H, W, C]`; `observe_seed` (int `[2]`)
        drives stochastic observations (dynamic binarization).
        """
        x = self.likelihood.observe(images, observe_seed)
        return x, self.encoder(self.likelihood.encoder_input(x))

    @staticmethod
    def split_seed(seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns (observe_seed, z_seed), each int64 `[2]`, from one seed `[2]`.

        The one convention for turning a seed into the observation noise and
        the z noise: training, evaluation and the exported signatures share it.
        """
        seeds = tf.random.experimental.stateless_split(seed, num=2)
        return tf.cast(seeds[0], tf.int64), tf.cast(seeds[1], tf.int64)

    def posterior_sample(
        self, images: tf.Tensor, seed: tf.Tensor
    ) -> tuple[tf.Tensor, tfd.Distribution, tf.Tensor]:
        """Returns (x, q, z): observations, q(z|x) and one z ~ q, `[batch, latent_dim]`.

        `images` are raw `uint8 [batch, H, W, C]`; `seed` is int `[2]`, split
        by `split_seed`.
        """
        observe_seed, z_seed = self.split_seed(seed)
        x, q = self.observe_and_encode(images, observe_seed)
        z = self.encoder.head.reparameterize(q, noise.normal(tf.shape(q.loc), z_seed))
        return x, q, z

    def neg_elbo_terms(
        self, images: tf.Tensor, seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns (reconstruction, kl), each `[batch]` in nats.

        reconstruction = -log p(x|z) at one z ~ q(z|x) (the distortion) and
        kl = KL(q(z|x) || p(z)) (the rate); their sum is the negative ELBO.
        `images` are raw `uint8 [batch, H, W, C]`; `seed` is int `[2]`.
        """
        x, q, z = self.posterior_sample(images, seed)
        reconstruction = -self.decoder(z).log_prob(x)
        kl = KL_ESTIMATORS[self.kl](q, self.prior, z)
        return reconstruction, kl

    def log_weights(
        self, x: tf.Tensor, q: tfd.Distribution, num_samples: int, z_seed: tf.Tensor
    ) -> tf.Tensor:
        """Returns importance log-weights log p(x, z_k) - log q(z_k|x), `[k, batch]`.

        `x` and `q` come from `observe_and_encode`; z_k ~ q for k =
        `num_samples`, drawn with the stateless `z_seed` (int `[2]`).
        logmeanexp over k is the IWAE bound on log p(x) (Burda et al. 2015);
        callers average chunks of k to fit large k in memory.
        """
        batch = tf.shape(q.loc)[0]
        eps = tf.random.stateless_normal(
            [num_samples, batch, self.latent_dim], z_seed, alg=noise.algorithm()
        )
        z = self.encoder.head.reparameterize(q, eps)
        flat_z = tf.reshape(z, [-1, self.latent_dim])
        flat_x = tf.repeat(x[tf.newaxis], num_samples, axis=0)
        flat_x = tf.reshape(flat_x, tf.concat([[-1], tf.shape(x)[1:]], axis=0))
        log_px_given_z = tf.reshape(
            self.decoder(flat_z).log_prob(flat_x), [num_samples, batch]
        )
        return log_px_given_z + self.prior.log_prob(z) - q.log_prob(z)

    def posterior_mean(self, images: tf.Tensor) -> tf.Tensor:
        """Returns E_q[z|x], `[batch, latent_dim]`, for raw `uint8` images.

        Stochastic observations use the fixed seed `[seed, 0]`, so pictures
        of a run are reproducible.
        """
        _, q = self.observe_and_encode(images, tf.constant([self.seed, 0], tf.int64))
        return q.mean()

    def decode_mean(self, z: tf.Tensor) -> tf.Tensor:
        """Returns E[x|z] as float pixels in [0, 1], `[batch, H, W, C]`."""
        return self.likelihood.mean_image(self.decoder(z))

    def call(self, images):
        """Returns p(x|z) at z = the posterior mean of `images` (uint8)."""
        return self.decoder(self.posterior_mean(images))

    def train_step(self, images):
        with tf.GradientTape() as tape:
            reconstruction, kl = self.neg_elbo_terms(images, self.next_seed())
            # Sum over this replica's examples / GLOBAL batch size: the
            # optimizer sums gradients over replicas, so N replicas make the
            # same update as one replica holding the whole batch.
            loss = tf.nn.compute_average_loss(reconstruction + kl)
            # A LossScaleOptimizer (mixed_float16) scales the loss up so small
            # float16 gradients do not underflow, and unscales them in
            # apply_gradients; other optimizers return the loss as is.
            scaled_loss = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled_loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights, strict=True))
        return self._update_metrics(reconstruction, kl)

    def test_step(self, images):
        reconstruction, kl = self.neg_elbo_terms(images, self.next_seed())
        return self._update_metrics(reconstruction, kl)

    def _update_metrics(self, reconstruction, kl):
        self.neg_elbo_tracker.update_state(reconstruction + kl)
        self.reconstruction_tracker.update_state(reconstruction)
        self.kl_tracker.update_state(kl)
        results = {m.name: m.result() for m in self.metrics}
        if isinstance(
            self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy
        ):
            # Keras 3 averages step logs across workers along axis 0, which a
            # scalar lacks (tensorflow/tensorflow#72388). Epoch logs come from
            # the metrics themselves, synced over all replicas.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results


def build_vae(config: Config, image_shape: tuple[int, int, int]) -> VAE:
    """Builds (and creates the weights of) the VAE that `config` describes."""
    likelihood = LIKELIHOODS[config.likelihood](config)
    encoder_body, decoder_body = NETWORKS[config.network](
        config, tuple(image_shape), likelihood.params_per_value
    )
    vae = VAE(
        Encoder(encoder_body, POSTERIORS[config.posterior](config), name="encoder"),
        Decoder(decoder_body, likelihood, name="decoder"),
        latent_dim=config.latent_dim,
        kl=config.kl,
        seed=config.seed,
        name="vae",
    )
    vae(tf.zeros([1, *image_shape], tf.uint8))
    return vae


def load_vae(model_dir: str) -> tuple[Config, data.DatasetInfo, VAE]:
    """Rebuilds a trained run's VAE from its model_dir, with no dataset needed.

    Returns the run's `Config`, its `DatasetInfo` and the VAE with the latest
    weights. Works whatever strategy (and device count) trained it.
    """
    config = config_lib.load(model_dir)
    info = data.load_info(model_dir)
    weights = os.path.join(model_dir, WEIGHTS_FILENAME)
    if not os.path.exists(weights):
        raise FileNotFoundError(
            f"{weights} does not exist: the run in {model_dir} has not finished "
            "an epoch yet. Train it first (python -m tfvae.train ...)."
        )
    vae = build_vae(config, info.image_shape)
    vae.load_weights(weights)
    return config, info, vae


def bits_per_dim(nats_per_example: float, image_shape: tuple[int, ...]) -> float:
    """Converts nats per image into bits per pixel value."""
    return nats_per_example / (math.prod(image_shape) * math.log(2.0))
