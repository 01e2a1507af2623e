"""The VAE: encoders q(z|x), decoder p(x|z), prior p(z), and the objective.

One batch of raw `uint8` images `[batch, H, W, C]` goes through
`VAE.objective_terms`, the only place the ELBO and the IWAE bound are written:

    x        = likelihood.observe(images)            # binarize / scale / keep ints
    q(z1|x)  = encoder(likelihood.encoder_input(x))  # (and the class, if conditional)
    z_l^k    ~ q(z_l | z_{l-1}), k = 1..K        # reparameterized, K per example
    log w^k  = log p(x|z1) + log p(z1|z2) + ... + log p(zL) - log q(z1..zL|x)
    -ELBO    = mean_k [-log p(x|z1) + sum_l KL_l]  # KL_l: closed form or log q - log p
    loss     = "elbo":  mean_k [-log p(x|z1) + kl_weight * sum_l max(KL_l, free_bits)]
               "iwae":  -log mean_k w^k            # Burda et al. 2015
                        (during a KL warm-up, each log w^k weighs its
                        log p(z) - log q(z|x) part by kl_weight < 1)

All K samples of a batch go through each network in one call, `[K * batch,
...]`. `train_step` and `test_step` both call `objective_terms`; `--gradient=dreg`
changes only which surrogate the encoder's gradient is taken of (Tucker et al.
2018). `build_vae` makes a VAE from plain settings (what `tfvae.train`'s flags
hold); every part is a registered Keras layer with a `get_config`, so
`vae.save("vae.keras")` and `keras.models.load_model` round-trip a model.

Stochastic layers are numbered bottom first: `latent_dims[0]` is z1, the
latent the decoder takes; the prior is over the top one.
"""

import dataclasses
import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import heads, networks, noise, priors

tfd = tfp.distributions

KL_ESTIMATORS = ("analytic", "monte_carlo")
OBJECTIVES = ("elbo", "iwae")
GRADIENTS = ("standard", "dreg")


def _serializable(cls):
    return keras.saving.register_keras_serializable(package="tfvae")(cls)


class _BodyAndHead(keras.Model):
    """A network body followed by a distribution head; serializes both.

    With `condition` set ("vector" or "channels", `networks.join_condition`),
    `call(inputs, one_hot)` joins a one-hot class `[batch, classes]` to the
    inputs first: a conditional VAE's encoder and decoder.
    """

    def __init__(
        self, body: keras.Layer, head: keras.Layer, condition: str | None = None, **kw
    ):
        super().__init__(**kw)
        self.body = body
        self.head = head
        self.condition = condition

    def call(self, inputs, one_hot=None):
        if (one_hot is None) != (self.condition is None):
            raise ValueError(
                f"{self.name} {'needs' if self.condition else 'takes no'} class "
                f"labels. Received: one_hot={one_hot}"
            )
        if one_hot is not None:
            inputs = networks.join_condition(self.condition, inputs, one_hot)
        return self.head(self.body(inputs))

    def get_config(self):
        return {
            "name": self.name,
            "body": keras.saving.serialize_keras_object(self.body),
            "head": keras.saving.serialize_keras_object(self.head),
            "condition": self.condition,
        }

    @classmethod
    def from_config(cls, config):
        return cls(
            body=keras.saving.deserialize_keras_object(config["body"]),
            head=keras.saving.deserialize_keras_object(config["head"]),
            condition=config.get("condition"),
            name=config["name"],
        )


@_serializable
class Encoder(_BodyAndHead):
    """x `[batch, H, W, C]` in [0, 1] (or z below) -> q(z|.), event `[latent_dim]`."""


@_serializable
class Decoder(_BodyAndHead):
    """z `[batch, latent_dim]` -> p(x|z) (event `[H, W, C]`) or p(z below|z)."""


@dataclasses.dataclass
class Chain:
    """K samples of every stochastic layer for a batch, and their log-densities.

    `zs[l]` is layer l's z, flat `[K * batch, latent_dims[l]]` (sample k of
    example b at row k * batch + b); `qs[0]` is q(z1|x) (batch shape
    `[batch]`), `qs[l]` for l > 0 has batch shape `[K * batch]`. The
    log-densities are `[K, batch]`, one per layer for `log_q` and `log_p`
    (p(z_l|z_{l+1}), the prior for the top layer).
    """

    num_samples: tf.Tensor
    batch: tf.Tensor
    qs: list
    zs: list
    log_px: tf.Tensor
    log_q: list
    log_p: list

    def log_weights(self, kl_weight=1.0) -> tf.Tensor:
        """Returns log p(x|z) + kl_weight * (log p(z) - log q(z|x)), `[K, batch]`.

        With `kl_weight` 1 (the default), the importance log-weights
        log p(x, z) - log q(z|x); below 1, a KL warm-up's annealed weights.
        """
        latent = tf.add_n(self.log_p) - tf.add_n(self.log_q)
        return self.log_px + tf.cast(kl_weight, latent.dtype) * latent


def logmeanexp(values: tf.Tensor, axis: int = 0) -> tf.Tensor:
    """Returns log mean exp of `values` over `axis`, computed stably."""
    count = tf.cast(tf.shape(values)[axis], values.dtype)
    return tf.reduce_logsumexp(values, axis=axis) - tf.math.log(count)


@_serializable
class VAE(keras.Model):
    """A variational autoencoder with one or more stochastic layers.

    `encoder` is q(z1|x), `decoder` p(x|z1); `upper_encoders[l - 1]` is
    q(z_{l+1}|z_l) and `upper_decoders[l - 1]` p(z_l|z_{l+1}) for a deeper
    model; `prior` is a `tfvae.priors` layer over the top layer. `objective`
    ("elbo" or "iwae") with `train_samples` K samples per example is what
    training minimizes; `beta` weights the KL term of the ELBO (the weight
    lives in the variable `kl_weight`, which a warm-up may lower), and
    `free_bits` floors each layer's KL in the objective. `num_classes` makes
    a conditional VAE: the encoder and decoder take the class label.

    Randomness (binarization and the reparameterization noise) comes from
    stateless ops seeded by `(seed, step)`, where `step` is a counter saved
    with the weights: runs with the same seed agree, a resumed run continues
    the sequence, and the noise does not depend on the number of replicas
    (`tfvae.noise`).
    """

    def __init__(
        self,
        encoder: Encoder,
        decoder: Decoder,
        prior: priors.Prior,
        image_shape: tuple[int, int, int],
        kl: str,
        seed: int,
        upper_encoders=(),
        upper_decoders=(),
        objective: str = "elbo",
        train_samples: int = 1,
        gradient: str = "standard",
        beta: float = 1.0,
        free_bits: float = 0.0,
        num_classes: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.prior = prior
        self.upper_encoders = list(upper_encoders)
        self.upper_decoders = list(upper_decoders)
        self.image_shape = tuple(image_shape)
        self.kl = kl
        self.seed = seed
        self.objective = objective
        self.train_samples = train_samples
        self.gradient = gradient
        self.beta = beta
        self.free_bits = free_bits
        self.num_classes = num_classes
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

    def _check(self):
        """Refuses parts and settings that do not fit together."""
        dims = self.latent_dims
        layers = len(dims)
        if len(self.upper_encoders) != layers - 1 or len(self.upper_decoders) != (
            layers - 1
        ):
            raise ValueError(
                "A model with L stochastic layers has L - 1 upper encoders and "
                f"decoders. Received: {len(self.upper_encoders)} upper encoders, "
                f"{len(self.upper_decoders)} upper decoders"
            )
        for layer, decoder in enumerate(self.upper_decoders):
            if decoder.head.latent_dim != dims[layer]:
                raise ValueError(
                    f"upper_decoders[{layer}] must model layer {layer}'s "
                    f"{dims[layer]} dimensions. Received: {decoder.head.latent_dim}"
                )
        if self.prior.latent_dim != dims[-1]:
            raise ValueError(
                "The prior must be over the top latent layer. Received: prior "
                f"latent_dim={self.prior.latent_dim}, latent sizes {dims}"
            )
        problems = {
            "kl": self.kl in KL_ESTIMATORS,
            "objective": self.objective in OBJECTIVES,
            "gradient": self.gradient in GRADIENTS,
            "train_samples": isinstance(self.train_samples, int)
            and self.train_samples >= 1,
            "beta": self.beta >= 0,
            "free_bits": self.free_bits >= 0,
        }
        for name, ok in problems.items():
            if not ok:
                raise ValueError(f"Invalid {name}. Received: {getattr(self, name)!r}")
        if self.kl == "analytic" and (layers > 1 or not self.prior.analytic_kl):
            raise ValueError(
                "kl='analytic' needs one stochastic layer and a prior with a "
                f"closed-form KL; use 'monte_carlo'. Received: {layers} layers, "
                f"prior {type(self.prior).__name__}"
            )
        if self.objective == "iwae" and (self.beta != 1 or self.free_bits):
            raise ValueError(
                "The IWAE bound has no separate KL term to weight: beta must be "
                f"1 and free_bits 0. Received: beta={self.beta}, "
                f"free_bits={self.free_bits}"
            )
        if self.gradient == "dreg" and (
            self.objective != "iwae"
            or layers > 1
            or isinstance(self.prior, priors.VampPrior)
        ):
            raise ValueError(
                "gradient='dreg' needs objective='iwae', one stochastic layer and "
                "a prior that does not share the encoder's weights (not vamp)."
            )
        if isinstance(self.prior, priors.VampPrior) and layers > 1:
            raise ValueError(
                "The VampPrior's components are q(z1|u_k), over the bottom "
                f"layer: it needs one stochastic layer. Received: {layers} layers"
            )
        if self.num_classes is not None and isinstance(self.prior, priors.VampPrior):
            raise ValueError(
                "A conditional VAE cannot use the VampPrior: its pseudo-inputs "
                "have no class label."
            )

    def build(self, input_shape=None):
        # The sub-layers make their weights on a first call; one zero image
        # through the whole objective builds them all (also when
        # `keras.models.load_model` rebuilds the model).
        if not self.prior.built:
            self.prior.build(None)
            self.prior.built = True
        images = tf.zeros([1, *self.image_shape], tf.uint8)
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
            "image_shape": list(self.image_shape),
            "kl": self.kl,
            "seed": self.seed,
            "objective": self.objective,
            "train_samples": self.train_samples,
            "gradient": self.gradient,
            "beta": self.beta,
            "free_bits": self.free_bits,
            "num_classes": self.num_classes,
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
    def latent_dims(self) -> tuple[int, ...]:
        """The size of each stochastic layer, bottom (z1) first."""
        return (
            self.encoder.head.latent_dim,
            *(e.head.latent_dim for e in self.upper_encoders),
        )

    @property
    def latent_dim(self) -> int:
        """The size of z1, the latent the decoder takes."""
        return self.latent_dims[0]

    @property
    def conditional(self) -> bool:
        return self.num_classes is not None

    @property
    def likelihood(self) -> heads.LikelihoodHead:
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
        """Returns (x, q): observations `[batch, H, W, C]` and q(z1|x).

        `images` are raw `uint8 [batch, H, W, C]`; `observe_seed` (int `[2]`,
        or `[batch, 2]`: one per image) drives stochastic observations
        (dynamic binarization); `labels` are int `[batch]` classes
        (conditional VAEs only).
        """
        x = self.likelihood.observe(images, observe_seed)
        return x, self.encoder(self.likelihood.encoder_input(x), self._one_hot(labels))

    def decode(self, z: tf.Tensor, labels: tf.Tensor = None) -> tfd.Distribution:
        """Returns p(x|z1) for z1 `[batch, latent_dim]` (and int labels `[batch]`)."""
        return self.decoder(z, self._one_hot(labels))

    def decode_mean(self, z: tf.Tensor, labels: tf.Tensor = None) -> tf.Tensor:
        """Returns E[x|z1] as float pixels in [0, 1], `[batch, H, W, C]`."""
        return self.likelihood.mean_image(self.decode(z, labels))

    def chain(
        self,
        x: tf.Tensor,
        q: tfd.Distribution,
        num_samples,
        z_seed: tf.Tensor,
        labels: tf.Tensor = None,
    ) -> Chain:
        """Returns K = `num_samples` samples of every layer given x and q(z1|x).

        `x` and `q` come from `observe_and_encode`; `z_seed` is int `[2]` (or
        `[batch, 2]`: one per image); layer l's noise is drawn from
        `noise.layer_seed(z_seed, l)`, batch first, so it does not depend on
        how the batch is split over replicas.
        """
        batch = tf.shape(q.loc)[0]
        zs, qs, log_q = [], [q], []
        for layer, size in enumerate(self.latent_dims):
            eps = noise.normal_samples(
                num_samples, tf.stack([batch, size]), noise.layer_seed(z_seed, layer)
            )
            if layer == 0:
                z = self.encoder.head.reparameterize(q, eps)
                log_q.append(q.log_prob(z))
                zs.append(tf.reshape(z, [-1, size]))
                continue
            encoder = self.upper_encoders[layer - 1]
            q_layer = encoder(zs[-1])
            zs.append(encoder.head.reparameterize(q_layer, tf.reshape(eps, [-1, size])))
            qs.append(q_layer)
            log_q.append(tf.reshape(q_layer.log_prob(zs[-1]), [num_samples, batch]))
        log_p = [
            tf.reshape(decoder(zs[layer + 1]).log_prob(zs[layer]), [num_samples, batch])
            for layer, decoder in enumerate(self.upper_decoders)
        ]
        log_p.append(
            tf.reshape(self.prior.log_prob(zs[-1], self.encoder), [num_samples, batch])
        )
        flat_x = tf.repeat(x[tf.newaxis], num_samples, axis=0)
        flat_x = tf.reshape(flat_x, tf.concat([[-1], tf.shape(x)[1:]], axis=0))
        flat_labels = None if labels is None else tf.tile(labels, [num_samples])
        log_px = tf.reshape(
            self.decode(zs[0], flat_labels).log_prob(flat_x), [num_samples, batch]
        )
        return Chain(num_samples, batch, qs, zs, log_px, log_q, log_p)

    def _layer_kls(self, chain: Chain) -> list[tf.Tensor]:
        """Returns each layer's KL estimate, `[K, batch]`."""
        if self.kl == "analytic":
            kl = tfd.kl_divergence(chain.qs[0], self.prior_distribution())
            return [tf.broadcast_to(kl, tf.shape(chain.log_px))]
        return [q - p for q, p in zip(chain.log_q, chain.log_p, strict=True)]

    def objective_terms(
        self,
        images: tf.Tensor,
        seed: tf.Tensor,
        labels: tf.Tensor = None,
        num_samples=1,
    ) -> tuple[dict[str, tf.Tensor], Chain]:
        """Returns ({name: `[batch]` nats}, the chain) for one batch.

        Names: "loss" (the training objective, at the current `kl_weight`),
        "neg_elbo" (the true negative ELBO, averaged over the K samples), and
        its two parts "reconstruction" (-log p(x|z1), the distortion) and "kl"
        (the sum of the layers' KL terms, the rate). `images` are raw `uint8
        [batch, H, W, C]`; `seed` is int `[2]` (or `[batch, 2]`: one per
        image), split by `noise.split_seed`; `labels` int `[batch]`.
        """
        _, chain = self.posterior_sample(images, seed, labels, num_samples)
        kls = self._layer_kls(chain)
        reconstruction = -chain.log_px
        kl = tf.add_n(kls)
        terms = {
            "neg_elbo": tf.reduce_mean(reconstruction + kl, axis=0),
            "reconstruction": tf.reduce_mean(reconstruction, axis=0),
            "kl": tf.reduce_mean(kl, axis=0),
        }
        if self.objective == "iwae":
            terms["loss"] = -logmeanexp(chain.log_weights(self.kl_weight))
        else:
            floored = tf.add_n([tf.maximum(k, self.free_bits) for k in kls])
            weighted = reconstruction + tf.cast(self.kl_weight, kl.dtype) * floored
            terms["loss"] = tf.reduce_mean(weighted, axis=0)
        return terms, chain

    def neg_elbo_terms(
        self, images: tf.Tensor, seed: tf.Tensor, labels: tf.Tensor = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns (reconstruction, kl), each `[batch]` in nats, at one z per layer.

        Their sum is the negative ELBO (`objective_terms` with K = 1).
        """
        terms, _ = self.objective_terms(images, seed, labels)
        return terms["reconstruction"], terms["kl"]

    def posterior_sample(
        self,
        images: tf.Tensor,
        seed: tf.Tensor,
        labels: tf.Tensor = None,
        num_samples=1,
    ) -> tuple[tf.Tensor, Chain]:
        """Returns (x, chain): observations and `num_samples` z per layer.

        `seed` is split by `noise.split_seed` into the observation and the z
        noise; with one sample, the x and z that `neg_elbo_terms(images, seed,
        labels)` scores.
        """
        observe_seed, z_seed = noise.split_seed(seed)
        x, q = self.observe_and_encode(images, observe_seed, labels)
        return x, self.chain(x, q, num_samples, z_seed, labels)

    def log_weights(
        self,
        x: tf.Tensor,
        q: tfd.Distribution,
        num_samples,
        z_seed: tf.Tensor,
        labels: tf.Tensor = None,
    ) -> tf.Tensor:
        """Returns importance log-weights log p(x, z_k) - log q(z_k|x), `[k, batch]`.

        `x` and `q` come from `observe_and_encode`; z_k ~ q (every layer) for
        k = `num_samples`, drawn with the stateless `z_seed` (int `[2]`, or
        `[batch, 2]`: one per image). logmeanexp over k is the IWAE bound on
        log p(x) (log p(x|y) for a conditional VAE); callers average chunks
        of k to fit large k in memory.
        """
        return self.chain(x, q, num_samples, z_seed, labels).log_weights()

    def sample_latent(self, num_samples, seed: tf.Tensor) -> tf.Tensor:
        """Returns z1 `[num_samples, latent_dim]` drawn top-down from the model.

        The top layer from the prior with stateless `seed` (int `[2]`), each
        layer below from p(z_l|z_{l+1}) with `noise.layer_seed(seed, l + 1)`.
        """
        z = self.prior.sample(num_samples, seed, self.encoder)
        for layer in reversed(range(len(self.upper_decoders))):
            decoder = self.upper_decoders[layer]
            p = decoder(z)
            eps = tf.random.stateless_normal(
                [num_samples, self.latent_dims[layer]],
                noise.layer_seed(seed, layer + 1),
                alg=noise.algorithm(),
            )
            z = decoder.head.reparameterize(p, eps)
        return z

    def posterior_mean(self, images: tf.Tensor, labels: tf.Tensor = None) -> tf.Tensor:
        """Returns E_q[z1|x], `[batch, latent_dim]`, for raw `uint8` images.

        Stochastic observations use the fixed stream `noise.POSTERIOR_MEAN`,
        so pictures of a run are reproducible.
        """
        _, q = self.observe_and_encode(
            images, noise.seed(self.seed, noise.POSTERIOR_MEAN), labels
        )
        return q.mean()

    def call(self, inputs):
        """Returns p(x|z1) at z1 = the posterior mean.

        `inputs` are raw `uint8` images, or (images, labels) if conditional.
        """
        images, labels = inputs if self.conditional else (inputs, None)
        return self.decode(self.posterior_mean(images, labels), labels)

    def _unpack(self, data):
        return data if self.conditional else (data, None)

    def train_step(self, data):
        images, labels = self._unpack(data)
        with tf.GradientTape(persistent=self.gradient == "dreg") as tape:
            terms, chain = self.objective_terms(
                images, self.next_seed(), labels, self.train_samples
            )
            # Sum over this replica's examples / GLOBAL batch size: the
            # optimizer sums gradients over replicas, so N replicas make the
            # same update as one replica holding the whole batch.
            loss = tf.nn.compute_average_loss(terms["loss"])
            # A LossScaleOptimizer (mixed_float16) scales the loss up so small
            # float16 gradients do not underflow, and unscales them in
            # apply_gradients; other optimizers return the loss as is.
            scaled_loss = self.optimizer.scale_loss(loss)
            if self.gradient == "dreg":
                scaled_encoder_loss = self.optimizer.scale_loss(
                    tf.nn.compute_average_loss(self._dreg_encoder_loss(chain))
                )
        weights = self.trainable_weights
        grads = tape.gradient(scaled_loss, weights)
        if self.gradient == "dreg":
            encoder_ids = {id(w) for w in self.encoder.trainable_weights}
            encoder_grads = tape.gradient(
                scaled_encoder_loss, self.encoder.trainable_weights
            )
            by_id = dict(
                zip(map(id, self.encoder.trainable_weights), encoder_grads, strict=True)
            )
            grads = [
                by_id[id(w)] if id(w) in encoder_ids else g
                for w, g in zip(weights, grads, strict=True)
            ]
            del tape
        self.optimizer.apply_gradients(zip(grads, weights, strict=True))
        return self._update_metrics(terms)

    def _dreg_encoder_loss(self, chain: Chain) -> tf.Tensor:
        """Returns the DReG surrogate of the encoder, `[batch]`.

        Its gradient in the encoder's weights is the doubly reparameterized
        estimate sum_k w~_k^2 d log w_k / dz_k dz_k / dphi (Tucker et al.
        2018): q's parameters reach log w only through z, and the normalized
        weights w~ are constants.
        """
        stopped = self.encoder.head.stop_gradient(chain.qs[0])
        z = tf.reshape(chain.zs[0], [chain.num_samples, chain.batch, -1])
        log_w = chain.log_px + chain.log_p[0] - stopped.log_prob(z)
        normalized = tf.stop_gradient(tf.math.softmax(log_w, axis=0))
        return -tf.reduce_sum(tf.square(normalized) * log_w, axis=0)

    def test_step(self, data):
        images, labels = self._unpack(data)
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


def build_vae(
    image_shape: tuple[int, int, int],
    *,
    seed: int,
    num_classes: int | None = None,
    **settings,
) -> VAE:
    """Builds (and creates the weights of) a VAE for raw images `image_shape`.

    `settings` are plain values by name, those of `Config.model_settings()`:
    likelihood, binarize, gaussian_scale, posterior, latent_dim (one size per
    stochastic layer, bottom first), network, hidden_units, conv_filters,
    activation, kl, objective, train_samples, gradient, beta, free_bits,
    prior, prior_components, conditional. `num_classes` is the dataset's
    number of classes, needed if `conditional`. `seed` seeds the model's noise
    (weights are initialized from Keras's global seed).
    """
    dims = tuple(settings["latent_dim"])
    if settings["conditional"] and not num_classes:
        raise ValueError(
            f"A conditional VAE needs the number of classes. Received: {num_classes=}"
        )
    condition = settings["conditional"] or None
    likelihood = heads.LIKELIHOODS[settings["likelihood"]](**settings)
    encoder_body, decoder_body = networks.NETWORKS[settings["network"]](
        tuple(image_shape), likelihood.params_per_value, **settings
    )
    depth = len(settings["hidden_units"]) or 1

    def upper(layer: int, cls, name: str):
        # Between layers `layer` and `layer + 1`, as wide as twice the upper one.
        head_layer = layer + 1 if cls is Encoder else layer
        return cls(
            networks.latent_body(depth, 2 * dims[layer + 1], settings["activation"]),
            heads.NormalDiagHead(dims[head_layer], name="posterior"),
            name=f"{name}_{layer + 1}",
        )

    vae = VAE(
        Encoder(
            encoder_body,
            heads.POSTERIORS[settings["posterior"]](
                **{**settings, "latent_dim": dims[0]}
            ),
            condition=condition and networks.CONDITIONING[settings["network"]],
            name="encoder",
        ),
        Decoder(
            decoder_body, likelihood, condition=condition and "vector", name="decoder"
        ),
        priors.PRIORS[settings["prior"]](
            **{**settings, "latent_dim": dims[-1], "image_shape": tuple(image_shape)}
        ),
        image_shape=image_shape,
        kl=settings["kl"],
        seed=seed,
        upper_encoders=[upper(i, Encoder, "encoder") for i in range(len(dims) - 1)],
        upper_decoders=[upper(i, Decoder, "decoder") for i in range(len(dims) - 1)],
        objective=settings["objective"],
        train_samples=settings["train_samples"],
        gradient=settings["gradient"],
        beta=settings["beta"],
        free_bits=settings["free_bits"],
        num_classes=num_classes if settings["conditional"] else None,
        name="vae",
    )
    vae.build((None, *image_shape))
    return vae


def bits_per_dim(nats_per_example: float, image_shape: tuple[int, ...]) -> float:
    """Converts nats per image into bits per pixel value."""
    return nats_per_example / (math.prod(image_shape) * math.log(2.0))
