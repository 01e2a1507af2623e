"""Distribution heads: small Keras 3 layers whose output is a `tfd.Distribution`.

`tfp.layers` only works with legacy Keras 2, so tfvae has its own heads.

Posterior heads turn encoder features `[batch, features]` into q(z|x), a
multivariate normal with batch shape `[batch]` and event shape `[latent_dim]`.

Likelihood heads turn decoder outputs `[batch, H, W, C, params_per_value]` into
p(x|z), a distribution with batch shape `[batch]` and event shape `[H, W, C]`.
Each likelihood also owns its side of the data: how raw `uint8` pixels become
observations (`observe`), what the encoder sees of an observation
(`encoder_input`), the expected image (`mean_image`) and its named parameters
(`parameters`, what the exported `decode` signature returns).
"""

from collections.abc import Callable

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import noise

tfd = tfp.distributions
tfb = tfp.bijectors

# Keeps posterior and likelihood scales away from zero, where log-densities
# and their gradients blow up.
SCALE_FLOOR = 1e-4

_PIXEL_MAX = 255.0


def _pixels_to_unit(images: tf.Tensor) -> tf.Tensor:
    return tf.cast(images, tf.float32) / _PIXEL_MAX


def _serializable(cls):
    return keras.saving.register_keras_serializable(package="tfvae")(cls)


class PosteriorHead(keras.layers.Layer):
    """Base class: features -> a location-scale multivariate normal q(z|x).

    The projection to q's parameters runs in float32 whatever the mixed
    precision policy, so q and its log-densities are float32.
    """

    def __init__(self, latent_dim: int, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(
                f"latent_dim must be a positive integer. Received: {latent_dim=}"
            )
        self.latent_dim = latent_dim

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
    """q(z|x) = N(loc, diag(scale^2)); scale = softplus(.) + SCALE_FLOOR."""

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
    """q(z|x) = N(loc, L L^T) with a full lower-triangular scale L."""

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


class LikelihoodHead(keras.layers.Layer):
    """Base class: decoder outputs -> p(x|z) with event shape `[H, W, C]`.

    Subclasses implement `distribution(params)`; `call` hands it float32
    parameters, so p(x|z) and its log-probabilities stay float32 under a
    mixed precision policy.
    """

    params_per_value = 1
    # True when p(x|z) is a probability mass over the 256 pixel values, so
    # bits per dimension are meaningful.
    discrete = False

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


class _LogitBernoulli(tfd.Bernoulli):
    """`tfd.Bernoulli` from logits, whose log-mass takes one softplus, not two.

    TFP computes log p(x) = -(1 - x) softplus(s) - x softplus(-s); as
    softplus(-s) = softplus(s) - s, that is x s - softplus(s) for any x in
    [0, 1] (binary or gray) and finite logits s (a dense layer's outputs), with
    half the exp/log work, and a gradient x - sigmoid(s) of one sigmoid. It
    runs on every pixel of every image, forward and backward, at each step.
    """

    def _log_prob(self, event):
        logits = self._logits_parameter_no_checks()
        return tf.cast(event, logits.dtype) * logits - tf.math.softplus(logits)


@_serializable
class BernoulliHead(LikelihoodHead):
    """Bernoulli per pixel, from logits.

    With `binarize=True` each pixel is observed as a fresh Bernoulli(pixel/255)
    draw every time it is seen (dynamic binarization). With `binarize=False`
    the gray value in [0, 1] itself is scored by the Bernoulli log-mass formula,
    as the Pyro VAE tutorial does.
    """

    def __init__(self, binarize: bool, **kwargs):
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
            _LogitBernoulli(logits=params[..., 0], dtype=tf.float32)
        )

    def mean_image(self, likelihood):
        return tf.math.sigmoid(likelihood.distribution.logits)

    def parameters(self, likelihood):
        return {"logits": likelihood.distribution.logits}

    def get_config(self):
        return {**super().get_config(), "binarize": self.binarize}


@_serializable
class ContinuousBernoulliHead(LikelihoodHead):
    """Continuous Bernoulli per pixel (Loaiza-Ganem & Cunningham 2019), on [0, 1]."""

    def distribution(self, params):
        return self._independent(tfd.ContinuousBernoulli(logits=params[..., 0]))

    def parameters(self, likelihood):
        return {"logits": likelihood.distribution.logits}


@_serializable
class GaussianHead(LikelihoodHead):
    """Normal per pixel on [0, 1] values.

    The mean is sigmoid(.) so it stays a pixel intensity. The scale is the
    fixed `scale` if given, else learned per pixel as softplus(.) + SCALE_FLOOR.
    """

    def __init__(self, scale: float | None, **kwargs):
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
    """256-way categorical per pixel over the integer values 0..255."""

    params_per_value = 256

    def distribution(self, params):
        return self._independent(tfd.Categorical(logits=params))

    def mean_image(self, likelihood):
        probs = tf.math.softmax(likelihood.distribution.logits)
        values = tf.range(self.params_per_value, dtype=probs.dtype)
        return tf.reduce_sum(probs * values, axis=-1) / _PIXEL_MAX

    def parameters(self, likelihood):
        return {"logits": likelihood.distribution.logits}


class _DiscretizedLogistic(tfd.Distribution):
    """Logistic(loc, scale) rounded to the integers 0..255, in pixel units.

    With F the logistic CDF, P(x) = F(x + 1/2) - F(x - 1/2) for 0 < x < 255,
    and the tails go to the edges: P(0) = F(1/2), P(255) = 1 - F(254.5). The
    log-mass is exact and stable everywhere, including where PixelCNN++'s code
    switches to its midpoint approximation: with a = (x - 1/2 - loc) / scale
    and b = a + 1 / scale, F(b) - F(a) = sigmoid(b) sigmoid(-a) (1 - e^(a-b)),
    so log P = -softplus(-b) - softplus(a) + log(1 - e^(-1/scale)), each term
    dropped at the edge it does not apply to. `sample` is not implemented.
    """

    def __init__(self, loc, scale, name="DiscretizedLogistic"):
        parameters = dict(locals())
        self._loc = tf.convert_to_tensor(loc, tf.float32)
        self._scale = tf.convert_to_tensor(scale, tf.float32)
        super().__init__(
            dtype=tf.int32,
            reparameterization_type=tfd.NOT_REPARAMETERIZED,
            validate_args=False,
            allow_nan_stats=True,
            parameters=parameters,
            name=name,
        )

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return {
            "loc": tfp.util.ParameterProperties(),
            "scale": tfp.util.ParameterProperties(),
        }

    @property
    def loc(self) -> tf.Tensor:
        """The logistic's location, in pixel units."""
        return self._loc

    @property
    def scale(self) -> tf.Tensor:
        """The logistic's scale, in pixel units."""
        return self._scale

    def _event_shape(self):
        return tf.TensorShape([])

    def _event_shape_tensor(self):
        return tf.constant([], tf.int32)

    def _log_prob(self, x):
        x = tf.cast(x, tf.float32)
        inverse_scale = tf.math.reciprocal(self.scale)
        lower = (x - 0.5 - self.loc) * inverse_scale
        upper = lower + inverse_scale
        zero = tf.zeros_like(lower)
        # Every branch is finite, so the unused ones pass no NaN gradients.
        return (
            tf.where(x < _PIXEL_MAX, -tf.math.softplus(-upper), zero)
            + tf.where(x > 0, -tf.math.softplus(lower), zero)
            + tf.where(
                (x > 0) & (x < _PIXEL_MAX), tfp.math.log1mexp(inverse_scale), zero
            )
        )

    def _mean(self):
        # E[x] = sum over v = 1..255 of P(x >= v) = 1 - F(v - 1/2), one value
        # at a time: all 255 at once would be 255 copies of the parameters.
        def add_value(value, total):
            survival = tf.math.sigmoid((self.loc - value + 0.5) / self.scale)
            return value + 1.0, total + survival

        _, total = tf.while_loop(
            lambda value, _: value <= _PIXEL_MAX,
            add_value,
            (tf.constant(1.0), tf.zeros(self.batch_shape_tensor(), tf.float32)),
        )
        return total


@_serializable
class LogisticMixtureHead(_IntegerPixelsHead):
    """Discretized logistic mixture per pixel value (PixelCNN++, Salimans et al. 2017).

    Each channel of each pixel is a mixture of `components` logistics rounded
    to the integers 0..255, with the edges taking the tails (see
    `_DiscretizedLogistic`). The channels are independent given z: PixelCNN++'s
    linear dependence of a pixel's green on its red, and of its blue on both,
    is left out. Per value the decoder gives `components` mixture logits, then
    as many locations on PixelCNN++'s [-1, 1] scale of the pixels, then as many
    log-scales on that scale, clipped below at -7 as PixelCNN++ does.
    """

    _MIN_LOG_SCALE = -7.0

    def __init__(self, components: int, **kwargs):
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
        logits, loc, log_scale = tf.split(params, 3, axis=-1)
        half_range = _PIXEL_MAX / 2
        return self._independent(
            tfd.MixtureSameFamily(
                mixture_distribution=tfd.Categorical(logits=logits),
                components_distribution=_DiscretizedLogistic(
                    loc=(loc + 1.0) * half_range,
                    scale=half_range
                    * tf.math.exp(tf.maximum(log_scale, self._MIN_LOG_SCALE)),
                ),
            )
        )

    def mean_image(self, likelihood):
        return likelihood.mean() / _PIXEL_MAX

    def parameters(self, likelihood):
        """Returns `logits`, `loc`, `scale` (pixel units), each `[..., components]`."""
        mixture = likelihood.distribution
        return {
            "logits": mixture.mixture_distribution.logits,
            "loc": mixture.components_distribution.loc,
            "scale": mixture.components_distribution.scale,
        }

    def get_config(self):
        return {**super().get_config(), "components": self.components}


# Builders by flag value. Each takes the model's settings by keyword
# (`model.build_vae`'s arguments) and uses those it needs.
POSTERIORS: dict[str, Callable[..., PosteriorHead]] = {
    "diag": lambda latent_dim, **_: NormalDiagHead(latent_dim, name="posterior"),
    "full": lambda latent_dim, **_: NormalTriLHead(latent_dim, name="posterior"),
}

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
