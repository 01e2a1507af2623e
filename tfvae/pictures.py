"""The pictures of an evaluation, drawn from a Keras VAE or an export alike.

`write_pictures` draws, from anything that follows `iwae.EvaluableModel`
(`tfvae.adapters`), the grids of `tfvae.images` and the figures of
`tfvae.plots`, and writes them as PNGs:

  reconstructions.png     inputs (odd rows) over their reconstructions
  prior_samples.png       64 decoded samples from the prior
  interpolations.png      input, decoded means along the line between two
                          posterior means, input (one pair per row; needs
                          at least two images)
  latent_scatter.png      posterior means of the images in 2-D, by label
  latent_manifold.png     2-D latents only: decoded prior quantile grid
  elbo_curve.png          -ELBO (and IWAE points) per training epoch, when
                          the training history is given
"""

import os
from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from tfvae import history, images, iwae, plots

# How many images of the split, samples and grid cells the pictures show.
SHOWN_IMAGES = 32
GRID_COLUMNS = 8
# The most samples one call asks for: an export must serve as many.
PRIOR_SAMPLES = 64
INTERPOLATION_PAIRS = 8
INTERPOLATION_STEPS = 10
MANIFOLD_SIZE = 20


def _decode_png(png: bytes) -> tf.Tensor:
    return tf.io.decode_png(png, channels=3)


def write_pictures(
    evaluable: iwae.EvaluableModel,
    images_and_labels: Iterable[tuple[tf.Tensor, tf.Tensor | None]],
    output_dir: str,
    seed: int,
    split: str,
    curves: history.History | None = None,
    iwae_history: dict[int, tuple[int, float]] | None = None,
    final_nll: tuple[int, float] | None = None,
) -> dict[str, tf.Tensor]:
    """Writes the evaluation's PNGs to `output_dir`; returns {file name: image}.

    Args:
      evaluable: the model (`adapters.VAEAdapter` or `SavedModelAdapter`).
      images_and_labels: batches `(uint8 [batch, H, W, C], int labels
        [batch] or None)` of the images evaluated; every image is encoded
        for the latent scatter.
      output_dir: where the PNGs go; created if absent.
      seed: seeds the prior samples (and t-SNE).
      split: names the images in the scatter's title, e.g. "test".
      curves: the training curves; the ELBO curve is drawn only if given.
      iwae_history: {epoch: (k, nll)} of the training's IWAE passes.
      final_nll: (k, nll) of this evaluation, a point on the curve.

    Returns:
      {file name: `uint8 [rows, cols, C]`}, ready for `tf.summary.image`.
    """
    conditional = evaluable.num_classes is not None
    means, labels, shown, shown_labels = [], [], [], []
    for batch_images, batch_labels in images_and_labels:
        # A conditional model encodes (and decodes) with the images' classes.
        condition = batch_labels if conditional else None
        means.append(evaluable.encode_mean(batch_images, condition).numpy())
        if batch_labels is not None:
            labels.append(batch_labels.numpy())
        if sum(len(s) for s in shown) < SHOWN_IMAGES:
            shown.append(batch_images)
            shown_labels.append(condition)
    shown = tf.concat(shown, axis=0)[:SHOWN_IMAGES]
    shown_labels = (
        tf.concat(shown_labels, axis=0)[:SHOWN_IMAGES] if conditional else None
    )
    coordinates, method = plots.embed_2d(np.concatenate(means), seed)
    pictures = {
        "reconstructions.png": evaluable.reconstruction_grid(shown, shown_labels),
        "prior_samples.png": images.grid(
            evaluable.prior_samples(PRIOR_SAMPLES, seed), GRID_COLUMNS
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
    # An interpolation runs between two images: none with a single one.
    pairs = min(INTERPOLATION_PAIRS, len(shown) // 2)
    if pairs:
        pictures["interpolations.png"] = images.interpolation_grid(
            evaluable,
            shown[:pairs],
            shown[pairs : 2 * pairs],
            INTERPOLATION_STEPS,
            None if shown_labels is None else shown_labels[:pairs],
            None if shown_labels is None else shown_labels[pairs : 2 * pairs],
        )
    # A conditional decoder needs a class for each cell: no single picture.
    if evaluable.latent_dim == 2 and not conditional:
        pictures["latent_manifold.png"] = images.manifold_grid(evaluable, MANIFOLD_SIZE)
    if curves is not None:
        pictures["elbo_curve.png"] = _decode_png(
            plots.elbo_curve_png(curves, iwae_history or {}, final_nll)
        )
    os.makedirs(output_dir, exist_ok=True)
    for name, picture in pictures.items():
        images.write_png(os.path.join(output_dir, name), picture)
    return pictures
