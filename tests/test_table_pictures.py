"""Tests for tfvae.table_pictures: the PNGs of a table VAE, and its samples."""

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tfvae import builder, table_model, table_pictures, tables


@pytest.fixture(scope="module")
def model_and_frame():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "real": rng.normal(size=60),
            "count": rng.poisson(2.0, size=60),
            "kind": rng.choice(["a", "b", "c"], size=60),
        }
    )
    frame.loc[::6, "real"] = np.nan
    keras.utils.set_random_seed(0)
    schema = tables.infer_schema(frame)
    return table_model.build_table_vae(schema, latent_dim=3, hidden_units=(8,)), frame


def test_writes_the_three_pictures(model_and_frame, tmp_path):
    vae, frame = model_and_frame
    labels = np.where(frame["real"] > 0, "up", "down")
    paths = table_pictures.table_pictures(
        vae, frame, labels, str(tmp_path / "pictures"), num_samples=50
    )
    assert [p.rsplit("/", 1)[1] for p in paths] == [
        "marginals.png",
        "correlations.png",
        "latent.png",
    ]
    for path in paths:
        picture = tf.io.decode_png(tf.io.read_file(path))
        assert picture.shape[0] > 100 and picture.shape[1] > 100
    # Without labels.
    assert table_pictures.table_pictures(vae, frame, None, str(tmp_path / "bare"))


def test_refusals(model_and_frame, tmp_path):
    vae, frame = model_and_frame
    with pytest.raises(ValueError, match=r"one value per row, \[60\]"):
        table_pictures.table_pictures(vae, frame, [1, 2], str(tmp_path))
    image_vae = builder.build_vae((4, 4, 1), latent_dim=2, hidden_units=(8,))
    with pytest.raises(ValueError, match="table_pictures takes a table VAE"):
        table_pictures.table_pictures(image_vae, frame, None, str(tmp_path))
