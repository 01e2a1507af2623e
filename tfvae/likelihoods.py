"""Likelihood heads: Keras 3 layers turning decoder outputs into p(x|z).

A likelihood head for images of shape (H, W, C) takes the decoder body's
output `[batch, H, W, C, params_per_value]` (it says so in `input_shape_for`)
and returns p(x|z), a distribution with batch shape `[batch]` and event shape
`[H, W, C]`. Each likelihood also owns its side of the data: the images it
takes (`image_dtype`: raw `uint8` pixels 0..255), how they become
observations (`observe`), what the encoder sees of an observation
(`encoder_input`), the expected image (`mean_image`) and its named parameters
(`parameters`, what the exported `decode` signature returns).
"""

from collections.abc import Callable

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import noise
from tfvae.distributions import (
    PIXEL_MAX,
    SCALE_FLOOR,
    DiscretizedLogisticMixture,
    LogitBernoulli,
)

tfd = tfp.distributions


def _pixels_to_unit(images: tf.Tensor) -> tf.Tensor:
    return tf.cast(images, tf.float32) / PIXEL_MAX


def _serializable(cls):
    return keras.saving.register_keras_serializable(package="tfvae")(cls)


class LikelihoodHead(keras.layers.Layer):
    """Base class: decoder outputs -> p(x|z) with event shape `[H, W, C]`.

    Subclasses implement `distribution(params)`; `call` hands it float32
    parameters, so p(x|z) and its log-probabilities stay float32 under a
    mixed precision policy.
    """

    # The head's name in `LIKELIHOODS` (the --likelihood value); a head of
    # your own has none, and is named by its class (`parts.part_name`).
    registry_name: str | None = None

    params_per_value = 1
    # The images every likelihood takes: raw pixels 0..255 (`batches.unpack_batch`
    # refuses any other dtype).
    image_dtype = tf.uint8
    # True when p(x|z) is a probability mass over the 256 pixel values, so
    # bits per dimension are meaningful.
    discrete = False
    # True for a table's rows (`tfvae.table_likelihood`), whose batches are
    # dicts of columns (`batches.unpack_batch`).
    tabular = False

    def input_shape_for(self, image_shape: tuple[int, int, int]) -> tuple:
        """Returns the input this head needs: `(None, H, W, C, params_per_value)`."""
        return (None, *image_shape, self.params_per_value)

    def example_batch(self, image_shape: tuple[int, int, int]) -> tf.Tensor:
        """Returns one raw example, all zeros: what the VAE is built with."""
        return tf.zeros([1, *image_shape], self.image_dtype)

    def call(self, params):
        return self.distribution(tf.cast(params, tf.float32))

    def distribution(self, params: tf.Tensor) -> tfd.Distribution:
        """Returns p(x|z) for float32 `params` `[batch, H, W, C, params_per_value]`."""
        raise NotImplementedError

    def observe(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Returns the observations x `[batch, H, W, C]` for raw `uint8` images."""
        del seed  # Only stochastic observations (binarization) use it.
        return _pixels_to_unit(images)

    def encoder_input(self, x: tf.Tensor) -> tf.Tensor:
        """Returns what the encoder sees of observations x: float32 in [0, 1]."""
        return tf.cast(x, tf.float32)

    def mean_image(self, likelihood: tfd.Distribution) -> tf.Tensor:
        """Returns E[x|z] as float32 pixels in [0, 1], `[batch, H, W, C]`."""
        return likelihood.mean()

    def parameters(self, likelihood: tfd.Distribution) -> dict[str, tf.Tensor]:
        """Returns p(x|z)'s named parameters, each `[batch, H, W, C(, k)]`."""
        raise NotImplementedError

    @staticmethod
    def _independent(distribution: tfd.Distribution) -> tfd.Distribution:
        # The last three batch dimensions are the image's H, W, C.
        return tfd.Independent(distribution, reinterpreted_batch_ndims=3)


@_serializable
class BernoulliHead(LikelihoodHead):
    """Bernoulli per pixel, from logits.

    With `binarize=True` each pixel is observed as a fresh Bernoulli(pixel/255)
    draw every time it is seen (dynamic binarization). With `binarize=False`
    the gray value in [0, 1] itself is scored by the Bernoulli log-mass formula,
    as the Pyro VAE tutorial does.

    Args:
        binarize: observe fresh binary draws (dynamic binarization), or score
            the gray values as they are.

    Example:

    ```python
    head = tfvae.BernoulliHead()  # the decoder body gives [batch, H, W, C, 1]
    p = head(logits)              # Independent Bernoulli, event [H, W, C]
    ```
    """

    registry_name = "bernoulli"

    def __init__(self, binarize: bool = True, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(binarize, bool):
            raise ValueError(f"binarize must be a bool. Received: {binarize=}")
        self.binarize = binarize

    def observe(self, images, seed):
        gray = _pixels_to_unit(images)
        if not self.binarize:
            return gray
        return tf.cast(noise.uniform(tf.shape(gray), seed) < gray, tf.float32)

    def distribution(self, params):
        return self._independent(
            LogitBernoulli(logits=params[..., 0], dtype=tf.float32)
        )

    def mean_image(self, likelihood):
        return tf.math.sigmoid(likelihood.distribution.logits)

    def parameters(self, likelihood):
        return {"logits": likelihood.distribution.logits}

    def get_config(self):
        return {**super().get_config(), "binarize": self.binarize}


@_serializable
class ContinuousBernoulliHead(LikelihoodHead):
    """Continuous Bernoulli per pixel (Loaiza-Ganem & Cunningham 2019), on [0, 1].

    Takes uint8 pixels, scored as their gray values in [0, 1]; the decoder
    body gives one logit per value, `[batch, H, W, C, 1]`.

    Example:

    ```python
    decoder = tfvae.Decoder(body, tfvae.ContinuousBernoulliHead())
    ```
    """

    registry_name = "continuous_bernoulli"

    def distribution(self, params):
        return self._independent(tfd.ContinuousBernoulli(logits=params[..., 0]))

    def parameters(self, likelihood):
        return {"logits": likelihood.distribution.logits}


@_serializable
class GaussianHead(LikelihoodHead):
    """Normal per pixel on [0, 1] values.

    The mean is sigmoid(.) so it stays a pixel intensity. The scale is the
    fixed `scale` if given, else learned per pixel as softplus(.) + SCALE_FLOOR.

    Args:
        scale: the fixed standard deviation (the body then gives one
            parameter per value), or None to learn it (two per value: the
            mean's logit, then the scale's).

    Example:

    ```python
    decoder = tfvae.Decoder(body, tfvae.GaussianHead(scale=0.1))
    ```
    """

    registry_name = "gaussian"

    def __init__(self, scale: float | None = None, **kwargs):
        super().__init__(**kwargs)
        if scale is not None and not scale > 0:
            raise ValueError(
                f"scale must be positive, or None to learn it. Received: {scale=}"
            )
        self.scale = scale
        self.params_per_value = 1 if scale is not None else 2

    def distribution(self, params):
        loc = tf.math.sigmoid(params[..., 0])
        if self.scale is None:
            scale = tf.math.softplus(params[..., 1]) + SCALE_FLOOR
        else:
            scale = tf.fill(tf.shape(loc), tf.constant(self.scale, loc.dtype))
        return self._independent(tfd.Normal(loc=loc, scale=scale))

    def parameters(self, likelihood):
        return {
            "loc": likelihood.distribution.loc,
            "scale": likelihood.distribution.scale,
        }

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


class _IntegerPixelsHead(LikelihoodHead):
    """Base class: p(x|z) is a probability mass over the pixel values 0..255.

    Observations are the raw pixels as int32; the encoder sees them in [0, 1].
    """

    discrete = True

    def observe(self, images, seed):
        del seed
        return tf.cast(images, tf.int32)

    def encoder_input(self, x):
        return _pixels_to_unit(x)


@_serializable
class CategoricalHead(_IntegerPixelsHead):
    """256-way categorical per pixel over the integer values 0..255.

    The decoder body gives 256 logits per value, `[batch, H, W, C, 256]`;
    the metrics also come in bits per dimension.

    Example:

    ```python
    decoder = tfvae.Decoder(body, tfvae.CategoricalHead())
    ```
    """

    registry_name = "categorical"

    params_per_value = 256

    def distribution(self, params):
        return self._independent(tfd.Categorical(logits=params))

    def mean_image(self, likelihood):
        probs = tf.math.softmax(likelihood.distribution.logits)
        values = tf.range(self.params_per_value, dtype=probs.dtype)
        return tf.reduce_sum(probs * values, axis=-1) / PIXEL_MAX

    def parameters(self, likelihood):
        return {"logits": likelihood.distribution.logits}


@_serializable
class LogisticMixtureHead(_IntegerPixelsHead):
    """Discretized logistic mixture per pixel value (PixelCNN++, Salimans et al. 2017).

    Each channel of each pixel is a mixture of `components` logistics rounded
    to the integers 0..255, with the edges taking the tails (see
    `DiscretizedLogisticMixture`). The channels are independent given z: PixelCNN++'s
    linear dependence of a pixel's green on its red, and of its blue on both,
    is left out. Per value the decoder gives `components` mixture logits, then
    as many locations on PixelCNN++'s [-1, 1] scale of the pixels, then as many
    log-scales on that scale, clipped below at -7 as PixelCNN++ does.

    Args:
        components: logistics per value; the body gives 3 * components
            parameters per value.

    Example:

    ```python
    # configs/cifar10.flags' likelihood: [batch, 32, 32, 3, 30] from the body.
    decoder = tfvae.Decoder(body, tfvae.LogisticMixtureHead(components=10))
    ```
    """

    registry_name = "logistic_mixture"

    def __init__(self, components: int = 10, **kwargs):
        super().__init__(**kwargs)
        if (
            isinstance(components, bool)
            or not isinstance(components, int)
            or components < 1
        ):
            raise ValueError(
                f"components must be a positive integer. Received: {components=}"
            )
        self.components = components
        self.params_per_value = 3 * components

    def distribution(self, params):
        return self._independent(DiscretizedLogisticMixture(params))

    def mean_image(self, likelihood):
        return likelihood.mean() / PIXEL_MAX

    def parameters(self, likelihood):
        """Returns `logits`, `loc`, `scale` (pixel units), each `[..., components]`."""
        mixture = likelihood.distribution
        return {"logits": mixture.logits, "loc": mixture.loc, "scale": mixture.scale}

    def get_config(self):
        return {**super().get_config(), "components": self.components}


# Builders by flag value. Each takes the model's settings by keyword
# (`builder.build_vae`'s arguments) and uses those it needs.
LIKELIHOODS: dict[str, Callable[..., LikelihoodHead]] = {
    "bernoulli": lambda binarize, **_: BernoulliHead(binarize, name="likelihood"),
    "continuous_bernoulli": lambda **_: ContinuousBernoulliHead(name="likelihood"),
    "gaussian": lambda gaussian_scale, **_: GaussianHead(
        gaussian_scale, name="likelihood"
    ),
    "categorical": lambda **_: CategoricalHead(name="likelihood"),
    "logistic_mixture": lambda mixture_components, **_: LogisticMixtureHead(
        mixture_components, name="likelihood"
    ),
}
