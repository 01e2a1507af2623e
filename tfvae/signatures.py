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

Bounds. What one request allocates grows with its rows: images (or z) times
samples per image. Every signature refuses, before computing anything, a
request of more than `max_samples` samples (`sample`, `log_weights`) or of
more than `max_batch_samples` rows times samples (every signature), so a
legal request cannot take the server down; `metadata` reports both.
"""

import json
import math

import tensorflow as tf

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

    Args:
      vae: the VAE being exported.

    Returns:
      The default `max_batch_samples`: 68,478 for 28x28x1 Bernoulli pixels
      (about 0.9 GB of peak RSS for a log_weights request of that size).
    """
    values = math.prod(vae.image_shape) * vae.likelihood.params_per_value
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


_NUM_SAMPLES_SPEC = tf.TensorSpec([], tf.int32, name="num_samples")
_SEED_SPEC = tf.TensorSpec([2], tf.int64, name="seed")
# A conditional VAE's classes, one per image (or per sample).
_LABELS_SPEC = tf.TensorSpec([None], tf.int64, name="labels")


def _checked(tensor: tf.Tensor, spec: tf.TensorSpec) -> tf.Tensor:
    """Returns `tensor`, made to fail at run time unless its shape fits `spec`.

    The TensorSpecs fix the dtypes, but TF Serving (C++ Session::Run) and the
    signatures of `tf.saved_model.load` feed tensors into the graph without
    checking their shapes: a wrong shape would crash deep inside the network
    or, worse, be silently reshaped. Asserts on `tf.shape` do not do here:
    where the spec's shape is fully known (seed, num_samples), grappler folds
    them away, trusting the very shape they check. It keeps EnsureShape ops,
    whose error names the input and the expected shape: "Shape of tensor
    images [1,7,7,1] is not compatible with expected shape [?,8,8,1]".
    """
    return tf.ensure_shape(tensor, spec.shape, name=spec.name)


def _after(checks: list, tensor: tf.Tensor) -> tf.Tensor:
    """Returns `tensor`, computed only once `checks` have passed.

    Without the dependency, the ops that allocate could run first, or fail
    first with a vaguer message.
    """
    with tf.control_dependencies(checks):
        return tf.identity(tensor)


def _checked_num_samples(num_samples: tf.Tensor, max_samples: int) -> tf.Tensor:
    """Returns `num_samples`, made to fail at run time unless in 1..`max_samples`.

    `sample` and `log_weights` allocate in proportion to num_samples: without
    a bound, one request for millions of samples takes a whole TF Serving
    process down (std::bad_alloc aborts it). The bound is fixed at export
    time (`--export_max_samples`, reported by `metadata` as max_samples).
    """
    num_samples = _checked(num_samples, _NUM_SAMPLES_SPEC)
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
    return _after(checks, num_samples)


def _checked_rows(
    tensor: tf.Tensor, samples: tf.Tensor | int, max_batch_samples: int
) -> tf.Tensor:
    """Returns `tensor`, made to fail unless its rows x `samples` fit the bound.

    The product is taken in int64: 2**31 - 1 rows of 1000 samples must not
    wrap around to a small number.
    """
    rows = tf.cast(tf.shape(tensor)[0], tf.int64) * tf.cast(samples, tf.int64)
    check = tf.debugging.assert_less_equal(
        rows,
        tf.constant(max_batch_samples, tf.int64),
        message=f"the batch times num_samples must be at most {max_batch_samples}, "
        "the max_batch_samples of this export (what one request may allocate; "
        "see metadata): split the batch into smaller requests",
    )
    return _after([check], tensor)


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
        return _checked_rows(_checked(images, image_spec), 1, max_batch_samples)

    def checked_labels(labels, batch_of):
        """Returns `labels` checked against `batch_of`'s batch (None if unconditional).

        `batch_of` is the images or z of the call, or sample's num_samples.
        """
        if not vae.conditional:
            return None
        labels = _checked(labels, _LABELS_SPEC)
        expected = tf.shape(batch_of)[0] if batch_of.shape.rank else batch_of
        checks = [
            tf.debugging.assert_equal(
                tf.size(labels),
                tf.cast(expected, tf.int32),
                message="labels must hold one class per image (per sample for "
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
        return _after(checks, labels)

    def observe_and_encode(images, labels):
        observe_seeds, _ = noise.split_seed(noise.export_seeds(images, seed))
        return vae.observe_and_encode(images, observe_seeds, labels)

    def encode(images, labels=None):
        images = checked_images(images)
        labels = checked_labels(labels, images)
        # The same x and z that score's `neg_elbo_terms` evaluates.
        _, chain = vae.posterior_sample(
            images, noise.export_seeds(images, seed), labels
        )
        q = chain.qs[0]
        outputs = {"mean": q.mean(), **vae.encoder.head.parameters(q), "z": chain.zs[0]}
        # Layers above the bottom one: "z_2", "mean_2", "stddev_2", ...
        for layer in range(1, len(chain.zs)):
            q = chain.qs[layer]
            head = vae.upper_encoders[layer - 1].head
            layer_outputs = {
                "mean": q.mean(),
                **head.parameters(q),
                "z": chain.zs[layer],
            }
            outputs.update(
                {f"{name}_{layer + 1}": value for name, value in layer_outputs.items()}
            )
        return outputs

    def decode(z, labels=None):
        z = _checked_rows(_checked(z, z_spec), 1, max_batch_samples)
        p = vae.decode(z, checked_labels(labels, z))
        return {"mean": likelihood.mean_image(p), **likelihood.parameters(p)}

    def sample(num_samples, seed, labels=None):
        num_samples = _checked_num_samples(num_samples, max_samples)
        labels = checked_labels(labels, num_samples)
        z = vae.sample_latent(num_samples, _checked(seed, _SEED_SPEC))
        return {"images": vae.decode_mean(z, labels)}

    def score(images, labels=None):
        images = checked_images(images)
        reconstruction, kl = vae.neg_elbo_terms(
            images, noise.export_seeds(images, seed), checked_labels(labels, images)
        )
        return {
            "neg_elbo": reconstruction + kl,
            "reconstruction": reconstruction,
            "kl": kl,
        }

    def reconstruct(images, labels=None):
        images = checked_images(images)
        labels = checked_labels(labels, images)
        _, q = observe_and_encode(images, labels)
        return {"images": vae.decode_mean(q.mean(), labels)}

    def log_weights(images, num_samples, seed, labels=None):
        num_samples = _checked_num_samples(num_samples, max_samples)
        images = _checked_rows(
            _checked(images, image_spec), num_samples, max_batch_samples
        )
        labels = checked_labels(labels, images)
        x, q = observe_and_encode(images, labels)
        weights = vae.log_weights(
            x,
            q,
            num_samples,
            # Per image as well, so a row's z do not depend on the batch.
            noise.example_seeds(images, _checked(seed, _SEED_SPEC)),
            labels,
        )
        return {"log_weights": tf.transpose(weights)}

    def metadata():
        return {
            "latent_dim": tf.constant(latent_dim, tf.int32),
            "image_shape": tf.constant(vae.image_shape, tf.int32),
            "likelihood": tf.constant(description["likelihood"]),
            "posterior": tf.constant(description["posterior"]),
            "prior": tf.constant(description["prior"]),
            "latent_dims": tf.constant(vae.latent_dims, tf.int32),
            # 0 for a VAE that takes no labels.
            "num_classes": tf.constant(vae.num_classes or 0, tf.int32),
            # Empty for a VAE exported without its dataset's description.
            "dataset": tf.constant(description["dataset"] or ""),
            "seed": tf.constant(seed, tf.int64),
            "max_samples": tf.constant(max_samples, tf.int32),
            "max_batch_samples": tf.constant(max_batch_samples, tf.int64),
            "fixed_seed": fixed_seed(seed),
            "json": tf.constant(to_json(description)),
        }

    # A conditional VAE's signatures take the classes last.
    labels = [_LABELS_SPEC] if vae.conditional else []
    return {
        "encode": (encode, [image_spec, *labels]),
        "decode": (decode, [z_spec, *labels]),
        "sample": (sample, [_NUM_SAMPLES_SPEC, _SEED_SPEC, *labels]),
        "score": (score, [image_spec, *labels]),
        "reconstruct": (reconstruct, [image_spec, *labels]),
        "log_weights": (
            log_weights,
            [image_spec, _NUM_SAMPLES_SPEC, _SEED_SPEC, *labels],
        ),
        "metadata": (metadata, []),
    }
