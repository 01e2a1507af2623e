"""Tests for tfvae.batches: the forms a batch comes in, and its dtype check."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import tiny_images, tiny_vae
from tfvae import batches

LABELS = tf.constant(np.arange(8) % 4, tf.int64)


@pytest.fixture(scope="module")
def vaes(tmp_path_factory):
    path = tmp_path_factory.mktemp("vaes")
    return {
        "plain": tiny_vae(path),
        "conditional": tiny_vae(path, conditional=True),
    }


@pytest.mark.parametrize(
    "form",
    [
        lambda images: images,
        lambda images: (images,),
        lambda images: (images, LABELS),
        lambda images: {"image": images, "label": LABELS},
        lambda images: {"image": images},
    ],
    ids=["images", "one-tuple", "pair", "tfds-dict", "dict-without-label"],
)
def test_an_unconditional_vae_uses_the_images_and_ignores_labels(vaes, form):
    images = tiny_images(8)
    unpacked, labels = batches.unpack_batch(vaes["plain"], form(images))
    np.testing.assert_array_equal(unpacked, images)
    assert labels is None


@pytest.mark.parametrize(
    "form",
    [lambda i: (i, LABELS), lambda i: {"image": i, "label": LABELS}],
    ids=["pair", "tfds-dict"],
)
def test_a_conditional_vae_takes_pairs_and_tfds_dicts(vaes, form):
    images, labels = batches.unpack_batch(vaes["conditional"], form(tiny_images(8)))
    np.testing.assert_array_equal(labels, LABELS)


def test_a_conditional_vae_without_labels_is_refused(vaes):
    with pytest.raises(ValueError, match="needs each image's class: pass"):
        batches.unpack_batch(vaes["conditional"], tiny_images(8))


@pytest.mark.parametrize(
    "images, received, fix",
    [
        (
            tf.cast(tiny_images(2), tf.float32) / 255.0,
            "float32",
            "tf.cast(tf.round(images * 255), tf.uint8) for pixels in [0, 1]",
        ),
        (tf.cast(tiny_images(2), tf.int64), "int64", "tf.cast(images, tf.uint8)"),
        # int32 is pixels only as a multi-worker pipeline's transport.
        (tf.cast(tiny_images(2), tf.int32), "int32", "tf.cast(images, tf.uint8)"),
    ],
)
def test_images_of_another_dtype_are_refused_with_the_fix(vaes, images, received, fix):
    with pytest.raises(ValueError) as error:
        batches.unpack_batch(vaes["plain"], images)
    message = str(error.value)
    assert "BernoulliHead takes uint8 images" in message
    assert re.search(f"Received: images of dtype {received}$", message)
    assert fix in message


def test_fit_and_evaluate_take_tfds_dicts_and_refuse_float_images(tmp_path):
    keras.utils.set_random_seed(0)
    vae = tiny_vae(tmp_path)
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    dicts = tf.data.Dataset.from_tensor_slices(
        {"image": tiny_images(16), "label": tf.zeros([16], tf.int64)}
    ).batch(8)
    assert np.isfinite(vae.fit(dicts, verbose=0).history["loss"]).all()
    pairs = dicts.map(lambda d: (d["image"], d["label"]))
    assert np.isfinite(vae.evaluate(pairs, verbose=0, return_dict=True)["neg_elbo"])
    floats = dicts.map(lambda d: tf.cast(d["image"], tf.float32) / 255.0)
    with pytest.raises(ValueError, match="Received: images of dtype float32"):
        vae.evaluate(floats, verbose=0)
    assert vae(tiny_images(2)).batch_shape == [2]


def test_images_of_another_size_are_refused_by_fit(tmp_path):
    vae = tiny_vae(tmp_path)
    vae.compile(optimizer="adam")
    vae.fit(np.asarray(tiny_images(8)), batch_size=8, verbose=0)
    # Statically, or at run time once Keras has relaxed the traced step's
    # shape to [None] * 4: never a failure deep inside the network.
    for size in (9, 4):
        with pytest.raises(
            (ValueError, tf.errors.InvalidArgumentError), match=r"8, ?8, ?1"
        ):
            vae.fit(np.zeros([8, size, size, 1], np.uint8), batch_size=8, verbose=0)
