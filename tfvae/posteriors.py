"""Posterior heads: Keras 3 layers turning encoder features into q(z|x).

`tfp.layers` only works with legacy Keras 2, so tfvae has its own heads. A
posterior head takes features `[batch, features]` (any number of features:
it says so in `input_shape`) and returns a multivariate normal with batch
shape `[batch]` and event shape `[latent_dim]`, reparameterized with noise
drawn outside it (`reparameterize`).
"""

from collections.abc import Callable

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.distributions import SCALE_FLOOR

tfd = tfp.distributions
tfb = tfp.bijectors


def _serializable(cls):
    return keras.saving.register_keras_serializable(package="tfvae")(cls)


class PosteriorHead(keras.layers.Layer):
    """Base class: features -> a location-scale multivariate normal q(z|x).

    The projection to q's parameters runs in float32 whatever the mixed
    precision policy, so q and its log-densities are float32.
    """

    # The head's name in `POSTERIORS` (the --posterior value); a head of your
    # own has none, and is named by its class (`parts.part_name`).
    registry_name: str | None = None

    def __init__(self, latent_dim: int, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(
                f"latent_dim must be a positive integer. Received: {latent_dim=}"
            )
        self.latent_dim = latent_dim

    def input_shape_for(self, image_shape=None) -> tuple:
        """Returns the input this head needs, `(None, None)`: `[batch, features]`."""
        del image_shape  # Any number of features.
        return (None, None)

    def reparameterize(self, posterior: tfd.Distribution, eps: tf.Tensor) -> tf.Tensor:
        """Returns z = loc + scale @ eps, `[..., batch, latent_dim]`.

        `eps` is standard normal noise `[..., batch, latent_dim]`. Drawing it
        outside the distribution keeps the noise the same however the batch is
        split across replicas (see `tfvae.noise`).
        """
        return posterior.loc + posterior.scale.matvec(eps)

    def parameters(self, posterior: tfd.Distribution) -> dict[str, tf.Tensor]:
        """Returns q's spread by name (besides its mean), what `encode` exports."""
        raise NotImplementedError

    def stop_gradient(self, posterior: tfd.Distribution) -> tfd.Distribution:
        """Returns q with its parameters held constant for gradients.

        The doubly reparameterized gradient (`VAE`, `gradient="dreg"`) scores
        z with it, so that q's parameters reach the loss only through z.
        """
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


@_serializable
class NormalDiagHead(PosteriorHead):
    """q(z|x) = N(loc, diag(scale^2)); scale = softplus(.) + SCALE_FLOOR.

    A dense projection of the encoder body's features `[batch, F]` gives loc
    and scale.

    Args:
        latent_dim: the size of z.

    Example:

    ```python
    encoder = tfvae.Encoder(body, tfvae.NormalDiagHead(16))
    ```
    """

    registry_name = "diag"

    def build(self, input_shape):
        self.projection = keras.layers.Dense(
            2 * self.latent_dim, dtype="float32", name="projection"
        )
        self.projection.build(input_shape)

    def call(self, features):
        loc, raw_scale = tf.split(self.projection(features), 2, axis=-1)
        return tfd.MultivariateNormalDiag(
            loc=loc, scale_diag=tf.math.softplus(raw_scale) + SCALE_FLOOR
        )

    def parameters(self, posterior):
        """Returns {"stddev": `[batch, latent_dim]`}."""
        return {"stddev": posterior.stddev()}

    def stop_gradient(self, posterior):
        return tfd.MultivariateNormalDiag(
            loc=tf.stop_gradient(posterior.loc),
            scale_diag=tf.stop_gradient(posterior.stddev()),
        )


@_serializable
class NormalTriLHead(PosteriorHead):
    """q(z|x) = N(loc, L L^T) with a full lower-triangular scale L.

    Args:
        latent_dim: the size of z; the head projects the features to
            latent_dim + latent_dim * (latent_dim + 1) / 2 parameters.

    Example:

    ```python
    encoder = tfvae.Encoder(body, tfvae.NormalTriLHead(16))
    ```
    """

    registry_name = "full"

    def build(self, input_shape):
        tril_size = self.latent_dim * (self.latent_dim + 1) // 2
        self.projection = keras.layers.Dense(
            self.latent_dim + tril_size, dtype="float32", name="projection"
        )
        self.projection.build(input_shape)

    def call(self, features):
        params = self.projection(features)
        loc, raw_tril = params[..., : self.latent_dim], params[..., self.latent_dim :]
        # Built per call: a bijector holds tensors, which must not outlive the
        # graph they were made in.
        to_scale_tril = tfb.FillScaleTriL(diag_shift=SCALE_FLOOR)
        return tfd.MultivariateNormalTriL(
            loc=loc, scale_tril=to_scale_tril.forward(raw_tril)
        )

    def parameters(self, posterior):
        """Returns {"scale_tril": `[batch, latent_dim, latent_dim]`}."""
        return {"scale_tril": posterior.scale.to_dense()}

    def stop_gradient(self, posterior):
        return tfd.MultivariateNormalTriL(
            loc=tf.stop_gradient(posterior.loc),
            scale_tril=tf.stop_gradient(posterior.scale.to_dense()),
        )


# Builders by flag value. Each takes the model's settings by keyword
# (`builder.build_vae`'s arguments) and uses those it needs.
POSTERIORS: dict[str, Callable[..., PosteriorHead]] = {
    "diag": lambda latent_dim, **_: NormalDiagHead(latent_dim, name="posterior"),
    "full": lambda latent_dim, **_: NormalTriLHead(latent_dim, name="posterior"),
}
