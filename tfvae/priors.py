"""The prior p(z): a Keras 3 layer that owns the latent size and its sampler.

The VAE holds one prior object and everything reads it from there: the KL
term, the IWAE weights, the exported `sample` signature and the prior-sample
pictures. A learned prior is a layer with weights here, and all of those
follow it without edits.
"""

from collections.abc import Callable

import keras
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


@keras.saving.register_keras_serializable(package="tfvae")
class StandardNormal(keras.layers.Layer):
    """p(z) = N(0, I), event shape `[latent_dim]`."""

    def __init__(self, latent_dim: int, **kwargs):
        super().__init__(**kwargs)
        if (
            isinstance(latent_dim, bool)
            or not isinstance(latent_dim, int)
            or latent_dim < 1
        ):
            raise ValueError(
                f"latent_dim must be a positive integer. Received: {latent_dim=}"
            )
        self.latent_dim = latent_dim

    def distribution(self) -> tfd.Distribution:
        """Returns p(z): batch shape `[]`, event shape `[latent_dim]`."""
        return tfd.MultivariateNormalDiag(
            loc=tf.zeros([self.latent_dim]), scale_diag=tf.ones([self.latent_dim])
        )

    def sample(self, num_samples, seed: tf.Tensor) -> tf.Tensor:
        """Returns `num_samples` z ~ p(z) drawn with stateless `seed` (int `[2]`).

        Shape `[num_samples, latent_dim]`; the same seed gives the same z.
        """
        return tf.random.stateless_normal([num_samples, self.latent_dim], seed)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


PRIORS: dict[str, Callable[..., keras.layers.Layer]] = {
    "standard": lambda latent_dim: StandardNormal(latent_dim, name="prior"),
}
