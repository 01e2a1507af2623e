"""Pictures of a VAE as image tensors: grids, and writing them as PNG files.

Every function returns `uint8 [rows, cols, C]` grids (or float images to tile)
ready for `write_png` and `tf.summary.image`. Training draws its TensorBoard
pictures from here, so this module must not import matplotlib (a large,
slow import that training does not need); matplotlib figures live in
`tfvae.plots`.
"""

import math

import tensorflow as tf

from tfvae import iwae, noise
from tfvae.model import VAE

# The manifold grid spans these prior quantiles; 0 and 1 would be infinite z.
MANIFOLD_QUANTILES = (0.05, 0.95)


def grid(images: tf.Tensor, columns: int) -> tf.Tensor:
    """Tiles float images `[N, H, W, C]` in [0, 1] into `uint8 [rows*H, columns*W, C]`.

    Missing cells in the last row are black.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    count, height, width, channels = images.shape
    rows = math.ceil(count / columns)
    images = _pad_to(images, rows * columns)
    tiled = tf.reshape(images, [rows, columns, height, width, channels])
    tiled = tf.transpose(tiled, [0, 2, 1, 3, 4])
    tiled = tf.reshape(tiled, [rows * height, columns * width, channels])
    return tf.cast(tf.round(tf.clip_by_value(tiled, 0.0, 1.0) * 255.0), tf.uint8)


def _pad_to(images: tf.Tensor, count: int) -> tf.Tensor:
    """Returns float `images` `[N, ...]` followed by black ones up to `count`."""
    pad = count - images.shape[0]
    return tf.concat([images, tf.zeros([pad, *images.shape[1:]], images.dtype)], 0)


def write_png(path: str, image: tf.Tensor) -> None:
    """Writes a `uint8 [H, W, C]` image to `path` as PNG."""
    tf.io.write_file(path, tf.io.encode_png(image))


def reconstruction_grid(
    images: tf.Tensor, reconstructions: tf.Tensor, columns: int = 8
) -> tf.Tensor:
    """Returns a `uint8` grid: rows of inputs, each followed by their reconstructions.

    `images` are raw `uint8 [N, H, W, C]`, `reconstructions` float `[N, H, W, C]`
    in [0, 1]. A last, short row of inputs and the one of their
    reconstructions are each padded with black cells, so every reconstruction
    sits right below its input.
    """
    inputs = tf.cast(images, tf.float32) / 255.0
    reconstructions = tf.convert_to_tensor(reconstructions, tf.float32)
    rows = []
    for start in range(0, images.shape[0], columns):
        end = start + columns
        rows += [
            _pad_to(inputs[start:end], columns),
            _pad_to(reconstructions[start:end], columns),
        ]
    return grid(tf.concat(rows, axis=0), columns)


def reconstructions(
    vae: VAE, images: tf.Tensor, labels: tf.Tensor = None, columns: int = 8
) -> tf.Tensor:
    """Returns `reconstruction_grid` of raw `uint8 [N, H, W, C]` `images`.

    A reconstruction is E[x|z] at z = the posterior mean; a conditional VAE
    also takes the images' int `labels` `[N]`.
    """
    inputs = (images, labels) if vae.conditional else images
    return reconstruction_grid(images, vae.likelihood.mean_image(vae(inputs)), columns)


def sample_labels(num_classes: int | None, count: int) -> tf.Tensor | None:
    """Returns the classes the pictures' samples are drawn for: 0, 1, 2, ... cycling.

    int32 `[count]` for a conditional VAE (`num_classes` set), else None.
    """
    return None if num_classes is None else tf.range(count) % num_classes


def prior_samples(vae: VAE, count: int, seed: int) -> tf.Tensor:
    """Returns E[x|z1] for `count` z1 drawn from the model: `[count, H, W, C]`.

    The z come from the stream `noise.PRIOR_SAMPLES` of `seed`, the same every
    epoch, so TensorBoard shows the same z decoded by a decoder that improves.
    A conditional VAE draws them for the classes of `sample_labels`.
    """
    z = vae.sample_latent(count, noise.seed(seed, noise.PRIOR_SAMPLES))
    return vae.decode_mean(z, sample_labels(vae.num_classes, count))


def interpolation_grid(
    evaluable: iwae.EvaluableModel,
    starts: tf.Tensor,
    ends: tf.Tensor,
    steps: int,
    start_labels: tf.Tensor | None = None,
    end_labels: tf.Tensor | None = None,
) -> tf.Tensor:
    """Returns `uint8` rows: start, `steps` decoded means from z_start to z_end, end.

    `starts` and `ends` are raw `uint8 [pairs, H, W, C]`; z are posterior means.
    A conditional model encodes each with its labels `[pairs]` and decodes the
    whole row with the start's class.
    """
    z_start = evaluable.encode_mean(starts, start_labels)
    z_end = evaluable.encode_mean(ends, end_labels)
    weights = tf.linspace(0.0, 1.0, steps)[:, tf.newaxis, tf.newaxis]
    z = (1.0 - weights) * z_start + weights * z_end  # [steps, pairs, latent]
    row_labels = None if start_labels is None else tf.tile(start_labels, [steps])
    decoded = evaluable.decode_mean(
        tf.reshape(z, [-1, evaluable.latent_dim]), row_labels
    )
    decoded = tf.reshape(decoded, [steps, -1, *decoded.shape[1:]])
    rows = tf.concat(
        [
            tf.cast(starts, tf.float32)[tf.newaxis] / 255.0,
            decoded,
            tf.cast(ends, tf.float32)[tf.newaxis] / 255.0,
        ],
        axis=0,
    )  # [steps + 2, pairs, H, W, C]
    rows = tf.transpose(rows, [1, 0, 2, 3, 4])
    return grid(tf.reshape(rows, [-1, *rows.shape[2:]]), steps + 2)


def manifold_grid(evaluable: iwae.EvaluableModel, size: int) -> tf.Tensor:
    """Returns `uint8`: E[x|z] over a `size` x `size` grid of 2-D prior quantiles.

    The quantiles are those of N(0, 1), the standard prior, per axis.
    """
    if evaluable.latent_dim != 2:
        raise ValueError(
            "The latent manifold is drawn for 2-D latents only. Received: "
            f"latent_dim={evaluable.latent_dim}"
        )
    values = tf.math.ndtri(tf.linspace(*MANIFOLD_QUANTILES, size))
    # Rows run from high to low z_2 so the picture's y axis points up.
    z2, z1 = tf.meshgrid(values[::-1], values, indexing="ij")
    z = tf.stack([tf.reshape(z1, [-1]), tf.reshape(z2, [-1])], axis=1)
    return grid(evaluable.decode_mean(z, None), size)
