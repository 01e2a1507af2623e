"""The objective: the one place the ELBO and the IWAE bound are written.

One batch of raw `uint8` images `[batch, H, W, C]`:

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
...]`. `VAE.train_step` and `VAE.test_step` both call `objective_terms`;
`gradients` takes a training step's gradients; `gradient="dreg"` changes
only which surrogate the encoder's gradient is taken of
(`dreg_encoder_loss`, Tucker et al. 2018).
"""

import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.chain import Chain, logmeanexp

tfd = tfp.distributions

# The choices of the VAE's `kl`, `objective` and `gradient` (and their flags).
KL_ESTIMATORS = ("analytic", "monte_carlo")
OBJECTIVES = ("elbo", "iwae")
GRADIENTS = ("standard", "dreg")


def _layer_kls(vae, chain: Chain) -> list[tf.Tensor]:
    """Returns each layer's KL estimate, `[K, batch]`."""
    if vae.kl == "analytic":
        kl = tfd.kl_divergence(chain.qs[0], vae.prior_distribution())
        return [tf.broadcast_to(kl, tf.shape(chain.log_px))]
    return [q - p for q, p in zip(chain.log_q, chain.log_p, strict=True)]


def objective_terms(
    vae,
    images: tf.Tensor,
    seed: tf.Tensor,
    labels: tf.Tensor = None,
    num_samples=1,
) -> tuple[dict[str, tf.Tensor], Chain]:
    """Returns ({name: `[batch]` nats}, the chain) for one batch.

    Args:
        vae: a `model.VAE`.
        images: raw `uint8 [batch, H, W, C]`.
        seed: int `[2]` (or `[batch, 2]`: one per image), split by
            `noise.split_seed` into the observation and the z noise.
        labels: int `[batch]` classes (conditional VAEs only).
        num_samples: K, latent samples per example.

    Returns:
        Names: "loss" (the training objective, at the current `kl_weight`),
        "neg_elbo" (the true negative ELBO, averaged over the K samples), and
        its two parts "reconstruction" (-log p(x|z1), the distortion) and "kl"
        (the sum of the layers' KL terms, the rate); and the `Chain`.
    """
    _, chain = vae.posterior_sample(images, seed, labels, num_samples)
    kls = _layer_kls(vae, chain)
    reconstruction = -chain.log_px
    kl = tf.add_n(kls)
    terms = {
        "neg_elbo": tf.reduce_mean(reconstruction + kl, axis=0),
        "reconstruction": tf.reduce_mean(reconstruction, axis=0),
        "kl": tf.reduce_mean(kl, axis=0),
    }
    if vae.objective == "iwae":
        terms["loss"] = -logmeanexp(chain.log_weights(vae.kl_weight))
    else:
        floored = tf.add_n([tf.maximum(k, vae.free_bits) for k in kls])
        weighted = reconstruction + tf.cast(vae.kl_weight, kl.dtype) * floored
        terms["loss"] = tf.reduce_mean(weighted, axis=0)
    return terms, chain


def dreg_encoder_loss(vae, chain: Chain) -> tf.Tensor:
    """Returns the DReG surrogate of the encoder, `[batch]`.

    Its gradient in the encoder's weights is the doubly reparameterized
    estimate sum_k w~_k^2 d log w_k / dz_k dz_k / dphi (Tucker et al.
    2018): q's parameters reach log w only through z, and the normalized
    weights w~ are constants.
    """
    stopped = vae.encoder.head.stop_gradient(chain.qs[0])
    z = tf.reshape(chain.zs[0], [chain.num_samples, chain.batch, -1])
    log_w = chain.log_px + chain.log_p[0] - stopped.log_prob(z)
    normalized = tf.stop_gradient(tf.math.softmax(log_w, axis=0))
    return -tf.reduce_sum(tf.square(normalized) * log_w, axis=0)


def gradients(
    vae, images: tf.Tensor, labels: tf.Tensor | None, seed: tf.Tensor
) -> tuple[dict[str, tf.Tensor], list[tf.Tensor]]:
    """Returns (the terms, the gradients of `vae.trainable_weights`) of one step.

    Args:
        vae: a compiled `model.VAE` (its optimizer scales the loss).
        images: raw `uint8 [batch, H, W, C]`; labels: int `[batch]` or None.
        seed: the step's stateless seed, int `[2]`.

    Returns:
        `objective_terms`' terms at `vae.train_samples` samples, and one
        gradient per trainable weight, still scaled by the optimizer's loss
        scale (its `apply_gradients` unscales them).
    """
    with tf.GradientTape(persistent=vae.gradient == "dreg") as tape:
        terms, chain = vae.objective_terms(images, seed, labels, vae.train_samples)
        # Sum over this replica's examples / GLOBAL batch size: the
        # optimizer sums gradients over replicas, so N replicas make the
        # same update as one replica holding the whole batch.
        loss = tf.nn.compute_average_loss(terms["loss"])
        # A LossScaleOptimizer (mixed_float16) scales the loss up so small
        # float16 gradients do not underflow, and unscales them in
        # apply_gradients; other optimizers return the loss as is.
        scaled_loss = vae.optimizer.scale_loss(loss)
        if vae.gradient == "dreg":
            scaled_encoder_loss = vae.optimizer.scale_loss(
                tf.nn.compute_average_loss(dreg_encoder_loss(vae, chain))
            )
    weights = vae.trainable_weights
    grads = tape.gradient(scaled_loss, weights)
    if vae.gradient == "dreg":
        encoder_weights = vae.encoder.trainable_weights
        encoder_grads = tape.gradient(scaled_encoder_loss, encoder_weights)
        by_id = dict(zip(map(id, encoder_weights), encoder_grads, strict=True))
        grads = [by_id.get(id(w), g) for w, g in zip(weights, grads, strict=True)]
        del tape
    return terms, grads
