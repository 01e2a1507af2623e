"""Encoder and decoder bodies: the neural networks between data and heads.

A network builder (`NETWORKS`, by flag value) returns `(encoder_body, decoder_body)`:
- encoder_body: float images `[batch, H, W, C]` in [0, 1] -> features `[batch, F]`;
- decoder_body: z `[batch, latent_dim]` -> `[batch, H, W, C, params_per_value]`,
  the raw parameters a likelihood head turns into p(x|z).

`gated_mlp` is `mlp` with gated dense layers (`gated_dense.GatedDense`, the
VampPrior paper's networks), which have no activation: the networks in
`GATED` take none. Between two stochastic layers (`--latent_dim=100,50`),
`latent_body` makes the networks of q(z2|z1) and p(z1|z2), gated too with a
gated network. A conditional VAE joins the one-hot class
to the encoder's input as `CONDITIONING[network]` says (`join_condition`) and
to z before the decoder body.
"""

import math
from collections.abc import Callable

import keras
import tensorflow as tf

from tfvae.gated_dense import GatedDense
from tfvae.one_channel_conv import OneChannelConv2D


def _check_sizes(name: str, sizes: tuple[int, ...], allow_empty: bool) -> None:
    if (not sizes and not allow_empty) or any(
        not isinstance(s, int) or s < 1 for s in sizes
    ):
        raise ValueError(
            f"{name} must be a list of positive integers. Received: {name}={sizes}"
        )


def _check_activation(activation: str) -> None:
    # None would make `_dense_stack`'s gated layers, not Keras's linear ones.
    if activation is None:
        raise ValueError(
            "activation must be a Keras activation name; gated layers are "
            f"gated_mlp's. Received: activation={activation}"
        )
    keras.activations.get(activation)


def _dense_stack(units: tuple[int, ...], activation: str | None) -> list[keras.Layer]:
    # None: gated dense layers, whose gate is their nonlinearity.
    if activation is None:
        return [GatedDense(u) for u in units]
    return [keras.layers.Dense(u, activation=activation) for u in units]


def _dense_bodies(
    hidden_units: tuple[int, ...],
    activation: str | None,
    num_outputs: int,
    inputs: tuple[keras.Layer, ...] = (),
    outputs: tuple[keras.Layer, ...] = (),
) -> tuple[keras.Sequential, keras.Sequential]:
    """Dense bodies: `inputs` layers, then hidden_units; mirrored to decode,
    then a Dense layer to `num_outputs`, then `outputs` layers.

    activation None: gated layers (`_dense_stack`).
    """
    _check_sizes("hidden_units", hidden_units, allow_empty=False)
    encoder = keras.Sequential(
        [*inputs, *_dense_stack(hidden_units, activation)], name="encoder_body"
    )
    decoder = keras.Sequential(
        [
            *_dense_stack(hidden_units[::-1], activation),
            keras.layers.Dense(num_outputs),
            *outputs,
        ],
        name="decoder_body",
    )
    return encoder, decoder


def _mlp(
    image_shape: tuple[int, int, int],
    params_per_value: int,
    hidden_units: tuple[int, ...],
    activation: str | None,
) -> tuple[keras.Sequential, keras.Sequential]:
    # Pixels flattened in, and the parameters reshaped to the image's out.
    return _dense_bodies(
        hidden_units,
        activation,
        math.prod(image_shape) * params_per_value,
        inputs=(keras.layers.Flatten(),),
        outputs=(keras.layers.Reshape((*image_shape, params_per_value)),),
    )


def mlp(
    image_shape: tuple[int, int, int],
    params_per_value: int,
    hidden_units: tuple[int, ...],
    activation: str,
) -> tuple[keras.Sequential, keras.Sequential]:
    """Fully connected bodies: pixels -> hidden_units -> ... (mirrored to decode).

    The Pyro tutorial's networks are `hidden_units=(400,)`, softplus.
    """
    _check_activation(activation)
    return _mlp(image_shape, params_per_value, hidden_units, activation)


def gated_mlp(
    image_shape: tuple[int, int, int],
    params_per_value: int,
    hidden_units: tuple[int, ...],
) -> tuple[keras.Sequential, keras.Sequential]:
    """`mlp`'s bodies, each hidden layer a `GatedDense`: (xW + b) * sigmoid(xV + c).

    The VampPrior paper's networks (Tomczak & Welling 2018) are
    `hidden_units=(300, 300)`. The gate is each hidden layer's nonlinearity,
    so there is no activation; the decoder's last layer stays a plain Dense
    to the likelihood's parameters.

    Args:
        image_shape: the images' (H, W, C).
        params_per_value: the likelihood's parameters per pixel value.
        hidden_units: the gated layers' sizes, encoder order (the decoder
            mirrors them).

    Returns:
        (encoder_body, decoder_body): `[batch, H, W, C]` -> `[batch,
        hidden_units[-1]]`, and z `[batch, latent_dim]` -> `[batch, H, W, C,
        params_per_value]`.

    Example:
        >>> encoder, decoder = gated_mlp((28, 28, 1), 1, (300, 300))
        >>> decoder(tf.zeros([2, 40])).shape
        TensorShape([2, 28, 28, 1, 1])
    """
    return _mlp(image_shape, params_per_value, hidden_units, None)


def vector_mlp(
    num_outputs: int, hidden_units: tuple[int, ...], activation: str
) -> tuple[keras.Sequential, keras.Sequential]:
    """Fully connected bodies for vectors (a table's rows).

    Encoder: `[batch, features]` -> hidden_units; decoder: z -> the mirror
    image -> `[batch, num_outputs]`, the likelihood's parameters side by side.
    """
    _check_activation(activation)
    return _dense_bodies(hidden_units, activation, num_outputs)


def conv(
    image_shape: tuple[int, int, int],
    params_per_value: int,
    hidden_units: tuple[int, ...],
    activation: str,
    conv_filters: tuple[int, ...],
) -> tuple[keras.Sequential, keras.Sequential]:
    """Convolutional bodies for images of any size divisible by 2**len(conv_filters).

    Encoder: one stride-2 3x3 convolution per entry of `conv_filters`, then
    dense `hidden_units`. Decoder: the mirror image, with transposed
    convolutions, then an output convolution to the likelihood's parameters:
    3x3, or 1x1 when it has more output channels than features to read
    (`output_kernel`); to one channel, a `OneChannelConv2D`.
    """
    _check_sizes("conv_filters", conv_filters, allow_empty=False)
    _check_sizes("hidden_units", hidden_units, allow_empty=True)
    _check_activation(activation)
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
            _output_layer(channels * params_per_value, conv_filters[0]),
            keras.layers.Reshape((height, width, channels, params_per_value)),
        ],
        name="decoder_body",
    )
    return encoder, decoder


def _output_layer(outputs: int, features: int) -> keras.layers.Conv2D:
    """The conv decoder's output convolution, "same" padded: to one channel,
    a `OneChannelConv2D` (the same layer, computed faster)."""
    kernel = output_kernel(outputs, features)
    if outputs == 1:
        return OneChannelConv2D(1, kernel, padding="same")
    return keras.layers.Conv2D(outputs, kernel, padding="same")


def output_kernel(outputs: int, features: int) -> int:
    """Returns the kernel size of the conv decoder's output layer: 3, or 1 when
    it has more output channels than features to read.

    A likelihood of many parameters per value (the logistic mixture's 30 per
    color channel, a categorical's 256) reads each pixel's features alone,
    as PixelCNN++'s output layer does: a 3x3 layer to configs/cifar10.flags'
    90 channels cost more than the rest of its network, forward and back.

    Example:
        >>> output_kernel(outputs=90, features=32), output_kernel(1, 32)
        (1, 3)
    """
    return 1 if outputs > features else 3


# Builders by flag value. Each takes the image shape, the likelihood's
# parameters per pixel value and the model's settings by keyword
# (`builder.build_vae`'s arguments), and uses those it needs.
NETWORKS: dict[str, Callable[..., tuple[keras.Sequential, keras.Sequential]]] = {
    "mlp": lambda shape, k, hidden_units, activation, **_: mlp(
        shape, k, hidden_units, activation
    ),
    "gated_mlp": lambda shape, k, hidden_units, **_: gated_mlp(shape, k, hidden_units),
    "conv": lambda shape, k, hidden_units, activation, conv_filters, **_: conv(
        shape, k, hidden_units, activation, conv_filters
    ),
}
# The networks of gated layers, which take no activation: the layers between
# their stochastic layers are gated too (`latent_body` with activation None).
GATED = ("gated_mlp",)


def latent_body(depth: int, width: int, activation: str | None) -> keras.Sequential:
    """Returns `depth` dense layers of `width` units: `[batch, D]` -> `[batch, width]`.

    The IWAE paper's networks between stochastic layers of sizes 100 and 50
    are two layers of 100 units: `builder.build_vae` uses `depth` = the number of
    `--hidden_units` and `width` = twice the upper layer's size.

    Args:
        depth: the number of layers.
        width: each layer's units.
        activation: the dense layers' activation (a Keras name), or None for
            gated dense layers (`GatedDense`, a network in `GATED`).

    Returns:
        The `keras.Sequential` of the layers.

    Example:
        >>> latent_body(2, 100, "softplus")(tf.zeros([3, 50])).shape
        TensorShape([3, 100])
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
CONDITIONING: dict[str, str] = {
    "mlp": "vector",
    "gated_mlp": "vector",
    "conv": "channels",
}
