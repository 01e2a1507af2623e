"""The sample chain: K samples of every stochastic layer, and their densities.

`draw(vae, x, q, num_samples, z_seed, labels)` samples z_1..z_L top-down
from q(z1|x) and the upper encoders, then scores them under the decoders and
the prior; a `Chain` holds the samples and log-densities that the objective
(`tfvae.objective`), the IWAE bound and the exported signatures are written
from. `logmeanexp` turns its log-weights into the IWAE bound, and
`bits_per_dim` converts nats per image into bits per pixel value.
"""

import dataclasses
import math

import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import noise

tfd = tfp.distributions


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


def draw(
    vae,
    x: tf.Tensor,
    q: tfd.Distribution,
    num_samples,
    z_seed: tf.Tensor,
    labels: tf.Tensor = None,
) -> Chain:
    """Returns K = `num_samples` samples of every layer of `vae` given x and q(z1|x).

    Args:
        vae: a `model.VAE`.
        x: observations `[batch, H, W, C]`, and q: q(z1|x); both from
            `vae.observe_and_encode`.
        num_samples: K, an int or int32 scalar tensor.
        z_seed: int `[2]` (or `[batch, 2]`: one per image); layer l's noise is
            drawn from `noise.layer_seed(z_seed, l)`, batch first, so it does
            not depend on how the batch is split over replicas.
        labels: int classes `[batch]` (conditional VAEs only).

    Returns:
        The `Chain`.
    """
    batch = tf.shape(q.loc)[0]
    zs, qs, log_q = [], [q], []
    for layer, size in enumerate(vae.latent_dims):
        eps = noise.normal_samples(
            num_samples, tf.stack([batch, size]), noise.layer_seed(z_seed, layer)
        )
        if layer == 0:
            z = vae.encoder.head.reparameterize(q, eps)
            log_q.append(q.log_prob(z))
            zs.append(tf.reshape(z, [-1, size]))
            continue
        encoder = vae.upper_encoders[layer - 1]
        q_layer = encoder(zs[-1])
        zs.append(encoder.head.reparameterize(q_layer, tf.reshape(eps, [-1, size])))
        qs.append(q_layer)
        log_q.append(tf.reshape(q_layer.log_prob(zs[-1]), [num_samples, batch]))
    log_p = [
        tf.reshape(decoder(zs[layer + 1]).log_prob(zs[layer]), [num_samples, batch])
        for layer, decoder in enumerate(vae.upper_decoders)
    ]
    log_p.append(
        tf.reshape(vae.prior.log_prob(zs[-1], vae.encoder), [num_samples, batch])
    )
    flat_x = tf.repeat(x[tf.newaxis], num_samples, axis=0)
    flat_x = tf.reshape(flat_x, tf.concat([[-1], tf.shape(x)[1:]], axis=0))
    flat_labels = None if labels is None else tf.tile(labels, [num_samples])
    log_px = tf.reshape(
        vae.decode(zs[0], flat_labels).log_prob(flat_x), [num_samples, batch]
    )
    return Chain(num_samples, batch, qs, zs, log_px, log_q, log_p)


def logmeanexp(values: tf.Tensor, axis: int = 0) -> tf.Tensor:
    """Returns log mean exp of `values` over `axis`, computed stably."""
    count = tf.cast(tf.shape(values)[axis], values.dtype)
    return tf.reduce_logsumexp(values, axis=axis) - tf.math.log(count)


def bits_per_dim(nats_per_example: float, image_shape: tuple[int, ...]) -> float:
    """Converts nats per image into bits per pixel value."""
    return nats_per_example / (math.prod(image_shape) * math.log(2.0))
