"""A "same" convolution to one output channel, as a depthwise convolution
and a sum over the input channels.

The conv decoder's output layer for a grayscale image with one parameter per
pixel (`networks.conv`: a Bernoulli, or a Gaussian of fixed scale) is a 3x3
convolution from 32 features to 1 channel. TensorFlow's oneDNN kernels run
that shape at about 12 GFLOP/s forward and for the kernel's gradient (the
other layers of keras-io's conv VAE: 140-180), so it took a quarter of the
step's convolution time for 3% of its products. The same sums computed per
input channel (a depthwise convolution, whose kernel is the same `[k, k, C,
1]` array) and then added over the channels took 4.8-7.0 ms forward and
backward at batch 128 of 28x28x32, against 11.1 ms (README, Performance).
Traced for XLA it is Conv2D's own convolution, as XLA's depthwise
convolutions on a CPU are slower still. The layer is a
`keras.layers.Conv2D` in every other respect: same weights, initializers
and config.
"""

import keras
from keras import ops

from tfvae import devices


@keras.saving.register_keras_serializable(package="tfvae")
class OneChannelConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D(1, kernel_size, padding="same")`, computed per
    input channel and summed.

    `[batch, H, W, C]` -> `[batch, H, W, 1]`, channels last, stride 1.

    Args:
        filters: 1.
        kernel_size: as `keras.layers.Conv2D`'s.
        **kwargs: `keras.layers.Conv2D` arguments; `padding` must be "same"
            and `strides`, `dilation_rate` and `groups` 1.

    Example:
        >>> layer = OneChannelConv2D(1, 3, padding="same")
        >>> layer(np.ones((2, 8, 8, 4), "float32")).shape
        (2, 8, 8, 1)
    """

    def __init__(self, filters=1, kernel_size=3, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        wanted = dict(
            filters=1,
            padding="same",
            strides=(1, 1),
            dilation_rate=(1, 1),
            groups=1,
            data_format="channels_last",
        )
        plain = {name: getattr(self, name) for name in wanted}
        if plain != wanted:
            raise ValueError(
                f"OneChannelConv2D computes {wanted}; use keras.layers.Conv2D "
                f"otherwise. Received: {plain}"
            )

    def convolution_op(self, inputs, kernel):
        if devices.tracing_for_xla():
            # XLA's CPU depthwise convolutions are far slower still (a
            # keras-io conv VAE step: 0.52 s against 0.096 with Conv2D's).
            return super().convolution_op(inputs, kernel)
        # Conv2D's kernel [k, k, C, 1] is a depthwise kernel of multiplier 1.
        per_channel = ops.depthwise_conv(inputs, kernel, strides=1, padding="same")
        return ops.sum(per_channel, axis=-1, keepdims=True)
