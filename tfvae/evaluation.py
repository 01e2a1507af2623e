"""Evaluating a VAE: the IWAE bound, the negative ELBO and the pictures.

`evaluate(model, data)` evaluates a Keras `VAE`, or an export through its
signatures (`tfvae.adapters`), on a `tf.data.Dataset` or NumPy arrays: the
negative ELBO and the importance-weighted bound on -log p(x) (`tfvae.iwae`),
and, given an `output_dir`, the pictures (`tfvae.pictures`).
`tfvae.run_eval` (`python -m tfvae.evaluate`) runs the same computation on
a split of a training run's dataset.
"""

import os
import types

import keras
import tensorflow as tf

from tfvae import (
    adapters,
    batches,
    errors,
    folders,
    history,
    iwae,
    model,
    pictures,
    saved_model,
)

# The defaults of `evaluate` and of `python -m tfvae.evaluate`'s flags
# (with `iwae.SAMPLES_PER_CHUNK`).
NUM_SAMPLES = 5000
BATCH_SIZE = 100


def load_evaluable(
    vae_or_path: model.VAE | str,
    num_samples: int,
    batch_size: int,
    samples_per_chunk: int,
    jit_compile: bool,
) -> tuple[iwae.EvaluableModel, str]:
    """Returns the model to evaluate, as `iwae.EvaluableModel`, and its name.

    Args:
      vae_or_path: a Keras `VAE`, or an export's version folder or base path.
      num_samples, batch_size, samples_per_chunk: the evaluation's sizes,
        checked against what the export serves per call.
      jit_compile: compile a VAE's per-chunk computation with XLA.

    Returns:
      (`adapters.VAEAdapter` or `adapters.SavedModelAdapter`, the VAE's name
      or the export's version folder).

    Raises:
      UsageError: an export that serves fewer samples, or images times
        samples, per call than the evaluation asks for; refused before any
        work.
    """
    if isinstance(vae_or_path, model.VAE):
        if vae_or_path.likelihood.tabular:
            raise errors.UsageError(
                "evaluate_model takes image VAEs: evaluate a table VAE with "
                "tfvae.evaluate_table(vae, rows)"
            )
        return adapters.VAEAdapter(vae_or_path, jit_compile), vae_or_path.name
    export_dir = saved_model.latest_version(os.fspath(vae_or_path))
    evaluable = adapters.SavedModelAdapter(export_dir)
    # The most samples one call of sample or log_weights asks for.
    samples = min(samples_per_chunk, num_samples)
    needed = max(samples, pictures.PRIOR_SAMPLES)
    if needed > evaluable.max_samples:
        raise errors.UsageError(
            f"{export_dir} serves at most {evaluable.max_samples} samples per call "
            f"(its max_samples), and this evaluation asks for {needed} at once "
            f"(samples_per_chunk, and {pictures.PRIOR_SAMPLES} prior samples). "
            "Lower samples_per_chunk (--samples_per_chunk), or export the run "
            "again with a larger max_samples (--export_max_samples)."
        )
    if batch_size * samples > evaluable.max_batch_samples:
        raise errors.UsageError(
            f"{export_dir} serves at most {evaluable.max_batch_samples} images "
            f"times samples per call (its max_batch_samples), and this evaluation "
            f"asks for {batch_size} x {samples}. Lower batch_size (--batch_size) "
            "or samples_per_chunk (--samples_per_chunk)."
        )
    return evaluable, export_dir


def _batches(
    evaluable: iwae.EvaluableModel, images, batch_size: int
) -> tuple[tf.data.Dataset, bool]:
    """Returns (batches of (uint8 images, labels) or of images, whether labelled).

    `images` is a `tf.data.Dataset` or NumPy arrays (see `evaluate`); its
    elements are read by `batches.unpack_batch`, which refuses images of
    another dtype, and a conditional model's images without labels.
    """
    if not isinstance(images, tf.data.Dataset):
        images = tf.data.Dataset.from_tensor_slices(images)
    spec = images.element_spec
    # Read here, before the map whose tracing would wrap a message.
    image_spec, label_spec = batches.split_form(spec)
    labelled = label_spec is not None
    # What unpack_batch reads of a VAE: labels are kept when there are any
    # (the latent scatter shows them); the likelihood names the image dtype
    # (an export's signatures take uint8 pixels).
    reader = types.SimpleNamespace(
        conditional=labelled or evaluable.num_classes is not None,
        likelihood=evaluable.vae.likelihood
        if isinstance(evaluable, adapters.VAEAdapter)
        else evaluable,
        image_shape=tuple(evaluable.image_shape),
    )
    if not isinstance(image_spec, tf.TensorSpec):
        raise ValueError(
            "The images must be a tf.data.Dataset or NumPy arrays of images, "
            "(images, labels) pairs or TFDS dicts {'image': ..., 'label': ...}. "
            f"Received: elements {spec}"
        )
    batches.check_images(
        image_spec.dtype, image_spec.shape, reader.likelihood, reader.image_shape
    )

    def unpack(*element):
        images, labels = batches.unpack_batch(
            reader, element[0] if len(element) == 1 else element
        )
        return (images, labels) if reader.conditional else images

    pairs = images.map(unpack)
    rank = len(evaluable.image_shape)
    shape = image_spec.shape
    if shape.rank == rank:
        pairs = pairs.batch(batch_size)
    return pairs.prefetch(tf.data.AUTOTUNE), labelled


def compute(
    evaluable: iwae.EvaluableModel,
    images,
    *,
    num_samples: int,
    batch_size: int,
    samples_per_chunk: int,
    seed: int,
    output_dir: str | None,
    split: str | None,
    progbar: keras.utils.Progbar | None = None,
    curves: history.History | None = None,
    iwae_history: dict | None = None,
) -> tuple[dict, dict]:
    """Computes the bound, and draws the pictures if `output_dir` is given.

    `images`, the sizes, `seed` and `output_dir` are `evaluate`'s; `split`
    prefixes the metrics' names (None: no prefix); `progbar` shows the
    running figures; `curves` and `iwae_history` (a run's) add the -ELBO
    curve to the pictures.

    Returns:
      (the metrics, per-image means in nats; {picture file name: `uint8`
      image}, empty without `output_dir`).
    """
    pairs, labelled = _batches(evaluable, images, batch_size)
    conditional = evaluable.num_classes is not None
    # An unconditional model scores the images alone.
    scored = pairs.map(lambda x, y: x) if labelled and not conditional else pairs
    means = iwae.evaluate_batches(
        evaluable, scored, num_samples, samples_per_chunk, seed, progbar
    )
    metrics = iwae.split_metrics(
        means, split, evaluable.image_shape, evaluable.discrete
    )
    drawn = {}
    if output_dir is not None:
        drawn = pictures.write_pictures(
            evaluable,
            pairs if labelled else ((batch, None) for batch in pairs),
            output_dir,
            seed,
            split or "evaluated",
            curves=curves,
            iwae_history=iwae_history,
            final_nll=(num_samples, means["nll"]) if curves else None,
        )
    return metrics, drawn


def evaluate(
    vae_or_path: model.VAE | str,
    images,
    *,
    num_samples: int = NUM_SAMPLES,
    batch_size: int = BATCH_SIZE,
    samples_per_chunk: int = iwae.SAMPLES_PER_CHUNK,
    seed: int = 0,
    output_dir: str | None = None,
    jit_compile: bool = False,
) -> dict[str, float]:
    """Evaluates a VAE, or an export, on images: -ELBO and the IWAE bound.

    The IWAE bound (Burda et al. 2015) -L_k on -log p(x) (on -log p(x|y) for
    a conditional VAE) is computed with k = `num_samples` importance samples
    per image, drawn in chunks with a running logsumexp, so memory is flat
    in k; -L_k' is reported for every k' of 1, 10, 100, 1000, 5000 below k.

    Args:
      vae_or_path: a Keras `VAE` (tfvae's, with any networks), or the path
        of an export (its version folder, or its model base path: the
        latest version).
      images: a `tf.data.Dataset` of raw `uint8` images, `(images, labels)`
        pairs or TFDS dicts `{"image": ..., "label": ...}`, unbatched
        (`[H, W, C]` each: batched here by `batch_size`) or batched
        (`[batch, H, W, C]`); or NumPy arrays in the same forms (`images`,
        `(images, labels)`, a dict), the first axis counting images. Labels
        are needed by a conditional VAE; an unconditional one uses them only
        to colour the latent scatter. Other dtypes are refused, naming the
        conversion (`batches.unpack_batch`).
      num_samples: k of the IWAE bound.
      batch_size: images per batch, for unbatched `images`.
      samples_per_chunk: importance samples per call; memory grows with
        `batch_size * samples_per_chunk`. Results depend on it within Monte
        Carlo noise.
      seed: seeds the observation and z noise (reproducible for a given
        seed, batch size and chunk size).
      output_dir: if given, the pictures of `tfvae.pictures` are written
        there (created if absent).
      jit_compile: compile the per-chunk computation with XLA (a Keras VAE).

    Returns:
      Per-image means, in nats: `neg_elbo`, `reconstruction`, `kl`, `nll`
      (-L_k at k = `num_samples`), `nll_k<k'>` for the sweep; with
      `_bits_per_dim` twins for likelihoods over pixel values
      (`categorical`, `logistic_mixture`); `num_importance_samples` (k).

    Example:
      >>> (images, labels), _ = keras.datasets.mnist.load_data()
      >>> metrics = evaluation.evaluate(vae, images[:1000, ..., None],
      ...                               num_samples=100)
      >>> metrics["nll"], metrics["neg_elbo"]
    """
    # Refused before any work: the dataset's own error would come at the end.
    for name, value in (
        ("num_samples", num_samples),
        ("batch_size", batch_size),
        ("samples_per_chunk", samples_per_chunk),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"{name} must be a positive integer. Received: {name}={value!r}"
            )
    if output_dir is not None:
        folders.check_writable(output_dir, f"output_dir={output_dir}")
    evaluable, _ = load_evaluable(
        vae_or_path, num_samples, batch_size, samples_per_chunk, jit_compile
    )
    metrics, _ = compute(
        evaluable,
        images,
        num_samples=num_samples,
        batch_size=batch_size,
        samples_per_chunk=samples_per_chunk,
        seed=seed,
        output_dir=output_dir,
        split=None,
    )
    return {**metrics, "num_importance_samples": num_samples}
