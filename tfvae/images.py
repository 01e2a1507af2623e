"""Pictures of a VAE: image grids as PNG files and TensorBoard summaries."""

import math

import tensorflow as tf

from tfvae.model import VAE

# Seeds the prior samples shown every epoch, so TensorBoard shows the same z
# decoded by a decoder that improves.
PRIOR_SAMPLE_SEED_OFFSET = 1


def grid(images: tf.Tensor, columns: int) -> tf.Tensor:
    """Tiles float images `[N, H, W, C]` in [0, 1] into `uint8 [rows*H, columns*W, C]`.

    Missing cells in the last row are black.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    count, height, width, channels = images.shape
    rows = math.ceil(count / columns)
    pad = rows * columns - count
    images = tf.concat([images, tf.zeros([pad, height, width, channels])], axis=0)
    tiled = tf.reshape(images, [rows, columns, height, width, channels])
    tiled = tf.transpose(tiled, [0, 2, 1, 3, 4])
    tiled = tf.reshape(tiled, [rows * height, columns * width, channels])
    return tf.cast(tf.round(tf.clip_by_value(tiled, 0.0, 1.0) * 255.0), tf.uint8)


def write_png(path: str, image: tf.Tensor) -> None:
    """Writes a `uint8 [H, W, C]` image to `path` as PNG."""
    tf.io.write_file(path, tf.io.encode_png(image))


def reconstruction_grid(
    images: tf.Tensor, reconstructions: tf.Tensor, columns: int = 8
) -> tf.Tensor:
    """Returns a `uint8` grid: rows of inputs, each followed by their reconstructions.

    `images` are raw `uint8 [N, H, W, C]`, `reconstructions` float `[N, H, W, C]`
    in [0, 1].
    """
    inputs = tf.cast(images, tf.float32) / 255.0
    rows = []
    for start in range(0, images.shape[0], columns):
        end = start + columns
        rows += [inputs[start:end], reconstructions[start:end]]
    return grid(tf.concat(rows, axis=0), columns)


def reconstructions(vae: VAE, images: tf.Tensor, columns: int = 8) -> tf.Tensor:
    """Returns `reconstruction_grid` of raw `uint8 [N, H, W, C]` `images`.

    A reconstruction is E[x|z] at z = the posterior mean.
    """
    return reconstruction_grid(images, vae.likelihood.mean_image(vae(images)), columns)


def prior_samples(vae: VAE, count: int, seed: int) -> tf.Tensor:
    """Returns E[x|z] for `count` z ~ p(z) drawn with `seed`: `[count, H, W, C]`."""
    z = tf.random.stateless_normal(
        [count, vae.latent_dim], seed=[seed, PRIOR_SAMPLE_SEED_OFFSET]
    )
    return vae.decode_mean(z)
