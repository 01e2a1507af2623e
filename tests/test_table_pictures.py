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


def test_a_conditional_vaes_labels_are_checked_not_truncated(model_and_frame, tmp_path):
    vae, frame = model_and_frame
    keras.utils.set_random_seed(0)
    conditional = table_model.build_table_vae(
        vae.likelihood.schema,
        latent_dim=2,
        hidden_units=(8,),
        conditional=True,
        num_classes=2,
    )
    with pytest.raises(ValueError, match="needs each row's class as an int code"):
        table_pictures.table_pictures(
            conditional, frame, np.full(len(frame), 0.7), str(tmp_path)
        )
    with pytest.raises(ValueError, match="needs each row's class as an int code"):
        table_pictures.table_pictures(conditional, frame, None, str(tmp_path))


def test_count_bins_are_centred_on_integers():
    edges = table_pictures._bins("count", 0.3, 4.7)
    np.testing.assert_array_equal(edges, np.arange(-0.5, 6.0))
    assert len(table_pictures._bins("real", 0.3, 4.7)) == table_pictures._BINS + 1


def test_a_column_without_present_cells_is_left_empty(model_and_frame, tmp_path):
    vae, frame = model_and_frame
    blank = frame.assign(real=np.nan)
    paths = table_pictures.table_pictures(
        vae, blank, None, str(tmp_path), num_samples=20
    )
    assert len(paths) == 3
