"""Tests for tfvae.one_channel_conv: a Conv2D to one channel, computed per channel."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvae.one_channel_conv import OneChannelConv2D


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_matches_keras_conv2d_in_value_and_gradients(kernel_size):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 6, 7, 5)).astype("float32"))
    ours = OneChannelConv2D(1, kernel_size, padding="same", activation="relu")
    plain = keras.layers.Conv2D(1, kernel_size, padding="same", activation="relu")
    ours.build(x.shape)
    plain.build(x.shape)
    # A nonzero bias, so a missing or misplaced bias would show.
    weights = [rng.normal(size=w.shape).astype("float32") for w in plain.weights]
    ours.set_weights(weights)
    plain.set_weights(weights)
    results = []
    for layer in (ours, plain):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * tf.range(tf.size(y), dtype=y.dtype)[None])
        results.append([y, *tape.gradient(loss, [x, *layer.trainable_weights])])
    for a, b in zip(*results, strict=True):
        # Float32 sums in another order.
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)


def test_round_trips_through_its_config():
    layer = OneChannelConv2D(1, 3, padding="same", name="out")
    layer.build((None, 4, 4, 2))
    again = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert isinstance(again, OneChannelConv2D)
    assert again.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "kwargs, problem",
    [
        (dict(filters=2), "'filters': 2"),
        (dict(padding="valid"), "'padding': 'valid'"),
        (dict(padding="same", strides=2), r"'strides': \(2, 2\)"),
        (dict(padding="same", dilation_rate=2), r"'dilation_rate': \(2, 2\)"),
    ],
)
def test_refuses_what_it_does_not_compute_naming_the_value(kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        OneChannelConv2D(**{"kernel_size": 3, "padding": "same", **kwargs})


def test_under_xla_it_runs_conv2ds_own_convolution(monkeypatch):
    # XLA's CPU depthwise convolutions are slow: traced for XLA, the layer
    # must build Conv2D's graph, and give the same values.
    layer = OneChannelConv2D(1, 3, padding="same")
    x = tf.random.stateless_normal([2, 5, 5, 3], [0, 1])
    eager = layer(x)
    called = []
    real = keras.layers.Conv2D.convolution_op

    def spy(self, inputs, kernel):
        called.append(True)
        return real(self, inputs, kernel)

    monkeypatch.setattr(keras.layers.Conv2D, "convolution_op", spy)
    compiled = tf.function(layer, jit_compile=True)(x)
    assert called
    np.testing.assert_allclose(compiled.numpy(), eager.numpy(), rtol=1e-5, atol=1e-5)
