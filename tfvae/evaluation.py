"""Evaluating a trained VAE: the settings, the run, and what it writes.

`evaluate_run(EvalConfig(...))` is `python -m tfvae.evaluate`. It loads the
model (a training run through `tfvae.run_dir`, or an export through its
signatures, `tfvae.adapters`), computes the negative ELBO and the IWAE bound
on a split (`tfvae.iwae`), and draws the pictures (`tfvae.images`,
`tfvae.plots`). What it writes to its output dir (`<model_dir>/eval` by
default):

  metrics.json            per-example means in nats, named by
                          `iwae.split_metrics`: <split>_neg_elbo,
                          <split>_reconstruction, <split>_kl, <split>_nll
                          (-L_k at k = num_importance_samples) and
                          <split>_nll_k<k'> for the sweep; bits per dimension
                          when the likelihood is discrete over pixel values
  reconstructions.png     inputs (odd rows) over their reconstructions
  prior_samples.png       64 decoded samples from the prior
  interpolations.png      input, decoded means along the line between two
                          posterior means, input (one pair per row)
  latent_scatter.png      posterior means of the split in 2-D, by label
  latent_manifold.png     2-D latents only: decoded prior quantile grid
  elbo_curve.png          -ELBO (and IWAE points) per training epoch
  events.out.tfevents.*   the same numbers and pictures for TensorBoard
"""

import dataclasses
import json
import math
import os
import time
from collections.abc import Iterable

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfvae import (
    adapters,
    data,
    errors,
    images,
    iwae,
    plots,
    run_dir,
    saved_model,
    settings,
)
from tfvae import config as config_lib

# Pictures: how many images of the split, samples and grid cells they show.
_SHOWN_IMAGES = 32
_GRID_COLUMNS = 8
_PRIOR_SAMPLES = 64
_INTERPOLATION_PAIRS = 8
_INTERPOLATION_STEPS = 10
_MANIFOLD_SIZE = 20


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how; `python -m tfvae.evaluate`'s flags."""

    model_dir: str | None = settings.setting(
        None, "Run directory written by tfvae.train.", "string"
    )
    export_dir: str | None = settings.setting(
        None,
        "Instead of --model_dir: an exported SavedModel, its version folder "
        "(export/mnist/1) or its model base path (export/mnist: the latest "
        "version, as TF Serving does). Needs --output_dir.",
        "string",
    )
    output_dir: str | None = settings.setting(
        None, "Where results go. Unset: <model_dir>/eval.", "string"
    )
    split: str = settings.setting(
        "test",
        "TFDS split to evaluate; slices work, e.g. test[:1000].",
        "string",
        check=lambda v: None if v else "must name a split, e.g. test",
    )
    num_importance_samples: int = settings.setting(
        5000,
        "k of the IWAE bound; the sweep 1, 10, 100, 1000, 5000 is reported up to k.",
        "integer",
        minimum=1,
    )
    batch_size: int = settings.setting(100, "Images per batch.", "integer", minimum=1)
    samples_per_chunk: int = settings.setting(
        200,
        "Importance samples drawn per compiled call: memory grows with "
        "batch_size * samples_per_chunk. The k samples of a batch are drawn in "
        "chunks of this size, so results depend on it (within Monte Carlo noise).",
        "integer",
        minimum=1,
    )
    data_dir: str | None = settings.setting(
        None, "TFDS data directory. Unset: the run's --data_dir.", "string"
    )
    manual_dir: str | None = settings.setting(
        None,
        "Original dataset files, to build the dataset offline. Unset: the run's "
        "--manual_dir.",
        "string",
    )
    seed: int = settings.setting(
        0, "Seed of the binarization and z noise.", "integer", minimum=0
    )
    jit_compile: bool = settings.setting(
        False,
        "Compile the per-chunk computation with XLA. It draws other (equally "
        "valid) random numbers, so results differ within Monte Carlo noise; "
        "see the README for its speed on CPU.",
        "bool",
    )

    def __post_init__(self):
        settings.check_values(self)
        if bool(self.model_dir) == bool(self.export_dir):
            raise errors.UsageError(
                "Pass exactly one of --model_dir (a training run) and --export_dir "
                "(an exported SavedModel version folder). Received: "
                f"--model_dir={self.model_dir} --export_dir={self.export_dir}"
            )
        if self.export_dir and not self.output_dir:
            raise errors.UsageError(
                "--output_dir is required with --export_dir (results are not "
                "written into a SavedModel), e.g. --output_dir=eval/mnist."
            )

    @property
    def results_dir(self) -> str:
        """Where results go: `output_dir`, else `<model_dir>/eval`."""
        return self.output_dir or run_dir.path(self.model_dir, run_dir.EVAL)


def split_name(split: str) -> str:
    """Returns the split without TFDS slicing ("test" for "test[:1000]")."""
    return split.split("[")[0]


def _decode_png(png: bytes) -> tf.Tensor:
    return tf.io.decode_png(png, channels=3)


def write_pictures(
    evaluable: iwae.EvaluableModel,
    images_and_labels: Iterable[tuple[tf.Tensor, tf.Tensor | None]],
    output_dir: str,
    seed: int,
    split: str,
    history: run_dir.History | None = None,
    iwae_history: dict[int, tuple[int, float]] | None = None,
    final_nll: tuple[int, float] | None = None,
) -> dict[str, tf.Tensor]:
    """Writes the evaluation's PNGs to `output_dir`; returns {file name: image}.

    `images_and_labels` yields batches `(uint8 [batch, H, W, C], int labels
    [batch] or None)` of the split being evaluated; every image is encoded
    for the latent scatter. The ELBO curve is drawn only if `history` is given.
    Images are `uint8 [rows, cols, C]`, ready for `tf.summary.image`.
    """
    conditional = evaluable.num_classes is not None
    means, labels, shown, shown_labels = [], [], [], []
    for batch_images, batch_labels in images_and_labels:
        # A conditional model encodes (and decodes) with the images' classes.
        condition = batch_labels if conditional else None
        means.append(evaluable.encode_mean(batch_images, condition).numpy())
        if batch_labels is not None:
            labels.append(batch_labels.numpy())
        if sum(len(s) for s in shown) < _SHOWN_IMAGES:
            shown.append(batch_images)
            shown_labels.append(condition)
    shown = tf.concat(shown, axis=0)[:_SHOWN_IMAGES]
    shown_labels = (
        tf.concat(shown_labels, axis=0)[:_SHOWN_IMAGES] if conditional else None
    )
    pairs = min(_INTERPOLATION_PAIRS, len(shown) // 2)
    coordinates, method = plots.embed_2d(np.concatenate(means), seed)
    pictures = {
        "reconstructions.png": evaluable.reconstruction_grid(shown, shown_labels),
        "prior_samples.png": images.grid(
            evaluable.prior_samples(_PRIOR_SAMPLES, seed), _GRID_COLUMNS
        ),
        "interpolations.png": images.interpolation_grid(
            evaluable,
            shown[:pairs],
            shown[pairs : 2 * pairs],
            _INTERPOLATION_STEPS,
            None if shown_labels is None else shown_labels[:pairs],
            None if shown_labels is None else shown_labels[pairs : 2 * pairs],
        ),
        "latent_scatter.png": _decode_png(
            plots.scatter_png(
                coordinates,
                np.concatenate(labels) if labels else None,
                method,
                f"Posterior means of the {split} set "
                + ("(the 2-D latent)" if method == "latent" else f"({method})"),
            )
        ),
    }
    # A conditional decoder needs a class for each cell: no single picture.
    if evaluable.latent_dim == 2 and not conditional:
        pictures["latent_manifold.png"] = images.manifold_grid(
            evaluable, _MANIFOLD_SIZE
        )
    if history is not None:
        pictures["elbo_curve.png"] = _decode_png(
            plots.elbo_curve_png(history, iwae_history or {}, final_nll)
        )
    os.makedirs(output_dir, exist_ok=True)
    for name, picture in pictures.items():
        images.write_png(os.path.join(output_dir, name), picture)
    return pictures


def _load(
    eval_config: EvalConfig,
) -> tuple[config_lib.Config, iwae.EvaluableModel, str]:
    """Returns the training `Config`, the model `eval_config` names, its path."""
    if eval_config.model_dir:
        config, _, vae = run_dir.load_vae(eval_config.model_dir)
        evaluable = adapters.VAEAdapter(vae, eval_config.jit_compile)
        return config, evaluable, eval_config.model_dir
    export_dir = saved_model.latest_version(eval_config.export_dir)
    evaluable = adapters.SavedModelAdapter(export_dir)
    # The most samples one call of sample or log_weights asks for.
    needed = max(
        min(eval_config.samples_per_chunk, eval_config.num_importance_samples),
        _PRIOR_SAMPLES,
    )
    if needed > evaluable.max_samples:
        raise errors.UsageError(
            f"{export_dir} serves at most {evaluable.max_samples} samples per call "
            f"(its max_samples), and this evaluation asks for {needed} at once "
            f"(--samples_per_chunk, and {_PRIOR_SAMPLES} prior samples). Lower "
            "--samples_per_chunk, or export the run again with a larger "
            "--export_max_samples."
        )
    return evaluable.config, evaluable, export_dir


def evaluate_run(eval_config: EvalConfig) -> dict:
    """Evaluates a training run or an exported SavedModel; returns metrics.json's dict.

    The dataset, and the data/manual dirs unless `eval_config` sets them, come
    from the model's saved training configuration. Results go to
    `eval_config.results_dir`; an export's folder stays untouched. See the
    module docstring for what is written.
    """
    config, evaluable, model_name = _load(eval_config)
    model_dir, output_dir = eval_config.model_dir, eval_config.results_dir
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise errors.UsageError(
            f"{output_dir}, where the results go, is a file, not a folder. Pass "
            "another --output_dir, or move the file away."
        )
    # Read now, so that a damaged file stops the evaluation before its long
    # computation. An export has no training history; its curve is not drawn.
    history = run_dir.read_history(model_dir) if model_dir else None
    iwae_history = run_dir.read_iwae_history(model_dir) if model_dir else None
    builder, info = data.prepare(
        config.dataset,
        eval_config.data_dir or config.data_dir,
        eval_config.manual_dir or config.manual_dir,
        config.image_source,
    )
    split, batch_size = eval_config.split, eval_config.batch_size
    num_samples = eval_config.num_importance_samples
    try:
        num_examples = builder.info.splits[split].num_examples
    except (KeyError, ValueError) as e:
        raise errors.UsageError(
            f"--split={split} is not a split of {config.dataset_name}: use one of "
            f"{sorted(builder.info.splits)}, or a TFDS slice such as test[:1000]."
        ) from e
    logging.info(
        "Evaluating %s on %s %s (%d images): -ELBO and the IWAE bound with k=%d.",
        model_name,
        config.dataset_name,
        split,
        num_examples,
        num_samples,
    )
    start = time.perf_counter()
    means = iwae.evaluate_batches(
        evaluable,
        data.batches(
            (data.split_images_and_labels if config.conditional else data.split_images)(
                builder, split
            ),
            batch_size,
        ),
        num_samples,
        eval_config.samples_per_chunk,
        eval_config.seed,
        keras.utils.Progbar(
            math.ceil(num_examples / batch_size),
            unit_name="batch",
            stateful_metrics=["neg_elbo", "nll"],
        ),
    )
    seconds = time.perf_counter() - start
    prefix = split_name(split)
    metrics = {
        **iwae.split_metrics(means, prefix, info.image_shape, evaluable.discrete),
        "split": split,
        "num_examples": num_examples,
        "num_importance_samples": num_samples,
        "samples_per_chunk": eval_config.samples_per_chunk,
        "batch_size": batch_size,
        "seed": eval_config.seed,
        "jit_compile": eval_config.jit_compile,
        "seconds": round(seconds, 1),
        "dataset": info.name,
        "likelihood": config.likelihood,
        "model": model_name,
    }

    if info.num_classes is not None:
        pairs = data.split_images_and_labels(builder, split).batch(batch_size)
    else:
        pairs = (
            (batch, None)
            for batch in data.split_images(builder, split).batch(batch_size)
        )
    pictures = write_pictures(
        evaluable,
        pairs,
        output_dir,
        eval_config.seed,
        split,
        history=history,
        iwae_history=iwae_history,
        # The curve shows test figures: another split's bound would not match.
        final_nll=(num_samples, metrics[f"{prefix}_nll"])
        if prefix == data.TEST_SPLIT
        else None,
    )
    run_dir.write_metrics(output_dir, metrics)
    # At the last trained epoch, so TensorBoard shows them beside the curves.
    step = history.epochs[-1] if history else 0
    with tf.summary.create_file_writer(output_dir).as_default():
        for name, value in metrics.items():
            if name.startswith(f"{prefix}_"):
                tf.summary.scalar(name, value, step=step)
        for name, picture in pictures.items():
            tf.summary.image(name.removesuffix(".png"), picture[tf.newaxis], step=step)
    logging.info(
        "Wrote %s and %d pictures to %s: %s",
        run_dir.METRICS,
        len(pictures),
        output_dir,
        json.dumps(metrics, sort_keys=True),
    )
    return metrics
