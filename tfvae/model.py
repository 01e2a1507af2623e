"""The VAE: encoder q(z|x), decoder p(x|z), prior p(z), and the negative ELBO.

One batch of raw `uint8` images `[batch, H, W, C]` goes through
`VAE.neg_elbo_terms`, the only place the ELBO is written:

    x      = likelihood.observe(images)          # binarize / scale / keep ints
    q      = encoder(likelihood.encoder_input(x))  # q(z|x), event [latent_dim]
    z      = q.loc + q.scale @ eps                 # reparameterized sample
    -ELBO  = -log p(x|z) + KL(q(z|x) || p(z))      # nats per example, [batch]

`train_step` and `test_step` both call it. `build_vae` makes a VAE from plain
settings (what `tfvae.train`'s flags hold); every part is a registered Keras
layer with a `get_config`, so `vae.save("vae.keras")` and
`keras.models.load_model` round-trip a model.
"""

import math
from collections.abc import Callable

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import heads, networks, noise, priors

tfd = tfp.distributions


def analytic_kl(q: tfd.Distribution, prior: tfd.Distribution, z: tf.Tensor):
    """Returns KL(q || prior) in closed form, `[batch]`."""
    del z
    return tfd.kl_divergence(q, prior)


def monte_carlo_kl(q: tfd.Distribution, prior: tfd.Distribution, z: tf.Tensor):
    """Returns the one-sample estimate log q(z) - log p(z) at z ~ q, `[batch]`."""
    return q.log_prob(z) - prior.log_prob(z)


KL_ESTIMATORS: dict[str, Callable] = {
    "analytic": analytic_kl,
    "monte_carlo": monte_carlo_kl,
}


def _serializable(cls):
    return keras.saving.register_keras_serializable(package="tfvae")(cls)


class _BodyAndHead(keras.Model):
    """A network body followed by a distribution head; serializes both."""

    def __init__(self, body: keras.Layer, head: keras.Layer, **kwargs):
        super().__init__(**kwargs)
        self.body = body
        self.head = head

    def call(self, inputs):
        return self.head(self.body(inputs))

    def get_config(self):
        return {
            "name": self.name,
            "body": keras.saving.serialize_keras_object(self.body),
            "head": keras.saving.serialize_keras_object(self.head),
        }

    @classmethod
    def from_config(cls, config):
        return cls(
            body=keras.saving.deserialize_keras_object(config["body"]),
            head=keras.saving.deserialize_keras_object(config["head"]),
            name=config["name"],
        )


@_serializable
class Encoder(_BodyAndHead):
    """x `[batch, H, W, C]` float in [0, 1] -> q(z|x), event shape `[latent_dim]`."""


@_serializable
class Decoder(_BodyAndHead):
    """z `[batch, latent_dim]` -> p(x|z), event shape `[H, W, C]`."""


@_serializable
class VAE(keras.Model):
    """A variational autoencoder trained by minimizing the negative ELBO.

    `prior` is a `tfvae.priors` layer; it owns the latent size. `image_shape`
    is (H, W, C) of the raw images. Randomness (binarization and the
    reparameterization noise) comes from stateless ops seeded by
    `(seed, step)`, where `step` is a counter saved with the weights: runs with
    the same seed agree, a resumed run continues the sequence, and the noise
    does not depend on the number of replicas (`tfvae.noise`).
    """

    def __init__(
        self,
        encoder: Encoder,
        decoder: Decoder,
        prior: keras.Layer,
        image_shape: tuple[int, int, int],
        kl: str,
        seed: int,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kl not in KL_ESTIMATORS:
            raise ValueError(
                f"kl must be one of {sorted(KL_ESTIMATORS)}. Received: {kl=}"
            )
        if encoder.head.latent_dim != prior.latent_dim:
            raise ValueError(
                "The posterior and the prior must have one latent size. Received: "
                f"posterior latent_dim={encoder.head.latent_dim}, prior "
                f"latent_dim={prior.latent_dim}"
            )
        self.encoder = encoder
        self.decoder = decoder
        self.prior = prior
        self.image_shape = tuple(image_shape)
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

    def build(self, input_shape=None):
        # The sub-layers make their weights on a first call; one zero image
        # builds them all (also when `keras.models.load_model` rebuilds it).
        self.call(tf.zeros([1, *self.image_shape], tf.uint8))

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {
            "name": self.name,
            "encoder": serialize(self.encoder),
            "decoder": serialize(self.decoder),
            "prior": serialize(self.prior),
            "image_shape": list(self.image_shape),
            "kl": self.kl,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        deserialize = keras.saving.deserialize_keras_object
        return cls(
            **{
                **config,
                "encoder": deserialize(config["encoder"]),
                "decoder": deserialize(config["decoder"]),
                "prior": deserialize(config["prior"]),
            }
        )

    @property
    def latent_dim(self) -> int:
        return self.prior.latent_dim

    @property
    def likelihood(self) -> heads.LikelihoodHead:
        return self.decoder.head

    @property
    def metrics(self):
        return [self.neg_elbo_tracker, self.reconstruction_tracker, self.kl_tracker]

    def next_seed(self) -> tf.Tensor:
        """Returns a fresh stateless seed, int64 `[2]`, and advances the counter."""
        return noise.seed(self.seed, self.noise_step.assign_add(1))

    def observe_and_encode(
        self, images: tf.Tensor, observe_seed: tf.Tensor
    ) -> tuple[tf.Tensor, tfd.Distribution]:
        """Returns (x, q): observations `[batch, H, W, C]` and q(z|x).

        `images` are raw `uint8 [batch, H, W, C]`; `observe_seed` (int `[2]`,
        or `[batch, 2]`: one per image) drives stochastic observations
        (dynamic binarization).
        """
        x = self.likelihood.observe(images, observe_seed)
        return x, self.encoder(self.likelihood.encoder_input(x))

    def posterior_sample(
        self, images: tf.Tensor, seed: tf.Tensor
    ) -> tuple[tf.Tensor, tfd.Distribution, tf.Tensor]:
        """Returns (x, q, z): observations, q(z|x) and one z ~ q, `[batch, latent_dim]`.

        `images` are raw `uint8 [batch, H, W, C]`; `seed` is int `[2]` (or
        `[batch, 2]`), split by `noise.split_seed`.
        """
        observe_seed, z_seed = noise.split_seed(seed)
        x, q = self.observe_and_encode(images, observe_seed)
        z = self.encoder.head.reparameterize(q, noise.normal(tf.shape(q.loc), z_seed))
        return x, q, z

    def neg_elbo_terms(
        self, images: tf.Tensor, seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns (reconstruction, kl), each `[batch]` in nats.

        reconstruction = -log p(x|z) at one z ~ q(z|x) (the distortion) and
        kl = KL(q(z|x) || p(z)) (the rate); their sum is the negative ELBO.
        `images` are raw `uint8 [batch, H, W, C]`; `seed` is int `[2]` (or
        `[batch, 2]`: one per image).
        """
        x, q, z = self.posterior_sample(images, seed)
        reconstruction = -self.decoder(z).log_prob(x)
        kl = KL_ESTIMATORS[self.kl](q, self.prior.distribution(), z)
        return reconstruction, kl

    def log_weights(
        self, x: tf.Tensor, q: tfd.Distribution, num_samples, z_seed: tf.Tensor
    ) -> tf.Tensor:
        """Returns importance log-weights log p(x, z_k) - log q(z_k|x), `[k, batch]`.

        `x` and `q` come from `observe_and_encode`; z_k ~ q for k =
        `num_samples`, drawn with the stateless `z_seed` (int `[2]`, or
        `[batch, 2]`: one per image). logmeanexp over k is the IWAE bound on
        log p(x) (Burda et al. 2015); callers average chunks of k to fit large
        k in memory.
        """
        batch = tf.shape(q.loc)[0]
        if z_seed.shape.rank == 2:
            eps = tf.transpose(
                noise.normal([batch, num_samples, self.latent_dim], z_seed), [1, 0, 2]
            )
        else:
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
        return log_px_given_z + self.prior.distribution().log_prob(z) - q.log_prob(z)

    def posterior_mean(self, images: tf.Tensor) -> tf.Tensor:
        """Returns E_q[z|x], `[batch, latent_dim]`, for raw `uint8` images.

        Stochastic observations use the fixed stream `noise.POSTERIOR_MEAN`,
        so pictures of a run are reproducible.
        """
        _, q = self.observe_and_encode(
            images, noise.seed(self.seed, noise.POSTERIOR_MEAN)
        )
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


def build_vae(image_shape: tuple[int, int, int], *, seed: int, **settings) -> VAE:
    """Builds (and creates the weights of) a VAE for raw images `image_shape`.

    `settings` are plain values by name, those of `Config.model_settings()`:
    likelihood, binarize, gaussian_scale, posterior, latent_dim, network,
    hidden_units, conv_filters, activation, kl. `seed` seeds the model's
    noise (weights are initialized from Keras's global seed).
    """
    likelihood = heads.LIKELIHOODS[settings["likelihood"]](**settings)
    encoder_body, decoder_body = networks.NETWORKS[settings["network"]](
        tuple(image_shape), likelihood.params_per_value, **settings
    )
    vae = VAE(
        Encoder(
            encoder_body,
            heads.POSTERIORS[settings["posterior"]](**settings),
            name="encoder",
        ),
        Decoder(decoder_body, likelihood, name="decoder"),
        priors.PRIORS["standard"](settings["latent_dim"]),
        image_shape=image_shape,
        kl=settings["kl"],
        seed=seed,
        name="vae",
    )
    vae.build((None, *image_shape))
    return vae


def bits_per_dim(nats_per_example: float, image_shape: tuple[int, ...]) -> float:
    """Converts nats per image into bits per pixel value."""
    return nats_per_example / (math.prod(image_shape) * math.log(2.0))
