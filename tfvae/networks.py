"""Encoder and decoder bodies: the neural networks between data and heads.

A network builder (`NETWORKS`, by flag value) returns `(encoder_body, decoder_body)`:
- encoder_body: float images `[batch, H, W, C]` in [0, 1] -> features `[batch, F]`;
- decoder_body: z `[batch, latent_dim]` -> `[batch, H, W, C, params_per_value]`,
  the raw parameters a likelihood head turns into p(x|z).

Between two stochastic layers (`--latent_dim=100,50`), `latent_body` makes the
networks of q(z2|z1) and p(z1|z2). A conditional VAE joins the one-hot class
to the encoder's input as `CONDITIONING[network]` says (`join_condition`) and
to z before the decoder body.
"""

import math
from collections.abc import Callable

import keras
import tensorflow as tf


def _check_sizes(name: str, sizes: tuple[int, ...], allow_empty: bool) -> None:
    if (not sizes and not allow_empty) or any(
        not isinstance(s, int) or s < 1 for s in sizes
    ):
        raise ValueError(
            f"{name} must be a list of positive integers. Received: {name}={sizes}"
        )


def _dense_stack(units: tuple[int, ...], activation: str) -> list[keras.Layer]:
    return [keras.layers.Dense(u, activation=activation) for u in units]


def mlp(
    image_shape: tuple[int, int, int],
    params_per_value: int,
    hidden_units: tuple[int, ...],
    activation: str,
) -> tuple[keras.Sequential, keras.Sequential]:
    """Fully connected bodies: pixels -> hidden_units -> ... (mirrored to decode).

    The Pyro tutorial's networks are `hidden_units=(400,)`, softplus.
    """
    _check_sizes("hidden_units", hidden_units, allow_empty=False)
    keras.activations.get(activation)
    num_outputs = math.prod(image_shape) * params_per_value
    encoder = keras.Sequential(
        [keras.layers.Flatten()] + _dense_stack(hidden_units, activation),
        name="encoder_body",
    )
    decoder = keras.Sequential(
        _dense_stack(hidden_units[::-1], activation)
        + [
            keras.layers.Dense(num_outputs),
            keras.layers.Reshape((*image_shape, params_per_value)),
        ],
        name="decoder_body",
    )
    return encoder, decoder


def vector_mlp(
    num_outputs: int, hidden_units: tuple[int, ...], activation: str
) -> tuple[keras.Sequential, keras.Sequential]:
    """Fully connected bodies for vectors (a table's rows).

    Encoder: `[batch, features]` -> hidden_units; decoder: z -> the mirror
    image -> `[batch, num_outputs]`, the likelihood's parameters side by side.
    """
    _check_sizes("hidden_units", hidden_units, allow_empty=False)
    keras.activations.get(activation)
    encoder = keras.Sequential(
        _dense_stack(hidden_units, activation), name="encoder_body"
    )
    decoder = keras.Sequential(
        _dense_stack(hidden_units[::-1], activation)
        + [keras.layers.Dense(num_outputs)],
        name="decoder_body",
    )
    return encoder, decoder


def conv(
    image_shape: tuple[int, int, int],
    params_per_value: int,
    hidden_units: tuple[int, ...],
    activation: str,
    conv_filters: tuple[int, ...],
) -> tuple[keras.Sequential, keras.Sequential]:
    """Convolutional bodies for images of any size divisible by 2**len(conv_filters).

    Encoder: one stride-2 3x3 convolution per entry of `conv_filters`, then
    dense `hidden_units`. Decoder: the mirror image, with transposed convolutions.
    """
    _check_sizes("conv_filters", conv_filters, allow_empty=False)
    _check_sizes("hidden_units", hidden_units, allow_empty=True)
    keras.activations.get(activation)
    height, width, channels = image_shape
    factor = 2 ** len(conv_filters)
    if height % factor or width % factor:
        raise ValueError(
            f"The conv network halves the image {len(conv_filters)} times, so "
            f"height and width must be divisible by {factor}. Received: "
            f"image_shape={image_shape}, conv_filters={conv_filters}. "
            "Use fewer --conv_filters or --network=mlp."
        )
    bottom = (height // factor, width // factor, conv_filters[-1])
    encoder = keras.Sequential(
        [
            keras.layers.Conv2D(f, 3, strides=2, padding="same", activation=activation)
            for f in conv_filters
        ]
        + [keras.layers.Flatten()]
        + _dense_stack(hidden_units, activation),
        name="encoder_body",
    )
    decoder = keras.Sequential(
        _dense_stack(hidden_units[::-1], activation)
        + [
            keras.layers.Dense(math.prod(bottom), activation=activation),
            keras.layers.Reshape(bottom),
        ]
        + [
            keras.layers.Conv2DTranspose(
                f, 3, strides=2, padding="same", activation=activation
            )
            for f in reversed(conv_filters)
        ]
        + [
            keras.layers.Conv2D(channels * params_per_value, 3, padding="same"),
            keras.layers.Reshape((height, width, channels, params_per_value)),
        ],
        name="decoder_body",
    )
    return encoder, decoder


# Builders by flag value. Each takes the image shape, the likelihood's
# parameters per pixel value and the model's settings by keyword
# (`builder.build_vae`'s arguments), and uses those it needs.
NETWORKS: dict[str, Callable[..., tuple[keras.Sequential, keras.Sequential]]] = {
    "mlp": lambda shape, k, hidden_units, activation, **_: mlp(
        shape, k, hidden_units, activation
    ),
    "conv": lambda shape, k, hidden_units, activation, conv_filters, **_: conv(
        shape, k, hidden_units, activation, conv_filters
    ),
}


def latent_body(depth: int, width: int, activation: str) -> keras.Sequential:
    """Returns `depth` dense layers of `width` units: `[batch, D]` -> `[batch, width]`.

    The IWAE paper's networks between stochastic layers of sizes 100 and 50
    are two layers of 100 units: `builder.build_vae` uses `depth` = the number of
    `--hidden_units` and `width` = twice the upper layer's size.
    """
    return keras.Sequential(
        _dense_stack((width,) * depth, activation), name="latent_body"
    )


def join_condition(mode: str, inputs: tf.Tensor, one_hot: tf.Tensor) -> tf.Tensor:
    """Returns the encoder's input joined with the one-hot class `[batch, classes]`.

    mode "vector": flattened inputs and the one-hot side by side, `[batch,
    H*W*C + classes]` (the mlp body's Flatten leaves it as is); "channels":
    the one-hot as constant extra channels, `[batch, H, W, C + classes]`.
    """
    one_hot = tf.cast(one_hot, inputs.dtype)
    if mode == "vector":
        flat = tf.reshape(inputs, [tf.shape(inputs)[0], -1])
        return tf.concat([flat, one_hot], axis=-1)
    if mode == "channels":
        planes = tf.ones_like(inputs[..., :1]) * one_hot[:, tf.newaxis, tf.newaxis, :]
        return tf.concat([inputs, planes], axis=-1)
    raise ValueError(f"mode must be 'vector' or 'channels'. Received: {mode=}")


# How each network's encoder takes a class label (`join_condition`).
CONDITIONING: dict[str, str] = {"mlp": "vector", "conv": "channels"}
