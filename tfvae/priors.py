"""The prior p(z): Keras 3 layers that own the (top) latent size and its sampler.

The VAE holds one prior object and everything reads it from there: the KL
term, the IWAE weights, the exported `sample` signature and the prior-sample
pictures. Each prior has

- `distribution(encoder)`: p(z), batch shape `[]`, event shape `[latent_dim]`;
- `sample(num_samples, seed, encoder)`: `[num_samples, latent_dim]` draws;

where `encoder` is the VAE's q(z|x) network: the VampPrior's components are
q(z|u_k) at its learned pseudo-inputs u_k; the other priors ignore it. A
learned prior's weights train with the model and save with it.

| `--prior` | p(z)                                           | KL term     |
|-----------|------------------------------------------------|-------------|
| standard  | N(0, I)                                        | closed form |
| mog       | mixture of `components` learned diag. normals  | Monte Carlo |
| vamp      | (1/K) sum_k q(z|u_k), K = `components`         | Monte Carlo |

The VampPrior is Tomczak & Welling (2018)'s.
"""

import math
from collections.abc import Callable

import keras
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


def _serializable(cls):
    return keras.saving.register_keras_serializable(package="tfvae")(cls)


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer. Received: {name}={value}")


class Prior(keras.layers.Layer):
    """Base class: p(z) over `[latent_dim]`; see the module docstring."""

    # The prior's name in `PRIORS`, which the combination rules
    # (`tfvae.rules`) know it by; a prior of your own has none, and is named
    # by its class (`parts.part_name`).
    registry_name: str | None = None

    def __init__(self, latent_dim: int, **kwargs):
        super().__init__(**kwargs)
        _check_positive("latent_dim", latent_dim)
        self.latent_dim = latent_dim

    def distribution(self, encoder=None) -> tfd.Distribution:
        """Returns p(z): batch shape `[]`, event shape `[latent_dim]`."""
        raise NotImplementedError

    def log_prob(self, z: tf.Tensor, encoder=None) -> tf.Tensor:
        """Returns log p(z) for z `[..., latent_dim]`, shape `[...]`."""
        return self.distribution(encoder).log_prob(z)

    def sample(self, num_samples, seed: tf.Tensor, encoder=None) -> tf.Tensor:
        """Returns `num_samples` z ~ p(z) drawn with stateless `seed` (int `[2]`).

        Shape `[num_samples, latent_dim]`; the same seed gives the same z.
        """
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


@_serializable
class StandardNormal(Prior):
    """p(z) = N(0, I).

    The only prior with a closed-form KL here: the one `kl="analytic"` takes.

    Args:
        latent_dim: the size of the top latent layer.

    Example:

    ```python
    vae = tfvae.VAE(encoder, decoder, tfvae.StandardNormal(16), image_shape=(28, 28, 1))
    ```
    """

    registry_name = "standard"

    def distribution(self, encoder=None):
        return tfd.MultivariateNormalDiag(
            loc=tf.zeros([self.latent_dim]), scale_diag=tf.ones([self.latent_dim])
        )

    def sample(self, num_samples, seed, encoder=None):
        return tf.random.stateless_normal([num_samples, self.latent_dim], seed)


def _diagonal_mixture_log_prob(
    z: tf.Tensor, locs: tf.Tensor, scales: tf.Tensor, logits: tf.Tensor
) -> tf.Tensor:
    """Returns log sum_k softmax(logits)_k N(z; locs_k, diag(scales_k^2)), `[...]`.

    z is `[..., D]`; locs and scales `[K, D]`. The squared distances come
    from two matrix products instead of a `[N, K, D]` tensor (what
    `tfd.MixtureSameFamily` builds): the VampPrior's 500 components at k=5000
    importance samples per image would otherwise dominate evaluation.
    """
    size = tf.shape(z)[-1]
    flat = tf.reshape(z, [-1, size])
    precision = 1.0 / tf.square(scales)
    squared = (
        tf.matmul(tf.square(flat), precision, transpose_b=True)
        - 2.0 * tf.matmul(flat, locs * precision, transpose_b=True)
        + tf.reduce_sum(tf.square(locs) * precision, axis=-1)
    )  # [N, K]
    log_normalizer = -tf.reduce_sum(tf.math.log(scales), axis=-1) - 0.5 * tf.cast(
        size, z.dtype
    ) * math.log(2.0 * math.pi)
    log_components = -0.5 * squared + log_normalizer + tf.nn.log_softmax(logits)
    return tf.reshape(tf.reduce_logsumexp(log_components, axis=-1), tf.shape(z)[:-1])


class _Mixture(Prior):
    def __init__(self, latent_dim: int, components: int, **kwargs):
        super().__init__(latent_dim, **kwargs)
        _check_positive("components", components)
        self.components = components

    def sample(self, num_samples, seed, encoder=None):
        # A component per draw, then a reparameterized draw from it: plain
        # stateless ops (TFP's mixture sampler wants int32 seeds).
        seeds = tf.random.experimental.stateless_split(seed, num=2)
        index = tf.random.stateless_categorical(
            tf.zeros([1, self.components]) + self._logits(), num_samples, seeds[0]
        )[0]
        eps = tf.random.stateless_normal([num_samples, self.latent_dim], seeds[1])
        return self._component_sample(index, eps, encoder)

    def log_prob(self, z, encoder=None):
        components = self._diagonal_components(encoder)
        if components is None:
            return super().log_prob(z, encoder)
        return _diagonal_mixture_log_prob(z, *components, self._logits())

    def _logits(self) -> tf.Tensor:
        """Returns the mixture weights' logits, `[components]`."""
        raise NotImplementedError

    def _diagonal_components(self, encoder) -> tuple[tf.Tensor, tf.Tensor] | None:
        """Returns the components' (locs, scales), each `[components, latent_dim]`.

        None when the components are not diagonal normals.
        """
        raise NotImplementedError

    def _component_sample(self, index, eps, encoder) -> tf.Tensor:
        """Returns z `[n, latent_dim]` from components `index` `[n]` and noise `eps`."""
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), "components": self.components}


@_serializable
class MixtureOfGaussians(_Mixture):
    """p(z) = sum_k pi_k N(mu_k, diag(sigma_k^2)), all learned.

    Starts as N(0, I)-like: means drawn from N(0, I), unit scales, equal weights.

    Args:
        latent_dim: the size of the top latent layer.
        components: the mixture's components.

    Example:

    ```python
    vae = tfvae.VAE(encoder, decoder, tfvae.MixtureOfGaussians(16, 10),
                    image_shape=(28, 28, 1), kl="monte_carlo")
    ```
    """

    registry_name = "mog"

    def build(self, input_shape=None):
        self.means = self.add_weight(
            shape=(self.components, self.latent_dim),
            initializer="random_normal",
            name="means",
        )
        self.raw_scales = self.add_weight(
            shape=(self.components, self.latent_dim),
            # softplus(log(e - 1)) = 1.
            initializer=keras.initializers.Constant(math.log(math.e - 1.0)),
            name="raw_scales",
        )
        self.logits = self.add_weight(
            shape=(self.components,), initializer="zeros", name="logits"
        )

    def _scales(self) -> tf.Tensor:
        return tf.math.softplus(tf.cast(self.raw_scales, tf.float32)) + 1e-4

    def _logits(self):
        return tf.cast(self.logits, tf.float32)

    def distribution(self, encoder=None):
        return tfd.MixtureSameFamily(
            tfd.Categorical(logits=self._logits()),
            tfd.MultivariateNormalDiag(
                loc=tf.cast(self.means, tf.float32), scale_diag=self._scales()
            ),
        )

    def _diagonal_components(self, encoder):
        return tf.cast(self.means, tf.float32), self._scales()

    def _component_sample(self, index, eps, encoder):
        means = tf.gather(tf.cast(self.means, tf.float32), index)
        return means + tf.gather(self._scales(), index) * eps


@_serializable
class VampPrior(_Mixture):
    """p(z) = (1/K) sum_k q(z|u_k): the encoder at K learned pseudo-inputs.

    The pseudo-inputs live where the encoder's inputs do, `[K, *pseudo_shape]`:
    an image's pixels `(H, W, C)` in [0, 1] (a sigmoid of free weights,
    `bounded=True`), or a table row's encoder input `(features,)` (its
    standardized cells, one-hots and presence mask: free weights,
    `bounded=False`).

    Args:
        latent_dim: the size of the encoder's layer: z1, or z2 with the
            "vampprior" hierarchy (`tfvae.chain`).
        components: K, the pseudo-inputs.
        pseudo_shape: the shape of one encoder input: `(H, W, C)` of the
            images, or `(features,)` of a table row's.
        bounded: the encoder's inputs are in [0, 1] (images).

    Example:

    ```python
    vae = tfvae.VAE(encoder, decoder, tfvae.VampPrior(16, 500, (28, 28, 1)),
                    image_shape=(28, 28, 1), kl="monte_carlo")
    ```
    """

    registry_name = "vamp"

    def __init__(
        self, latent_dim: int, components: int, pseudo_shape, bounded=True, **kwargs
    ):
        super().__init__(latent_dim, components, **kwargs)
        self.pseudo_shape = tuple(pseudo_shape)
        self.bounded = bounded

    def build(self, input_shape=None):
        if self.bounded:
            # Dim, varied images: sigmoid(-2 +- 0.5) is about 0.12, near the
            # mean MNIST pixel.
            initializer = keras.initializers.RandomNormal(mean=-2.0, stddev=0.5)
        else:
            # Standardized cells are about N(0, 1).
            initializer = keras.initializers.RandomNormal(mean=0.0, stddev=1.0)
        self.pseudo_weights = self.add_weight(
            shape=(self.components, *self.pseudo_shape),
            initializer=initializer,
            name="pseudo_logits" if self.bounded else "pseudo_inputs",
        )

    def pseudo_inputs(self) -> tf.Tensor:
        """Returns the pseudo-inputs u_k, float32 `[components, *pseudo_shape]`."""
        weights = tf.cast(self.pseudo_weights, tf.float32)
        return tf.math.sigmoid(weights) if self.bounded else weights

    def distribution(self, encoder=None):
        if encoder is None:
            raise ValueError("The VampPrior needs the encoder: distribution(encoder).")
        return tfd.MixtureSameFamily(
            tfd.Categorical(logits=self._logits()), encoder(self.pseudo_inputs())
        )

    def _logits(self):
        return tf.zeros([self.components])

    def _diagonal_components(self, encoder):
        posterior = encoder(self.pseudo_inputs())
        if not isinstance(posterior, tfd.MultivariateNormalDiag):
            return None
        return posterior.loc, posterior.stddev()

    def _component_sample(self, index, eps, encoder):
        # Only the chosen pseudo-inputs go through the encoder.
        posterior = encoder(tf.gather(self.pseudo_inputs(), index))
        return encoder.head.reparameterize(posterior, eps)

    def get_config(self):
        return {
            **super().get_config(),
            "pseudo_shape": list(self.pseudo_shape),
            "bounded": self.bounded,
        }


# Builders by flag value. Each takes the top latent size, the shape of one
# encoder input and whether it is bounded to [0, 1] (`VampPrior`'s), and the
# model's settings by keyword (`builder.build_vae`'s arguments).
PRIORS: dict[str, Callable[..., Prior]] = {
    "standard": lambda latent_dim, **_: StandardNormal(latent_dim, name="prior"),
    "mog": lambda latent_dim, prior_components, **_: MixtureOfGaussians(
        latent_dim, prior_components, name="prior"
    ),
    "vamp": lambda latent_dim, prior_components, pseudo_shape, bounded, **_: VampPrior(
        latent_dim, prior_components, pseudo_shape, bounded, name="prior"
    ),
}
