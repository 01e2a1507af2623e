"""The export's signatures: what each computes, and the checks on its inputs.

`signature_functions(vae, description)` returns one plain function per
signature of export/README.md ("Signatures"), closing over `vae`;
`tfvae.saved_model` traces them into a SavedModel. Images are raw uint8
pixels; the likelihood's preprocessing (binarizing, scaling) happens inside.

Noise. Every image gets its own stateless seed, computed from its pixels
and the export's fixed seed alone (`noise.example_seeds`):

  fixed_seed  = noise.seed(vae.seed, noise.EXPORT)               # [seed, -1]
  image_seeds = noise.example_seeds(images, fixed_seed)          # [batch, 2]
  observe_seeds, z_seeds = noise.split_seed(image_seeds)

so an image's outputs do not depend on its row or on the other images of
its batch (TF Serving's server-side batching merges requests). encode,
reconstruct, score and log_weights observe an image (dynamic binarization)
with its observe seed, so all four see the same x; encode's z is the z
that score evaluates (`VAE.posterior_sample` / `VAE.neg_elbo_terms` with
`image_seeds`). log_weights draws its z from the request's `seed`, per
image too: `noise.example_seeds(images, seed)`. `sample` draws z from the
model, top-down from its prior (`VAE.sample_latent(num_samples, seed)`); seed
`noise.seed(vae.seed, noise.PRIOR_SAMPLES)` decodes the z of the run's
samples.png.

`tfvae.table_signatures` builds a table VAE's signatures from the same
checks (`checked`, `checked_rows`, `checked_num_samples`, `checked_labels`)
and outputs (`posterior_outputs`, `metadata_outputs`).

Bounds. What one request allocates grows with its rows: images (or z) times
samples per image. Every signature refuses, before computing anything, a
request of more than `max_samples` samples (`sample`, `log_weights`) or of
more than `max_batch_samples` rows times samples (every signature), so a
legal request cannot take the server down; `metadata` reports both.
"""

import json
import math

import keras
import tensorflow as tf

from tfvae import chain as chain_lib
from tfvae import model, noise

SIGNATURES = (
    "serving_default",
    "encode",
    "decode",
    "sample",
    "score",
    "reconstruct",
    "log_weights",
    "metadata",
)

# Peak memory of a request, per decoded value of one row and sample (the
# decoder's output: H * W * C * params_per_value floats). Measured: the
# peak RSS of one log_weights request of 50, 100, 200 and 400 MNIST images x
# 1000 samples on the 784-400-50 MLP (Bernoulli), each in a fresh process,
# minus the process's RSS before it, is 12.6-13.3 KB per image and sample,
# 16.1-17.0 bytes per value (1.28-5.53 GB of peak RSS); rounded up. A
# decoder whose activations are wider than its output (a wide conv
# decoder) costs more: export it with a lower max_batch_samples.
BYTES_PER_DECODED_VALUE = 20
# The memory one request may take by default.
REQUEST_BYTES = 2**30


def default_max_batch_samples(vae: model.VAE) -> int:
    """Returns `REQUEST_BYTES` divided by the bytes one row and sample take.

    An image's decoded values are its pixels times the likelihood's
    parameters per pixel. A table row decodes to few values (its columns'
    parameters) through hidden layers that are often wider, so its count is
    the parameters plus the widest Dense layer of the encoder's and decoder's
    bodies (`networks.vector_mlp`'s layers).

    Args:
      vae: the VAE being exported.

    Returns:
      The default `max_batch_samples`: 68,478 for 28x28x1 Bernoulli pixels
      (about 0.9 GB of peak RSS for a log_weights request of that size).

    Example:
      >>> signatures.default_max_batch_samples(vae)  # doctest: +SKIP
      68478
    """
    params = vae.likelihood.params_per_value
    if vae.likelihood.tabular:
        widths = [
            layer.units
            for body in (vae.encoder.body, vae.decoder.body)
            for layer in getattr(body, "layers", [body])
            if isinstance(layer, keras.layers.Dense)
        ]
        # Measured: log_weights requests of 100-400 rows x 1000 samples of a
        # 5-column table (10 parameters) peaked at 13 bytes per value so
        # counted with 16 hidden units, and at 9.4 with 128x128: within the
        # 20 of images.
        values = params + max(widths, default=0)
    else:
        values = math.prod(vae.image_shape) * params
    return max(1, REQUEST_BYTES // (BYTES_PER_DECODED_VALUE * values))


def to_json(description: dict) -> str:
    """Returns `description` as `metadata`'s `json` and assets/tfvae.json hold it."""
    return json.dumps(description, indent=2, sort_keys=True) + "\n"


def fixed_seed(seed: int) -> tf.Tensor:
    """Returns the export's fixed seed, int64 `[2]`: `(seed, noise.EXPORT)`.

    Not the seed of any draw: each image's seed is folded from it and the
    image's pixels (`noise.export_seeds`).
    """
    return noise.seed(seed, noise.EXPORT)


NUM_SAMPLES_SPEC = tf.TensorSpec([], tf.int32, name="num_samples")
SEED_SPEC = tf.TensorSpec([2], tf.int64, name="seed")
# A conditional VAE's classes, one per image (or per sample).
LABELS_SPEC = tf.TensorSpec([None], tf.int64, name="labels")


def checked(tensor: tf.Tensor, spec: tf.TensorSpec) -> tf.Tensor:
    """Returns `tensor`, made to fail at run time unless its shape fits `spec`.

    The TensorSpecs fix the dtypes, but TF Serving (C++ Session::Run) and the
    signatures of `tf.saved_model.load` feed tensors into the graph without
    checking their shapes: a wrong shape would crash deep inside the network
    or, worse, be silently reshaped. Asserts on `tf.shape` do not do here:
    where the spec's shape is fully known (seed, num_samples), grappler folds
    them away, trusting the very shape they check. It keeps EnsureShape ops,
    whose error names the input and the expected shape: "Shape of tensor
    images [1,7,7,1] is not compatible with expected shape [?,8,8,1]".

    Example:
        >>> checked(tf.constant([0, 1], tf.int64), SEED_SPEC).shape
        TensorShape([2])
    """
    return tf.ensure_shape(tensor, spec.shape, name=spec.name)


def after(checks: list, tensor: tf.Tensor) -> tf.Tensor:
    """Returns `tensor`, computed only once `checks` have passed.

    Without the dependency, the ops that allocate could run first, or fail
    first with a vaguer message.
    """
    with tf.control_dependencies(checks):
        return tf.identity(tensor)


def checked_num_samples(num_samples: tf.Tensor, max_samples: int) -> tf.Tensor:
    """Returns `num_samples`, made to fail at run time unless in 1..`max_samples`.

    `sample` and `log_weights` allocate in proportion to num_samples: without
    a bound, one request for millions of samples takes a whole TF Serving
    process down (std::bad_alloc aborts it). The bound is fixed at export
    time (`--export_max_samples`, reported by `metadata` as max_samples).

    Example:
        >>> checked_num_samples(tf.constant(10), max_samples=100).numpy()
        np.int32(10)
    """
    num_samples = checked(num_samples, NUM_SAMPLES_SPEC)
    checks = [
        tf.debugging.assert_positive(
            num_samples, message="num_samples must be a positive int32 scalar"
        ),
        tf.debugging.assert_less_equal(
            num_samples,
            max_samples,
            # No quotes: TF escapes them in the error message.
            message=f"num_samples must be at most {max_samples}, the max_samples "
            "of this export (set by --export_max_samples when it was exported): "
            "request fewer, and concatenate requests with other seeds",
        ),
    ]
    return after(checks, num_samples)


def checked_rows(
    tensor: tf.Tensor, samples: tf.Tensor | int, max_batch_samples: int
) -> tf.Tensor:
    """Returns `tensor`, made to fail unless its rows x `samples` fit the bound.

    The product is taken in int64: 2**31 - 1 rows of 1000 samples must not
    wrap around to a small number.

    Example:
        >>> checked_rows(tf.zeros([4, 3]), 10, max_batch_samples=100).shape
        TensorShape([4, 3])
    """
    rows = tf.cast(tf.shape(tensor)[0], tf.int64) * tf.cast(samples, tf.int64)
    check = tf.debugging.assert_less_equal(
        rows,
        tf.constant(max_batch_samples, tf.int64),
        message=f"the batch times num_samples must be at most {max_batch_samples}, "
        "the max_batch_samples of this export (what one request may allocate; "
        "see metadata): split the batch into smaller requests",
    )
    return after([check], tensor)


def checked_labels(vae: model.VAE, labels, batch_of: tf.Tensor):
    """Returns a conditional VAE's `labels`, made to fail unless they fit the call.

    Args:
      vae: the exported VAE; an unconditional one takes no labels.
      labels: int64 `[batch]` classes (None for an unconditional VAE).
      batch_of: the call's images, rows or z (`[batch, ...]`), or sample's
        num_samples (a scalar): one class per row or sample.

    Returns:
      `labels`, checked to hold one class in 0 .. num_classes - 1 per row;
      None for an unconditional VAE.
    """
    if not vae.conditional:
        return None
    labels = checked(labels, LABELS_SPEC)
    expected = tf.shape(batch_of)[0] if batch_of.shape.rank else batch_of
    checks = [
        tf.debugging.assert_equal(
            tf.size(labels),
            tf.cast(expected, tf.int32),
            message="labels must hold one class per image or row (per sample for "
            "sample's num_samples)",
        ),
        tf.debugging.assert_non_negative(
            labels, message="labels must be classes 0 .. num_classes - 1"
        ),
        tf.debugging.assert_less(
            labels,
            tf.constant(vae.num_classes, tf.int64),
            message=f"labels must be classes 0 .. {vae.num_classes - 1}",
        ),
    ]
    return after(checks, labels)


def posterior_outputs(vae: model.VAE, chain) -> dict[str, tf.Tensor]:
    """Returns `encode`'s outputs: each layer's posterior and its one z.

    Args:
      vae: the exported VAE.
      chain: `VAE.posterior_sample`'s chain of one sample per row.

    Returns:
      {"mean", "stddev" or "scale_tril", "z"}, `[batch, L]` (`scale_tril`
      `[batch, L, L]`), and the same names suffixed "_2", "_3", ... for the
      layers above the bottom one. With the "vampprior" hierarchy, z1's
      posterior is q(z1|x, z2) at the z_2 returned.
    """
    outputs = {}
    for layer in range(len(chain.zs)):
        q = chain.qs[layer]
        head = vae.layer_encoders[layer].head
        suffix = f"_{layer + 1}" if layer else ""
        layer_outputs = {"mean": q.mean(), **head.parameters(q), "z": chain.zs[layer]}
        outputs.update({name + suffix: value for name, value in layer_outputs.items()})
    return outputs


def metadata_outputs(vae: model.VAE, description: dict) -> dict[str, tf.Tensor]:
    """Returns the `metadata` outputs images and tables share, from `description`.

    Args:
      vae: the exported VAE.
      description: `saved_model.describe`'s dict.

    Returns:
      {name: constant tensor}; `json` holds all of `description`.
    """
    return {
        "latent_dim": tf.constant(vae.latent_dim, tf.int32),
        "likelihood": tf.constant(description["likelihood"]),
        "posterior": tf.constant(description["posterior"]),
        "prior": tf.constant(description["prior"]),
        "latent_dims": tf.constant(vae.latent_dims, tf.int32),
        # 0 for a VAE that takes no labels.
        "num_classes": tf.constant(vae.num_classes or 0, tf.int32),
        # Empty for a VAE exported without its dataset's description.
        "dataset": tf.constant(description["dataset"] or ""),
        "seed": tf.constant(vae.seed, tf.int64),
        "max_samples": tf.constant(description["max_samples"], tf.int32),
        "max_batch_samples": tf.constant(description["max_batch_samples"], tf.int64),
        "fixed_seed": fixed_seed(vae.seed),
        "json": tf.constant(to_json(description)),
    }


def signature_functions(vae: model.VAE, description: dict) -> dict[str, tuple]:
    """Returns {name: (function, input specs)}, one per signature but serving_default.

    Args:
      vae: the VAE to serve, built outside any strategy.
      description: what `metadata` reports (`saved_model.describe`); its
        `max_samples` and `max_batch_samples` bound the requests.

    Returns:
      The functions in signature order, `encode` first. They close over
      `vae`; the archive saves their traces and the variables they read, not
      `vae`.
    """
    latent_dim = vae.latent_dim
    likelihood = vae.likelihood
    seed = vae.seed
    max_samples = description["max_samples"]
    max_batch_samples = description["max_batch_samples"]
    image_spec = tf.TensorSpec([None, *vae.image_shape], tf.uint8, name="images")
    z_spec = tf.TensorSpec([None, latent_dim], tf.float32, name="z")

    def checked_images(images):
        return checked_rows(checked(images, image_spec), 1, max_batch_samples)

    def observe_and_encode(images, labels):
        observe_seeds, _ = noise.split_seed(noise.export_seeds(images, seed))
        return vae.observe_and_encode(images, observe_seeds, labels)

    def encode(images, labels=None):
        images = checked_images(images)
        labels = checked_labels(vae, labels, images)
        # The same x and z that score's `neg_elbo_terms` evaluates.
        _, chain = vae.posterior_sample(
            images, noise.export_seeds(images, seed), labels
        )
        return posterior_outputs(vae, chain)

    def decode(z, labels=None):
        z = checked_rows(checked(z, z_spec), 1, max_batch_samples)
        p = vae.decode(z, checked_labels(vae, labels, z))
        return {"mean": likelihood.mean_image(p), **likelihood.parameters(p)}

    def sample(num_samples, seed, labels=None):
        num_samples = checked_num_samples(num_samples, max_samples)
        labels = checked_labels(vae, labels, num_samples)
        z = vae.sample_latent(num_samples, checked(seed, SEED_SPEC))
        return {"images": vae.decode_mean(z, labels)}

    def score(images, labels=None):
        images = checked_images(images)
        reconstruction, kl = vae.neg_elbo_terms(
            images,
            noise.export_seeds(images, seed),
            checked_labels(vae, labels, images),
        )
        return {
            "neg_elbo": reconstruction + kl,
            "reconstruction": reconstruction,
            "kl": kl,
        }

    def reconstruct(images, labels=None):
        images = checked_images(images)
        labels = checked_labels(vae, labels, images)
        x, q = observe_and_encode(images, labels)
        return {"images": vae.decode_mean(chain_lib.mean_latent(vae, x, q), labels)}

    def log_weights(images, num_samples, seed, labels=None):
        num_samples = checked_num_samples(num_samples, max_samples)
        images = checked_rows(
            checked(images, image_spec), num_samples, max_batch_samples
        )
        labels = checked_labels(vae, labels, images)
        x, q = observe_and_encode(images, labels)
        weights = vae.log_weights(
            x,
            q,
            num_samples,
            # Per image as well, so a row's z do not depend on the batch.
            noise.example_seeds(images, checked(seed, SEED_SPEC)),
            labels,
        )
        return {"log_weights": tf.transpose(weights)}

    def metadata():
        return {
            **metadata_outputs(vae, description),
            "image_shape": tf.constant(vae.image_shape, tf.int32),
        }

    # A conditional VAE's signatures take the classes last.
    labels = [LABELS_SPEC] if vae.conditional else []
    return {
        "encode": (encode, [image_spec, *labels]),
        "decode": (decode, [z_spec, *labels]),
        "sample": (sample, [NUM_SAMPLES_SPEC, SEED_SPEC, *labels]),
        "score": (score, [image_spec, *labels]),
        "reconstruct": (reconstruct, [image_spec, *labels]),
        "log_weights": (
            log_weights,
            [image_spec, NUM_SAMPLES_SPEC, SEED_SPEC, *labels],
        ),
        "metadata": (metadata, []),
    }
