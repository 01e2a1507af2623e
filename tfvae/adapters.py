"""What evaluation runs on: a Keras VAE, or an export through its signatures.

Both follow `iwae.EvaluableModel`, so one evaluation loop and one set of
pictures serve a training run (`VAEAdapter`) and a SavedModel loaded with no
tfvae code in its graph (`SavedModelAdapter`).
"""

import json

import tensorflow as tf

from tfvae import config as config_lib
from tfvae import heads, images, model, noise


class VAEAdapter:
    """`EvaluableModel` for a Keras `VAE`; the per-batch computations are compiled.

    By default the noise follows `iwae.evaluate_batches`'s batch seeds: batch
    seed s observes x with `noise.split_seed(s)` and chunk j draws z with
    `noise.chunk_seed(s, j)`, as training splits its step seeds.

    `per_image_noise=True` draws every number as `tfvae.saved_model`'s image
    signatures do instead, so this adapter and a `SavedModelAdapter` of the
    same weights give the same figures and pictures. Each image is observed
    with its own seed from its pixels, `noise.example_seeds(images,
    noise.seed(vae.seed, noise.EXPORT))` (split by `noise.split_seed`, whose
    z half is the z of `neg_elbo_terms`); the seed of batch s and chunk j
    becomes per-image z seeds `noise.example_seeds(images, noise.chunk_seed(s,
    j))`; posterior means are encoded from those observations. An image's
    numbers then do not depend on the rest of its batch.

    `jit_compile` compiles with XLA too, which on CPU draws other (equally
    valid) random numbers than TensorFlow's kernels (`tfvae.noise`).
    """

    def __init__(
        self, vae: model.VAE, jit_compile: bool = False, per_image_noise: bool = False
    ):
        self.vae = vae
        self.latent_dim = vae.latent_dim
        self.discrete = vae.likelihood.discrete
        self.per_image_noise = per_image_noise
        self._neg_elbo_terms = tf.function(self._batch_terms, jit_compile=jit_compile)
        self._log_weights = tf.function(
            self._chunk_log_weights, jit_compile=jit_compile
        )

    def _observe_and_encode(self, images, batch_seed):
        if self.per_image_noise:
            observe_seed, _ = noise.split_seed(
                noise.export_seeds(images, self.vae.seed)
            )
        else:
            observe_seed, _ = noise.split_seed(batch_seed)
        return self.vae.observe_and_encode(images, observe_seed)

    def _batch_terms(self, images, seed):
        if self.per_image_noise:
            seed = noise.export_seeds(images, self.vae.seed)
        return self.vae.neg_elbo_terms(images, seed)

    def _chunk_log_weights(self, images, num_samples, seed, chunk):
        x, q = self._observe_and_encode(images, seed)
        z_seed = noise.chunk_seed(seed, chunk)
        if self.per_image_noise:
            z_seed = noise.example_seeds(images, z_seed)
        return self.vae.log_weights(x, q, num_samples, z_seed)

    def neg_elbo_terms(self, images, seed):
        return self._neg_elbo_terms(images, seed)

    def log_weights(self, images, num_samples, seed, chunk):
        # num_samples is a Python int: it fixes the compiled shapes.
        return self._log_weights(images, num_samples, seed, tf.constant(chunk))

    def encode_mean(self, images):
        if self.per_image_noise:
            return self._observe_and_encode(images, None)[1].mean()
        return self.vae.posterior_mean(images)

    def decode_mean(self, z):
        return self.vae.decode_mean(z)

    def reconstruction_grid(self, batch):
        if self.per_image_noise:
            return images.reconstruction_grid(
                batch, self.decode_mean(self.encode_mean(batch))
            )
        return images.reconstructions(self.vae, batch)

    def prior_samples(self, count, seed):
        return images.prior_samples(self.vae, count, seed)


class SavedModelAdapter:
    """`EvaluableModel` over the signatures of an exported SavedModel.

    The contract is `tfvae.saved_model`'s: the export draws its observation
    noise per image from the image's pixels and its own fixed seed, so
    `neg_elbo_terms` ignores its seed (`score` takes none), while the z noise
    of `log_weights` comes from the batch seed and chunk (`noise.chunk_seed`),
    which the export turns into per-image seeds. A `VAEAdapter` with
    `per_image_noise=True` draws the same numbers.
    """

    def __init__(self, export_dir: str):
        self._signatures = tf.saved_model.load(export_dir).signatures
        description = json.loads(self._signatures["metadata"]()["json"].numpy())
        self.config = config_lib.Config.from_dict(description["config"])
        self.latent_dim = description["latent_dim"]
        self.discrete = heads.LIKELIHOODS[self.config.likelihood](
            **self.config.model_settings()
        ).discrete

    def neg_elbo_terms(self, images, seed):
        del seed  # The export observes with its own fixed seed.
        scores = self._signatures["score"](images=images)
        return scores["reconstruction"], scores["kl"]

    def log_weights(self, images, num_samples, seed, chunk):
        log_weights = self._signatures["log_weights"](
            images=images,
            num_samples=tf.constant(num_samples, tf.int32),
            seed=noise.chunk_seed(seed, chunk),
        )["log_weights"]
        return tf.transpose(log_weights)  # The export is batch-major.

    def encode_mean(self, images):
        return self._signatures["encode"](images=images)["mean"]

    def decode_mean(self, z):
        return self._signatures["decode"](z=z)["mean"]

    def reconstruction_grid(self, batch):
        return images.reconstruction_grid(
            batch,
            self._signatures["reconstruct"](images=batch)["images"],
        )

    def prior_samples(self, count, seed):
        # The z `images.prior_samples` draws, so both adapters show the same.
        return self._signatures["sample"](
            num_samples=tf.constant(count, tf.int32),
            seed=noise.seed(seed, noise.PRIOR_SAMPLES),
        )["images"]
