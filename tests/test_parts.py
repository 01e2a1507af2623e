"""Tests for tfvae.parts: your own bodies, checked against what the head needs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import tiny_images
from tfvae import likelihoods, model, parts, posteriors, priors
from tfvae.table_likelihood import TableHead

SHAPE = (8, 8, 1)


@keras.saving.register_keras_serializable(package="tests")
class _SubclassedDecoderBody(keras.Model):
    """z -> [batch, 8, 8, 1, 1], written as a subclassed model."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(64)
        self.reshape = keras.layers.Reshape((*SHAPE, 1))

    def call(self, z):
        return self.reshape(self.dense(z))


def _sequential_encoder_body():
    return keras.Sequential(
        [
            keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
        ]
    )


def _functional_decoder_body(latent_dim):
    z = keras.Input((latent_dim,))
    hidden = keras.layers.Dense(4 * 4 * 4, activation="relu")(z)
    hidden = keras.layers.Reshape((4, 4, 4))(hidden)
    hidden = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same")(hidden)
    params = keras.layers.Conv2D(1, 3, padding="same")(hidden)
    return keras.Model(z, keras.layers.Reshape((*SHAPE, 1))(params))


def _vae(decoder_body, latent_dim=3):
    return model.VAE(
        parts.Encoder(
            _sequential_encoder_body(), posteriors.NormalDiagHead(latent_dim)
        ),
        parts.Decoder(decoder_body, likelihoods.BernoulliHead(binarize=True)),
        priors.StandardNormal(latent_dim),
        image_shape=SHAPE,
    )


@pytest.mark.parametrize(
    "make_body", [_functional_decoder_body, lambda _: _SubclassedDecoderBody()]
)
def test_your_own_bodies_train_and_round_trip(tmp_path, make_body):
    keras.utils.set_random_seed(0)
    vae = _vae(make_body(3))
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = vae.fit(tiny_images(32), batch_size=16, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    images, seed = tiny_images(4, seed=1), tf.constant([1, 2], tf.int64)
    path = str(tmp_path / "vae.keras")
    vae.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        sum(loaded.neg_elbo_terms(images, seed)), sum(vae.neg_elbo_terms(images, seed))
    )


def test_a_right_sequential_decoder_body_is_taken():
    body = keras.Sequential([keras.layers.Dense(64), keras.layers.Reshape((*SHAPE, 1))])
    assert _vae(body).decoder.body is body


def test_a_decoder_body_of_the_wrong_shape_is_refused_naming_both_shapes():
    body = keras.Sequential([keras.layers.Dense(64), keras.layers.Reshape(SHAPE)])
    with pytest.raises(ValueError) as error:
        _vae(body)
    message = str(error.value)
    assert "must output [batch, 8, 8, 1, 1] for its BernoulliHead" in message
    assert "Received: a body output of shape [1, 8, 8, 1]" in message


def test_an_encoder_body_without_flat_features_is_refused():
    encoder = parts.Encoder(
        keras.Sequential([keras.layers.Dense(4)]), posteriors.NormalDiagHead(3)
    )
    body = keras.Sequential([keras.layers.Dense(64), keras.layers.Reshape((*SHAPE, 1))])
    with pytest.raises(ValueError, match=r"must output \[batch, features\]"):
        model.VAE(
            encoder,
            parts.Decoder(body, likelihoods.BernoulliHead(binarize=True)),
            priors.StandardNormal(3),
            image_shape=SHAPE,
        )


def test_the_parts_refuse_a_prior_over_another_size():
    body = keras.Sequential([keras.layers.Dense(64), keras.layers.Reshape((*SHAPE, 1))])
    with pytest.raises(ValueError, match="The prior must be over the top latent"):
        model.VAE(
            parts.Encoder(_sequential_encoder_body(), posteriors.NormalDiagHead(3)),
            parts.Decoder(body, likelihoods.BernoulliHead(binarize=True)),
            priors.StandardNormal(5),
            image_shape=SHAPE,
        )


def test_check_data_shape_pairs_tables_with_none():
    table = TableHead({"columns": [{"name": "b", "type": "binary"}]})
    parts.check_data_shape(table, None)
    parts.check_data_shape(likelihoods.BernoulliHead(), (4, 4, 1))
    with pytest.raises(ValueError, match="takes image_shape=None"):
        parts.check_data_shape(table, (4, 4, 1))
    with pytest.raises(ValueError, match="takes image_shape=None"):
        parts.check_data_shape(likelihoods.BernoulliHead(), None)


@pytest.mark.parametrize(
    "registry, settings",
    [
        (likelihoods.LIKELIHOODS, dict(binarize=True, gaussian_scale=None)),
        (posteriors.POSTERIORS, dict(latent_dim=2)),
        (priors.PRIORS, dict(latent_dim=2, pseudo_shape=(8, 8, 1), bounded=True)),
    ],
)
def test_a_registered_part_is_named_by_its_registry_key(registry, settings):
    settings = dict(settings, mixture_components=2, prior_components=2)
    for name, build in registry.items():
        assert parts.part_name(build(**settings)) == name


def test_a_part_of_your_own_is_named_by_its_class():
    class MyHead(posteriors.NormalDiagHead):
        registry_name = None

    assert parts.part_name(MyHead(2)) == "MyHead"
