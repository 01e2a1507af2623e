"""Two probability distributions TFP lacks, for the likelihood heads.

- `LogitBernoulli`: `tfd.Bernoulli` whose log-mass takes one softplus;
- `DiscretizedLogistic`: a logistic rounded to the pixel values 0..255
  (PixelCNN++'s), with an exact, stable log-mass.

`SCALE_FLOOR` and `PIXEL_MAX` are the constants the heads share.
"""

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

# Keeps posterior and likelihood scales away from zero, where log-densities
# and their gradients blow up.
SCALE_FLOOR = 1e-4

# The largest raw pixel value: images are uint8, 0..255.
PIXEL_MAX = 255.0


class LogitBernoulli(tfd.Bernoulli):
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


class DiscretizedLogistic(tfd.Distribution):
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
            tf.where(x < PIXEL_MAX, -tf.math.softplus(-upper), zero)
            + tf.where(x > 0, -tf.math.softplus(lower), zero)
            + tf.where(
                (x > 0) & (x < PIXEL_MAX), tfp.math.log1mexp(inverse_scale), zero
            )
        )

    def _mean(self):
        # E[x] = sum over v = 1..255 of P(x >= v) = 1 - F(v - 1/2), one value
        # at a time: all 255 at once would be 255 copies of the parameters.
        def add_value(value, total):
            survival = tf.math.sigmoid((self.loc - value + 0.5) / self.scale)
            return value + 1.0, total + survival

        _, total = tf.while_loop(
            lambda value, _: value <= PIXEL_MAX,
            add_value,
            (tf.constant(1.0), tf.zeros(self.batch_shape_tensor(), tf.float32)),
        )
        return total
