"""The sample chain: K samples of every stochastic layer, and their densities.

`draw(vae, x, q, num_samples, z_seed, labels)` samples z_1..z_L from the
encoders, then scores them under the decoders and the prior. How the layers
condition on x is the VAE's `hierarchy` (`HIERARCHIES`):
- "iwae" (Burda et al. 2015): q(z1|x) q(z2|z1)..., p(zL) ... p(z1|z2)
  p(x|z1); the encoder gives z1, the upper encoders each layer from the one
  below;
- "vampprior" (Tomczak & Welling 2018's HVAE, two layers): q(z2|x)
  q(z1|x, z2), p(z2) p(z1|z2) p(x|z1, z2); the encoder gives z2 (so the
  VampPrior's components q(z2|u_k) are the encoder's), `upper_encoders[0]`
  z1 from x joined with z2, and the decoder takes [z1, z2] side by side
  (`decoder_latent`).
A `Chain` holds the samples and log-densities that the objective
(`tfvae.objective`), the IWAE bound and the exported signatures are written
from. `logmeanexp` turns its log-weights into the IWAE bound, and
`bits_per_dim` converts nats per image into bits per pixel value.
"""

import dataclasses
import math

import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import noise, rules

tfd = tfp.distributions

# The choices of the VAE's `hierarchy` (and its flag); see the module docstring
# (the "vampprior" one is `rules.TOP_DOWN`, which the combination rules name).
HIERARCHIES = ("iwae", rules.TOP_DOWN)


@dataclasses.dataclass
class Chain:
    """K samples of every stochastic layer for a batch, and their log-densities.

    `zs[l]` is layer l's z, flat `[K * batch, latent_dims[l]]` (sample k of
    example b at row k * batch + b); `qs[l]` is layer l's q, of batch shape
    `[batch]` for the encoder's (q(z1|x); with the "vampprior" hierarchy
    q(z2|x)) and `[K * batch]` for the others. The
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
    """Returns K = `num_samples` samples of every layer of `vae` given x and q.

    Args:
        vae: a `model.VAE`.
        x: observations `[batch, H, W, C]`, and q: the encoder's q(z1|x)
            (q(z2|x) with the "vampprior" hierarchy); both from
            `vae.observe_and_encode`.
        num_samples: K, an int or int32 scalar tensor.
        z_seed: int `[2]` (or `[batch, 2]`: one per image); layer l's noise is
            drawn from `noise.layer_seed(z_seed, l)`, batch first, so it does
            not depend on how the batch is split over replicas.
        labels: int classes `[batch]` (conditional VAEs only).

    Returns:
        The `Chain`.
    """
    if vae.hierarchy == rules.TOP_DOWN:
        return _draw_top_down(vae, x, q, num_samples, z_seed)
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
    flat_x = _repeated(x, num_samples)
    flat_labels = None if labels is None else tf.tile(labels, [num_samples])
    log_px = tf.reshape(
        vae.decode(zs[0], flat_labels).log_prob(flat_x), [num_samples, batch]
    )
    return Chain(num_samples, batch, qs, zs, log_px, log_q, log_p)


def _draw_top_down(vae, x, q, num_samples, z_seed) -> Chain:
    # The "vampprior" hierarchy's `draw`: z2 ~ q(z2|x) = q, z1 ~ q(z1|x, z2).
    batch = tf.shape(q.loc)[0]
    size_1, size_2 = vae.latent_dims
    eps = noise.normal_samples(
        num_samples, tf.stack([batch, size_2]), noise.layer_seed(z_seed, 1)
    )
    z_top = vae.encoder.head.reparameterize(q, eps)
    log_q_top = q.log_prob(z_top)
    z_top = tf.reshape(z_top, [-1, size_2])
    flat_x = _repeated(x, num_samples)
    lower = vae.upper_encoders[0]
    q_lower = lower(vae.likelihood.encoder_input(flat_x), z_top)
    eps = noise.normal_samples(
        num_samples, tf.stack([batch, size_1]), noise.layer_seed(z_seed, 0)
    )
    z_lower = lower.head.reparameterize(q_lower, tf.reshape(eps, [-1, size_1]))

    def per_sample(values):
        return tf.reshape(values, [num_samples, batch])

    log_p = [
        per_sample(vae.upper_decoders[0](z_top).log_prob(z_lower)),
        per_sample(vae.prior.log_prob(z_top, vae.encoder)),
    ]
    log_px = per_sample(
        vae.decode(decoder_latent(vae, [z_lower, z_top])).log_prob(flat_x)
    )
    return Chain(
        num_samples,
        batch,
        [q_lower, q],
        [z_lower, z_top],
        log_px,
        [per_sample(q_lower.log_prob(z_lower)), log_q_top],
        log_p,
    )


def _repeated(x: tf.Tensor, num_samples) -> tf.Tensor:
    """Returns `x` `[batch, ...]` K times, `[K * batch, ...]` (sample-major)."""
    flat = tf.repeat(x[tf.newaxis], num_samples, axis=0)
    return tf.reshape(flat, tf.concat([[-1], tf.shape(x)[1:]], axis=0))


def decoder_latent(vae, zs: list) -> tf.Tensor:
    """Returns the z the decoder takes, from every layer's z (bottom first).

    Args:
        vae: a `model.VAE`.
        zs: each layer's z, `[batch, latent_dims[l]]`.

    Returns:
        z1 `[batch, latent_dims[0]]`; for the "vampprior" hierarchy, whose
        p(x|z1, z2) takes both, [z1, z2] side by side `[batch, latent_dim]`.

    Example:
        >>> decoder_latent(vae, chain.zs)  # doctest: +SKIP
    """
    return tf.concat(zs, axis=-1) if vae.hierarchy == rules.TOP_DOWN else zs[0]


def sample_latent(vae, num_samples, seed: tf.Tensor) -> tf.Tensor:
    """Returns the decoder's z `[num_samples, vae.latent_dim]`, drawn top-down.

    The top layer from the prior with `seed` (int `[2]`), each layer below
    from p(z_l|z_{l+1}) with `noise.layer_seed(seed, l + 1)`.

    Args:
        vae: a `model.VAE`.
        num_samples: how many, an int or int32 scalar tensor.
        seed: int `[2]`.

    Returns:
        `decoder_latent` of the drawn layers.

    Example:
        >>> vae.decode_mean(sample_latent(vae, 16, noise.seed(0, 1)))  # doctest: +SKIP
    """
    zs = [vae.prior.sample(num_samples, seed, vae.encoder)]
    for layer in reversed(range(len(vae.upper_decoders))):
        decoder = vae.upper_decoders[layer]
        eps = tf.random.stateless_normal(
            [num_samples, vae.latent_dims[layer]],
            noise.layer_seed(seed, layer + 1),
            alg=noise.algorithm(),
        )
        zs.insert(0, decoder.head.reparameterize(decoder(zs[0]), eps))
    return decoder_latent(vae, zs)


def mean_latent(vae, x: tf.Tensor, q: tfd.Distribution) -> tf.Tensor:
    """Returns the decoder's z at the posterior means, `[batch, vae.latent_dim]`.

    E_q[z1|x]; for the "vampprior" hierarchy, z2 = E q(z2|x) and z1 = the
    mean of q(z1|x, z2) at it, side by side.

    Args:
        vae: a `model.VAE`.
        x, q: observations `[batch, H, W, C]` and the encoder's q, from
            `vae.observe_and_encode`.

    Returns:
        `decoder_latent` of the means.

    Example:
        >>> vae.decode_mean(mean_latent(vae, *vae.observe_and_encode(images, seed)))
        ... # doctest: +SKIP
    """
    if vae.hierarchy != rules.TOP_DOWN:
        return q.mean()
    z_top = q.mean()
    lower = vae.upper_encoders[0](vae.likelihood.encoder_input(x), z_top)
    return decoder_latent(vae, [lower.mean(), z_top])


def logmeanexp(values: tf.Tensor, axis: int = 0) -> tf.Tensor:
    """Returns log mean exp of `values` over `axis`, computed stably."""
    count = tf.cast(tf.shape(values)[axis], values.dtype)
    return tf.reduce_logsumexp(values, axis=axis) - tf.math.log(count)


def bits_per_dim(nats_per_example: float, image_shape: tuple[int, ...]) -> float:
    """Converts nats per image into bits per pixel value."""
    return nats_per_example / (math.prod(image_shape) * math.log(2.0))
