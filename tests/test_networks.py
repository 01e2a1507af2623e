"""Tests for tfvae.networks: body output shapes and validation."""

import pytest
import tensorflow as tf

from tfvae import networks


@pytest.mark.parametrize("image_shape", [(28, 28, 1), (32, 32, 3)])
@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_bodies_map_images_to_features_and_z_to_parameters(network, image_shape):
    if network == "mlp":
        encoder, decoder = networks.mlp(image_shape, 2, (16, 8), "relu")
    else:
        encoder, decoder = networks.conv(image_shape, 2, (16,), "relu", (4, 8))
    features = encoder(tf.zeros([3, *image_shape]))
    assert features.shape[0] == 3 and len(features.shape) == 2
    assert decoder(tf.zeros([3, 5])).shape == (3, *image_shape, 2)


def test_mlp_decoder_mirrors_hidden_units():
    _, decoder = networks.mlp((4, 4, 1), 1, (32, 8), "relu")
    decoder.build((None, 2))
    units = [layer.units for layer in decoder.layers if hasattr(layer, "units")]
    assert units == [8, 32, 16]


def test_conv_rejects_indivisible_image_size():
    with pytest.raises(ValueError, match="divisible by 4"):
        networks.conv((30, 30, 1), 1, (), "relu", (4, 8))


@pytest.mark.parametrize("hidden_units", [(), (0,), (16, -2)])
def test_mlp_rejects_bad_hidden_units(hidden_units):
    with pytest.raises(ValueError, match="Received: hidden_units"):
        networks.mlp((4, 4, 1), 1, hidden_units, "relu")
