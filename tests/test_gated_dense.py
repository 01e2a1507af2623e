"""Tests for tfvae.gated_dense: the gated layer's math, shapes, config, refusals."""

import keras
import numpy as np
import pytest

from tfvae.gated_dense import GatedDense


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_outputs_are_the_linear_part_times_the_sigmoid_gate():
    layer = GatedDense(4)
    x = np.random.default_rng(0).normal(size=(3, 5)).astype("float32")
    layer.build(x.shape)
    rng = np.random.default_rng(1)
    # Nonzero biases, so a swapped or missing bias would show.
    for weight in layer.weights:
        weight.assign(rng.normal(size=weight.shape).astype("float32"))
    kernel, bias, gate_kernel, gate_bias = (w.numpy() for w in layer.weights)
    expected = (x @ kernel + bias) * _sigmoid(x @ gate_kernel + gate_bias)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_maps_the_last_axis_and_has_twice_a_dense_layers_weights():
    layer = GatedDense(7)
    assert layer(np.zeros((2, 3, 5), "float32")).shape == (2, 3, 7)
    assert layer.compute_output_shape((None, 3, 5)) == (None, 3, 7)
    dense = keras.layers.Dense(7)
    dense.build((None, 5))
    assert layer.count_params() == 2 * dense.count_params()


def test_round_trips_through_its_config():
    layer = GatedDense(3, name="gate")
    layer.build((None, 2))
    again = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert isinstance(again, GatedDense)
    assert (again.units, again.name) == (3, "gate")


@pytest.mark.parametrize("units", [0, -2, 2.5, True, "4"])
def test_a_bad_size_is_refused_echoing_it(units):
    with pytest.raises(ValueError, match=f"Received: units={units!r}"):
        GatedDense(units)
