"""Tests for tfvae.networks: body output shapes and validation; a gated
network from settings to a trained, evaluated and exported model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import TINY_SHAPE, tiny_images
from tfvae import builder, errors, memory, networks, saved_model
from tfvae.one_channel_conv import OneChannelConv2D


@pytest.mark.parametrize("image_shape", [(28, 28, 1), (32, 32, 3)])
@pytest.mark.parametrize("network", ["mlp", "gated_mlp", "conv"])
def test_bodies_map_images_to_features_and_z_to_parameters(network, image_shape):
    if network == "mlp":
        encoder, decoder = networks.mlp(image_shape, 2, (16, 8), "relu")
    elif network == "gated_mlp":
        encoder, decoder = networks.gated_mlp(image_shape, 2, (16, 8))
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


@pytest.mark.parametrize("params_per_value, kernel", [(1, 3), (30, 1)])
def test_a_wide_conv_output_layer_reads_each_pixel_alone(params_per_value, kernel):
    # configs/cifar10.flags' logistic mixture: 3 x 30 outputs from 32 features.
    _, decoder = networks.conv((32, 32, 3), params_per_value, (), "relu", (32, 64))
    convs = [x for x in decoder.layers if isinstance(x, keras.layers.Conv2D)]
    output = convs[-1]
    assert output.kernel_size == (kernel, kernel)
    assert decoder(tf.zeros([2, 8])).shape == (2, 32, 32, 3, params_per_value)


@pytest.mark.parametrize(
    "channels, params_per_value, one_channel",
    [(1, 1, True), (1, 2, False), (3, 1, False)],
)
def test_a_conv_output_to_one_channel_is_a_one_channel_conv(
    channels, params_per_value, one_channel
):
    _, decoder = networks.conv((8, 8, channels), params_per_value, (), "relu", (4,))
    output = [x for x in decoder.layers if isinstance(x, keras.layers.Conv2D)][-1]
    assert isinstance(output, OneChannelConv2D) is one_channel
    assert output.filters == channels * params_per_value
    assert decoder(tf.zeros([2, 4])).shape == (2, 8, 8, channels, params_per_value)


@pytest.mark.parametrize("hidden_units", [(), (0,), (16, -2)])
def test_mlp_rejects_bad_hidden_units(hidden_units):
    with pytest.raises(ValueError, match="Received: hidden_units"):
        networks.mlp((4, 4, 1), 1, hidden_units, "relu")


def _layer_kinds(body):
    return [type(layer).__name__ for layer in body.layers]


def test_gated_mlp_is_mlp_with_gated_hidden_layers():
    encoder, decoder = networks.gated_mlp((4, 4, 1), 1, (32, 8))
    decoder.build((None, 2))
    assert _layer_kinds(encoder) == ["Flatten", "GatedDense", "GatedDense"]
    assert _layer_kinds(decoder) == ["GatedDense", "GatedDense", "Dense", "Reshape"]
    assert [layer.units for layer in decoder.layers[:3]] == [8, 32, 16]
    plain, _ = networks.mlp((4, 4, 1), 1, (32, 8), "relu")
    assert _layer_kinds(plain) == ["Flatten", "Dense", "Dense"]


def test_latent_body_is_gated_for_none_and_dense_for_an_activation():
    assert _layer_kinds(networks.latent_body(2, 6, None)) == ["GatedDense"] * 2
    dense = networks.latent_body(2, 6, "tanh")
    assert _layer_kinds(dense) == ["Dense"] * 2
    assert dense.layers[0].activation.__name__ == "tanh"


def test_every_network_has_a_conditioning_mode():
    assert set(networks.CONDITIONING) == set(networks.NETWORKS)
    assert set(networks.GATED) <= set(networks.NETWORKS)


def test_a_plain_network_refuses_no_activation():
    # None would otherwise build gated layers under mlp's name.
    with pytest.raises(ValueError, match="Received: activation=None"):
        networks.mlp((4, 4, 1), 1, (8,), None)


def test_an_activation_with_a_gated_network_is_refused_naming_both():
    with pytest.raises(errors.UsageError, match="activation only applies to"):
        builder.build_vae(TINY_SHAPE, network="gated_mlp", activation="relu")


def test_a_gated_two_layer_vae_gates_the_layers_between_its_stochastic_layers():
    vae = builder.build_vae(
        TINY_SHAPE, network="gated_mlp", latent_dim=(4, 2), kl="monte_carlo"
    )
    between = [part.body for part in [*vae.upper_encoders, *vae.upper_decoders]]
    assert between and all(_layer_kinds(body) == ["GatedDense"] for body in between)


def test_a_gated_vae_trains_evaluates_and_exports(tmp_path):
    # Unbinarized pixels, so the export's encode is deterministic.
    vae = builder.build_vae(TINY_SHAPE, network="gated_mlp", binarize=False)
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    images = tiny_images(64)

    def neg_elbo():
        return vae.evaluate(images, batch_size=32, verbose=0, return_dict=True)[
            "neg_elbo"
        ]

    before = neg_elbo()
    vae.fit(images, batch_size=32, epochs=3, verbose=0)
    assert neg_elbo() < before
    path = saved_model.export(vae, str(tmp_path / "export"))
    # The export runs on TensorFlow alone (tests/test_saved_model.py checks
    # that in a fresh process); its encode is the trained model's.
    outputs = tf.saved_model.load(path).signatures["encode"](images=images[:5])
    pixels = tf.cast(images[:5], tf.float32) / 255.0
    np.testing.assert_allclose(
        outputs["mean"].numpy(), vae.encoder(pixels).mean().numpy(), atol=1e-5
    )


@pytest.mark.parametrize(
    "settings",
    [
        {"network": "gated_mlp"},
        {"network": "gated_mlp", "latent_dim": (6, 3), "kl": "monte_carlo"},
        {"network": "gated_mlp", "hidden_units": (9, 5), "conditional": True},
    ],
)
def test_the_memory_estimate_counts_a_gated_networks_parameters(settings):
    vae = builder.build_vae(TINY_SHAPE, num_classes=4, **settings)
    weights = sum(int(np.prod(w.shape)) for w in vae.trainable_weights)
    estimate = memory.estimate_bytes(TINY_SHAPE, num_classes=4, **settings)
    assert estimate == 4 * weights
