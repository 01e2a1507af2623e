"""Tests for tfvae.images: grids of images as tensors and PNG files."""

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import TINY_SHAPE, tiny_images, tiny_vae
from tfvae import adapters, images


def _cell(picture, row, column, height, width):
    return picture[
        row * height : (row + 1) * height, column * width : (column + 1) * width
    ]


def test_grid_tiles_row_by_row_and_leaves_missing_cells_black():
    values = tf.reshape(tf.range(1, 6, dtype=tf.float32) / 10.0, [5, 1, 1, 1])
    picture = images.grid(tf.tile(values, [1, 2, 3, 1]), columns=3).numpy()
    assert picture.shape == (2 * 2, 3 * 3, 1) and picture.dtype == np.uint8
    cells = [_cell(picture, r, c, 2, 3)[0, 0, 0] for r in range(2) for c in range(3)]
    assert cells == [26, 51, 76, 102, 128, 0]  # round(255 * v); one black cell.


def test_reconstruction_grid_puts_each_reconstruction_below_its_input():
    # 10 images in rows of 8: the last row holds 2 inputs, and their 2
    # reconstructions go below them, not beside them.
    count, columns = 10, 8
    height, width, _ = TINY_SHAPE
    inputs = tiny_images(count, seed=3)
    reconstructions = 1.0 - tf.cast(inputs, tf.float32) / 255.0
    picture = images.reconstruction_grid(inputs, reconstructions, columns).numpy()
    assert picture.shape == (4 * height, columns * width, 1)
    for index in range(count):
        row, column = divmod(index, columns)
        np.testing.assert_array_equal(
            _cell(picture, 2 * row, column, height, width), inputs[index]
        )
        np.testing.assert_array_equal(
            _cell(picture, 2 * row + 1, column, height, width),
            255 - inputs[index].numpy(),
        )
    for row in (2, 3):  # The short rows are padded with black.
        assert not _cell(picture, row, 2, height, width).any()


def test_write_png_round_trips(tmp_path):
    picture = images.grid(tf.random.stateless_uniform([6, 4, 4, 3], [0, 1]), 3)
    images.write_png(str(tmp_path / "grid.png"), picture)
    np.testing.assert_array_equal(
        tf.io.decode_png(tf.io.read_file(str(tmp_path / "grid.png"))), picture
    )


def test_interpolation_rows_start_and_end_at_the_inputs(tmp_path):
    adapter = adapters.VAEAdapter(tiny_vae(tmp_path))
    starts, ends = tiny_images(3, seed=6), tiny_images(3, seed=7)
    grid = images.interpolation_grid(adapter, starts, ends, steps=5).numpy()
    height, width, _ = TINY_SHAPE
    assert grid.shape == (3 * height, 7 * width, 1)
    np.testing.assert_array_equal(grid[height : 2 * height, :width], starts[1])
    np.testing.assert_array_equal(grid[height : 2 * height, -width:], ends[1])
    first_step = adapter.decode_mean(adapter.encode_mean(starts))[1]
    np.testing.assert_allclose(
        grid[height : 2 * height, width : 2 * width] / 255.0, first_step, atol=0.5 / 255
    )


def test_manifold_decodes_prior_quantiles_with_z2_rising_upwards(tmp_path):
    vae = tiny_vae(tmp_path, latent_dim=2)
    picture = images.manifold_grid(adapters.VAEAdapter(vae), 3).numpy()
    height, width, _ = TINY_SHAPE
    assert picture.shape == (3 * height, 3 * width, 1)
    low, high = -1.6448536, 1.6448536  # The 5% and 95% quantiles of N(0, 1).
    expected = images.grid(vae.decode_mean(tf.constant([[low, high]])), 1)
    np.testing.assert_array_equal(_cell(picture, 0, 0, height, width), expected)
    expected = images.grid(vae.decode_mean(tf.constant([[high, low]])), 1)
    np.testing.assert_array_equal(_cell(picture, 2, 2, height, width), expected)


def test_manifold_needs_a_2d_latent(tmp_path):
    vae = tiny_vae(tmp_path, latent_dim=3)
    with pytest.raises(ValueError, match="latent_dim=3"):
        images.manifold_grid(adapters.VAEAdapter(vae), 4)
