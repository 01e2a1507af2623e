"""A gated dense layer: h = (x W + b) * sigmoid(x V + c).

The gated linear unit of Dauphin et al. (2017) on a dense layer, as the
VampPrior paper's networks use it (Tomczak & Welling 2018, their
`GatedDense` without an activation): the gate is the layer's only
nonlinearity, so it takes no activation. `networks.gated_mlp` builds its
bodies from it.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfvae")
class GatedDense(keras.layers.Layer):
    """A dense layer whose outputs are gated by a second dense layer's sigmoid.

    `[batch, ..., features]` -> `[batch, ..., units]`: (x W + b) * sigmoid(x V + c),
    with W, V of `[features, units]` (Glorot-uniform, as `keras.layers.Dense`)
    and b, c of `[units]` (zeros): twice a Dense layer's weights.

    Args:
        units: the output size, a positive int.
        **kwargs: `keras.layers.Layer` arguments (name, dtype).

    Example:
        >>> layer = GatedDense(4)
        >>> layer(np.ones((2, 3), "float32")).shape
        (2, 4)
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(
                f"units must be a positive integer. Received: units={units!r}"
            )
        self.units = units

    def build(self, input_shape):
        features = input_shape[-1]
        # Created in this order, so a seeded model's draws are reproducible.
        self.kernel = self.add_weight(
            shape=(features, self.units), initializer="glorot_uniform", name="kernel"
        )
        self.bias = self.add_weight(
            shape=(self.units,), initializer="zeros", name="bias"
        )
        self.gate_kernel = self.add_weight(
            shape=(features, self.units),
            initializer="glorot_uniform",
            name="gate_kernel",
        )
        self.gate_bias = self.add_weight(
            shape=(self.units,), initializer="zeros", name="gate_bias"
        )

    def call(self, inputs):
        linear = ops.matmul(inputs, self.kernel) + self.bias
        gate = ops.sigmoid(ops.matmul(inputs, self.gate_kernel) + self.gate_bias)
        return linear * gate

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}
