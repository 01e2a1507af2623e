"""What evaluation runs on: a Keras VAE, or an export through its signatures.

Both follow `iwae.EvaluableModel`, so one evaluation loop and one set of
pictures serve a training run (`VAEAdapter`) and a SavedModel loaded with no
tfvae code in its graph (`SavedModelAdapter`).
"""

import json

import tensorflow as tf

from tfvae import config as config_lib
from tfvae import errors, images, model, noise


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
        self.image_shape = vae.image_shape
        self.latent_dim = vae.latent_dim
        self.num_classes = vae.num_classes
        self.discrete = vae.likelihood.discrete
        self.per_image_noise = per_image_noise
        self._neg_elbo_terms = tf.function(self._batch_terms, jit_compile=jit_compile)
        self._log_weights = tf.function(
            self._chunk_log_weights, jit_compile=jit_compile
        )

    def _observe_and_encode(self, images, batch_seed, labels):
        if self.per_image_noise:
            observe_seed, _ = noise.split_seed(
                noise.export_seeds(images, self.vae.seed)
            )
        else:
            observe_seed, _ = noise.split_seed(batch_seed)
        return self.vae.observe_and_encode(images, observe_seed, labels)

    def _batch_terms(self, images, seed, labels):
        if self.per_image_noise:
            seed = noise.export_seeds(images, self.vae.seed)
        return self.vae.neg_elbo_terms(images, seed, labels)

    def _chunk_log_weights(self, images, num_samples, seed, chunk, labels):
        x, q = self._observe_and_encode(images, seed, labels)
        z_seed = noise.chunk_seed(seed, chunk)
        if self.per_image_noise:
            z_seed = noise.example_seeds(images, z_seed)
        return self.vae.log_weights(x, q, num_samples, z_seed, labels)

    def neg_elbo_terms(self, images, seed, labels=None):
        return self._neg_elbo_terms(images, seed, labels)

    def log_weights(self, images, num_samples, seed, chunk, labels=None):
        # num_samples is a Python int: it fixes the compiled shapes.
        return self._log_weights(images, num_samples, seed, tf.constant(chunk), labels)

    def encode_mean(self, images, labels=None):
        if self.per_image_noise:
            return self._observe_and_encode(images, None, labels)[1].mean()
        return self.vae.posterior_mean(images, labels)

    def decode_mean(self, z, labels=None):
        return self.vae.decode_mean(z, labels)

    def reconstruction_grid(self, batch, labels=None):
        if self.per_image_noise:
            return images.reconstruction_grid(
                batch, self.decode_mean(self.encode_mean(batch, labels), labels)
            )
        return images.reconstructions(self.vae, batch, labels)

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
        try:
            self._signatures = tf.saved_model.load(export_dir).signatures
        except (OSError, ValueError, IndexError, tf.errors.OpError) as e:
            raise errors.UsageError(
                f"{export_dir} cannot be loaded as a SavedModel, it is damaged "
                f"({str(e).splitlines()[0]}). Export the run again (python -m "
                "tfvae.export), or pass another version's folder."
            ) from None
        if "metadata" not in self._signatures:
            raise errors.UsageError(
                f"{export_dir} is a SavedModel, but not a tfvae export: it has no "
                "metadata signature. Pass a folder that tfvae.export wrote."
            )
        description = json.loads(self._signatures["metadata"]()["json"].numpy())
        if "max_batch_samples" not in description:
            raise errors.UsageError(
                f"{export_dir} was exported by an older tfvae, whose metadata "
                "lacks max_batch_samples and discrete. Export the run again "
                "(python -m tfvae.export)."
            )
        if description.get("columns"):
            raise errors.UsageError(
                f"{export_dir} is a table VAE's export, which evaluation does not "
                "take: evaluate the run itself (python -m tfvae.evaluate "
                "--model_dir=RUN), or the Keras VAE with tfvae.evaluate_table(vae, "
                "rows)."
            )
        # The training run's configuration; None for a VAE exported from Python.
        self.config = description["config"] and config_lib.Config.from_dict(
            description["config"]
        )
        # The most samples its sample and log_weights take per call, and the
        # most images x samples per call.
        self.max_samples = description["max_samples"]
        self.max_batch_samples = description["max_batch_samples"]
        self.image_shape = tuple(description["image_shape"])
        # What its image signatures take (read by `batches.unpack_batch`,
        # as a likelihood's): uint8 images, not a table's rows.
        self.image_dtype = tf.uint8
        self.tabular = False
        self.latent_dim = description["latent_dim"]
        self.layers = len(description["latent_dims"])
        self.num_classes = description["num_classes"]
        self.discrete = description["discrete"]

    def _labels(self, labels) -> dict:
        """Returns the `labels` input of a conditional export's signatures, or {}."""
        if self.num_classes is None:
            return {}
        return {"labels": tf.cast(labels, tf.int64)}

    def neg_elbo_terms(self, images, seed, labels=None):
        del seed  # The export observes with its own fixed seed.
        scores = self._signatures["score"](images=images, **self._labels(labels))
        return scores["reconstruction"], scores["kl"]

    def log_weights(self, images, num_samples, seed, chunk, labels=None):
        log_weights = self._signatures["log_weights"](
            images=images,
            num_samples=tf.constant(num_samples, tf.int32),
            seed=noise.chunk_seed(seed, chunk),
            **self._labels(labels),
        )["log_weights"]
        return tf.transpose(log_weights)  # The export is batch-major.

    def encode_mean(self, images, labels=None):
        encoded = self._signatures["encode"](images=images, **self._labels(labels))
        # The decoder's z: z1's mean, or with hierarchy="vampprior", whose
        # decoder takes every layer (`chain.decoder_latent`), theirs side by side.
        suffixes = [""] + [f"_{layer}" for layer in range(2, self.layers + 1)]
        means = tf.concat([encoded["mean" + s] for s in suffixes], axis=-1)
        return means[:, : self.latent_dim]

    def decode_mean(self, z, labels=None):
        return self._signatures["decode"](z=z, **self._labels(labels))["mean"]

    def reconstruction_grid(self, batch, labels=None):
        return images.reconstruction_grid(
            batch,
            self._signatures["reconstruct"](images=batch, **self._labels(labels))[
                "images"
            ],
        )

    def prior_samples(self, count, seed):
        # The z (and classes) `images.prior_samples` draws, so both adapters
        # show the same.
        labels = images.sample_labels(self.num_classes, count)
        return self._signatures["sample"](
            num_samples=tf.constant(count, tf.int32),
            seed=noise.seed(seed, noise.PRIOR_SAMPLES),
            **self._labels(labels),
        )["images"]
