"""Tests for tfvae.plots, and that training never imports matplotlib."""

import sys

import numpy as np
import tensorflow as tf

from tests.conftest import run_python
from tfvae import history, plots


def _size(png: bytes) -> tuple[int, int]:
    return tuple(tf.io.decode_png(png).shape[:2])


def test_pca_finds_the_direction_of_largest_variance(monkeypatch):
    rng = np.random.default_rng(0)
    direction = np.array([3.0, 4.0, 0.0, 0.0]) / 5.0
    points = rng.normal(size=(500, 1)) * 10 * direction + rng.normal(size=(500, 4))
    projected = plots.pca(points)
    assert projected.shape == (500, 2)
    assert abs(np.corrcoef(projected[:, 0], points @ direction)[0, 1]) > 0.99
    assert projected[:, 0].var() > 20 * projected[:, 1].var()
    # Without scikit-learn (optional), higher-dimensional latents use PCA.
    monkeypatch.setitem(sys.modules, "sklearn", None)
    assert plots.embed_2d(points, seed=0)[1] == "PCA"
    assert plots.embed_2d(points[:, :2], seed=0)[1] == "latent"


def test_figures_are_pngs_of_their_size():
    points = np.random.default_rng(1).normal(size=(50, 2))
    for labels in (np.arange(50) % 3, np.arange(50) % 30, None):
        png = plots.scatter_png(points, labels, "latent", "title")
        assert _size(png) == (560, 640)
    curves = history.History([1, 2, 3], [60.0, 50.0, 45.0], [58.0, 52.0, 49.0])
    assert _size(plots.elbo_curve_png(curves, {2: (100, 48.0)}, (1000, 46.0))) == (
        480,
        640,
    )
    assert _size(plots.elbo_curve_png(curves, {}, None)) == (480, 640)


def test_training_and_its_pictures_never_import_matplotlib():
    # Keras imports matplotlib itself when it is installed (and carries on
    # without it), so block it: then only an import of ours can fail.
    result = run_python(
        "import sys\n"
        "sys.modules['matplotlib'] = None\n"
        "import tfvae.training, tfvae.callbacks, tfvae.adapters, tfvae.images\n"
        "assert 'tfvae.plots' not in sys.modules\n"
        "try:\n"
        "    import tfvae.plots\n"
        "except ImportError:\n"
        "    print('plots needs matplotlib')\n"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # The check can fail: the module that does need matplotlib is refused.
    assert "plots needs matplotlib" in result.stdout


def test_one_point_is_embedded_and_drawn():
    # A one-image split (tfvae.evaluate --split=test[:1]) spans no axis.
    coordinates, method = plots.embed_2d(np.ones((1, 5)), seed=0)
    assert (coordinates.shape, method) == ((1, 2), "PCA")
    assert _size(plots.scatter_png(coordinates, np.array([3]), method, "one")) == (
        560,
        640,
    )
