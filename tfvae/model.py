"""The VAE: encoders q(z|x), decoder p(x|z), prior p(z), as one Keras model.

`VAE` holds the parts (`tfvae.parts`), the prior (`tfvae.priors`) and the
settings of the objective (`tfvae.objective`), checks that they fit
(`tfvae.rules`), serializes them (`vae.save` / `keras.models.load_model`),
and offers the inference API the evaluation and the export use. Its steps
read a batch with `batches.unpack_batch`, score it with `objective_terms`.

Stochastic layers are numbered bottom first (`latent_dims[0]` is z1), the
prior over the top one; `hierarchy` (`tfvae.chain`) joins them to x.
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import batches, fields, likelihoods, noise, objective, priors, rules
from tfvae import chain as chain_lib
from tfvae.model_settings import ModelSettings
from tfvae.parts import (
    Decoder,
    Encoder,
    check_bodies,
    check_data_shape,
    check_stack,
    part_name,
)

tfd = tfp.distributions


def _serializable(cls):
    return keras.saving.register_keras_serializable(package="tfvae")(cls)


@_serializable
class VAE(keras.Model):
    """A variational autoencoder with one or more stochastic layers.

    `encoder` is q(z1|x), `decoder` p(x|z1); `upper_encoders[l - 1]` is
    q(z_{l+1}|z_l) and `upper_decoders[l - 1]` p(z_l|z_{l+1}) for a deeper
    model; `prior` is a `tfvae.priors` layer over the top layer. With
    `hierarchy="vampprior"` (two layers), `encoder` is q(z2|x),
    `upper_encoders[0]` q(z1|x, z2), `decoder` p(x|z1, z2) (`tfvae.chain`). `objective`
    ("elbo" or "iwae") with `train_samples` K samples per example is what
    training minimizes; `beta` weights the KL term of the ELBO (the weight
    lives in the variable `kl_weight`, which a warm-up may lower), and
    `free_bits` floors each layer's KL in the objective. `num_classes` makes
    a conditional VAE: the encoder and decoder take the class label.

    Batches may be images, `(images, labels)` pairs or TFDS dicts
    (`batches.unpack_batch`); an unconditional VAE ignores the labels. Images
    are raw `uint8` pixels 0..255; any other dtype is refused. A table VAE
    (`tfvae.table_model`): a `TableHead`, `image_shape=None`, dicts of columns.
    The parts are built, their bodies' outputs checked, when the VAE is made.

    Randomness (binarization and the reparameterization noise) comes from
    stateless ops seeded by `(seed, step)`, where `step` is a counter saved
    with the weights: runs with the same seed agree, a resumed run continues
    the sequence, and the noise does not depend on the number of replicas
    (`tfvae.noise`).

    Args:
        encoder: an `Encoder` giving q(z1|x) from images `[batch, H, W, C]`.
        decoder: a `Decoder` giving p(x|z1) from z1 `[batch, latent_dims[0]]`.
        prior: a `tfvae.priors` layer over the top latent layer.
        image_shape: `(H, W, C)` of the images.
        kl: "analytic" (closed form: one layer and a `StandardNormal` prior)
            or "monte_carlo" (log q(z) - log p(z) at the sampled z).
        seed: seeds the model's noise, in [0, 2**32).
        upper_encoders, upper_decoders: q(z_{l+1}|z_l) and p(z_l|z_{l+1}).
        objective: "elbo" or "iwae" (Burda et al. 2015).
        train_samples: K, the latent samples per example in training.
        gradient: "standard", or "dreg" (with objective="iwae").
        beta: weight of the KL term of the ELBO.
        free_bits: floor, in nats, of each layer's KL in the objective.
        num_classes: the classes of a conditional VAE; None otherwise.
        hierarchy: "iwae" or "vampprior" (`chain.HIERARCHIES`).

    Example (README.md "Use from Python" has it whole):

    ```python
    vae = tfvae.VAE(tfvae.Encoder(encoder_body, tfvae.NormalDiagHead(16)),
                    tfvae.Decoder(decoder_body, tfvae.BernoulliHead()),
                    tfvae.StandardNormal(16), image_shape=(28, 28, 1))
    vae.compile(optimizer="adam")
    vae.fit(uint8_images, epochs=10, batch_size=128)
    ```
    """

    # No Keras default serving signature (see `parts._BodyAndHead`).
    _default_save_signature = None

    def __init__(
        self,
        encoder: Encoder,
        decoder: Decoder,
        prior: priors.Prior,
        image_shape: tuple[int, int, int] | None,
        kl: str = "analytic",
        seed: int = 0,
        upper_encoders=(),
        upper_decoders=(),
        objective: str = "elbo",
        train_samples: int = 1,
        gradient: str = "standard",
        beta: float = 1.0,
        free_bits: float = 0.0,
        num_classes: int | None = None,
        hierarchy: str = "iwae",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.prior = prior
        self.upper_encoders = list(upper_encoders)
        self.upper_decoders = list(upper_decoders)
        self.image_shape = None if image_shape is None else tuple(image_shape)
        self.kl = kl
        self.seed = seed
        self.objective = objective
        self.train_samples = train_samples
        self.gradient = gradient
        self.beta = beta
        self.free_bits = free_bits
        self.num_classes = num_classes
        self.hierarchy = hierarchy
        self._check()
        self.noise_step = self.add_weight(
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            # Every replica computes the same next value; keep one.
            aggregation="only_first_replica",
            name="noise_step",
        )
        self.kl_weight = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(beta),
            trainable=False,
            aggregation="only_first_replica",
            name="kl_weight",
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.neg_elbo_tracker = keras.metrics.Mean(name="neg_elbo")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.build()

    def _check(self):
        """Refuses parts and settings that do not fit together."""
        dims = self.latent_dims
        check_stack(dims, self.upper_encoders, self.upper_decoders, self.prior)
        check_data_shape(self.likelihood, self.image_shape)
        # The same checks, by the same owners, as the flags of these settings.
        known = fields.settings_of(ModelSettings)
        names = "kl", "objective", "train_samples", "gradient", "beta", "free_bits"
        for name in (*names, "hierarchy"):
            fields.check_value(
                name, known[name][1], getattr(self, name), fields.python_name
            )
        problem = noise.seed_problem(self.seed)
        if problem:
            raise ValueError(f"seed {problem}. Received: seed={self.seed!r}")
        problem = rules.combination_problem(
            dims,
            part_name(self.prior),
            kl=self.kl,
            objective=self.objective,
            beta=self.beta,
            free_bits=self.free_bits,
            gradient=self.gradient,
            conditional=self.conditional,
            hierarchy=self.hierarchy,
        )
        if problem:
            raise ValueError(problem)

    def build(self, input_shape=None):
        # The parts make their weights on a first call: each part once, in
        # the order the objective calls them (so weights are drawn in that
        # order), refusing a body whose output its head cannot take; then one
        # zero image through the whole objective (also when
        # `keras.models.load_model` rebuilds the model).
        if self.built:
            return
        if not self.prior.built:
            self.prior.build(None)
            self.prior.built = True
        check_bodies(self, noise.seed(0, 0))
        images = self.likelihood.example_batch(self.image_shape)
        labels = tf.zeros([1], tf.int32) if self.conditional else None
        self.objective_terms(images, noise.seed(0, 0), labels)
        self.built = True

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {
            "name": self.name,
            "encoder": serialize(self.encoder),
            "decoder": serialize(self.decoder),
            "prior": serialize(self.prior),
            "upper_encoders": [serialize(e) for e in self.upper_encoders],
            "upper_decoders": [serialize(d) for d in self.upper_decoders],
            "image_shape": self.image_shape and list(self.image_shape),
            "kl": self.kl,
            "seed": self.seed,
            "objective": self.objective,
            "train_samples": self.train_samples,
            "gradient": self.gradient,
            "beta": self.beta,
            "free_bits": self.free_bits,
            "num_classes": self.num_classes,
            "hierarchy": self.hierarchy,
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
                "upper_encoders": [deserialize(e) for e in config["upper_encoders"]],
                "upper_decoders": [deserialize(d) for d in config["upper_decoders"]],
            }
        )

    @property
    def layer_encoders(self) -> list[Encoder]:
        """The encoder of each stochastic layer, bottom (z1) first."""
        if self.hierarchy == rules.TOP_DOWN:
            return [*self.upper_encoders, self.encoder]
        return [self.encoder, *self.upper_encoders]

    @property
    def latent_dims(self) -> tuple[int, ...]:
        """The size of each stochastic layer, bottom (z1) first."""
        return tuple(e.head.latent_dim for e in self.layer_encoders)

    @property
    def latent_dim(self) -> int:
        """The size of the z the decoder takes (`chain.decoder_latent`)."""
        dims = self.latent_dims
        return sum(dims) if self.hierarchy == rules.TOP_DOWN else dims[0]

    @property
    def conditional(self) -> bool:
        return self.num_classes is not None

    @property
    def likelihood(self) -> likelihoods.LikelihoodHead:
        return self.decoder.head

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            self.neg_elbo_tracker,
            self.reconstruction_tracker,
            self.kl_tracker,
        ]

    def next_seed(self) -> tf.Tensor:
        """Returns a fresh stateless seed, int64 `[2]`, and advances the counter."""
        return noise.seed(self.seed, self.noise_step.assign_add(1))

    def _one_hot(self, labels: tf.Tensor | None) -> tf.Tensor | None:
        if self.conditional != (labels is not None):
            raise ValueError(
                f"This VAE {'needs' if self.conditional else 'takes no'} class "
                f"labels. Received: labels={labels}"
            )
        if labels is None:
            return None
        return tf.one_hot(tf.cast(labels, tf.int32), self.num_classes)

    def prior_distribution(self) -> tfd.Distribution:
        """Returns p(z) of the top layer, event shape `[latent_dims[-1]]`."""
        return self.prior.distribution(self.encoder)

    def observe_and_encode(
        self, images: tf.Tensor, observe_seed: tf.Tensor, labels: tf.Tensor = None
    ) -> tuple[tf.Tensor, tfd.Distribution]:
        """Returns (x, q): observations `[batch, H, W, C]` and the encoder's q.

        q(z1|x), or the "vampprior" hierarchy's q(z2|x).

        `images`: raw `uint8 [batch, H, W, C]`; `observe_seed`: int `[2]` or
        `[batch, 2]`, for stochastic observations; `labels`: int `[batch]`.
        """
        x = self.likelihood.observe(images, observe_seed)
        return x, self.encoder(self.likelihood.encoder_input(x), self._one_hot(labels))

    def decode(self, z: tf.Tensor, labels: tf.Tensor = None) -> tfd.Distribution:
        """Returns p(x|z) for the decoder's z `[batch, latent_dim]` (and labels)."""
        return self.decoder(z, self._one_hot(labels))

    def decode_mean(self, z: tf.Tensor, labels: tf.Tensor = None) -> tf.Tensor:
        """Returns E[x|z] as float pixels in [0, 1], `[batch, H, W, C]`."""
        return self.likelihood.mean_image(self.decode(z, labels))

    def objective_terms(
        self,
        images: tf.Tensor,
        seed: tf.Tensor,
        labels: tf.Tensor = None,
        num_samples=1,
    ) -> tuple[dict[str, tf.Tensor], chain_lib.Chain]:
        """Returns ({name: `[batch]` nats}, the chain): `objective.objective_terms`."""
        return objective.objective_terms(self, images, seed, labels, num_samples)

    def neg_elbo_terms(
        self, images: tf.Tensor, seed: tf.Tensor, labels: tf.Tensor = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns (reconstruction, kl), `[batch]` nats each: -ELBO's parts, K = 1."""
        terms, _ = self.objective_terms(images, seed, labels)
        return terms["reconstruction"], terms["kl"]

    def posterior_sample(
        self,
        images: tf.Tensor,
        seed: tf.Tensor,
        labels: tf.Tensor = None,
        num_samples=1,
    ) -> tuple[tf.Tensor, chain_lib.Chain]:
        """Returns (x, chain): observations and `num_samples` z per layer.

        `seed` is split (`noise.split_seed`) into the observation and z noise;
        one sample gives the x and z `neg_elbo_terms(images, seed, labels)` scores.
        """
        observe_seed, z_seed = noise.split_seed(seed)
        x, q = self.observe_and_encode(images, observe_seed, labels)
        return x, chain_lib.draw(self, x, q, num_samples, z_seed, labels)

    def log_weights(
        self,
        x: tf.Tensor,
        q: tfd.Distribution,
        num_samples,
        z_seed: tf.Tensor,
        labels: tf.Tensor = None,
    ) -> tf.Tensor:
        """Returns importance log-weights log p(x, z_k) - log q(z_k|x), `[k, batch]`.

        `x`, `q` from `observe_and_encode`; z_k ~ q (every layer), k =
        `num_samples`, from `z_seed` (int `[2]`, or `[batch, 2]`). logmeanexp
        over k is the IWAE bound on log p(x) (log p(x|y) if conditional).
        """
        return chain_lib.draw(self, x, q, num_samples, z_seed, labels).log_weights()

    def sample_latent(self, num_samples, seed: tf.Tensor) -> tf.Tensor:
        """Returns the decoder's z drawn from the model: `chain.sample_latent`."""
        return chain_lib.sample_latent(self, num_samples, seed)

    def posterior_mean(self, images: tf.Tensor, labels: tf.Tensor = None) -> tf.Tensor:
        """Returns the decoder's z at q's means, `[batch, latent_dim]` (E_q[z1|x]).

        For raw `uint8` images, observed with the fixed stream
        `noise.POSTERIOR_MEAN` (reproducible); `chain.mean_latent`.
        """
        x, q = self.observe_and_encode(
            images, noise.seed(self.seed, noise.POSTERIOR_MEAN), labels
        )
        return chain_lib.mean_latent(self, x, q)

    def call(self, inputs):
        """Returns p(x|z1) at the posterior mean, for any `unpack_batch` form."""
        images, labels = batches.unpack_batch(self, inputs)
        return self.decode(self.posterior_mean(images, labels), labels)

    def train_step(self, data):
        images, labels = batches.unpack_batch(self, data)
        terms, grads = objective.gradients(self, images, labels, self.next_seed())
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights, strict=True))
        return self._update_metrics(terms)

    def test_step(self, data):
        images, labels = batches.unpack_batch(self, data)
        terms, _ = self.objective_terms(
            images, self.next_seed(), labels, self.train_samples
        )
        return self._update_metrics(terms)

    def _update_metrics(self, terms):
        for tracker in self.metrics:
            tracker.update_state(terms[tracker.name])
        results = {m.name: m.result() for m in self.metrics}
        if isinstance(
            self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy
        ):
            # Keras 3 averages step logs across workers along axis 0, which a
            # scalar lacks (tensorflow/tensorflow#72388). Epoch logs come from
            # the metrics themselves, synced over all replicas.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results
