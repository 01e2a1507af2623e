"""Two probability distributions TFP lacks, for the likelihood heads.

- `LogitBernoulli`: `tfd.Bernoulli` whose log-mass takes one softplus;
- `DiscretizedLogisticMixture`: a mixture of logistics rounded to the pixel
  values 0..255 (PixelCNN++'s), with an exact, stable log-mass and its
  gradient written out.

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


class DiscretizedLogisticMixture(tfd.Distribution):
    """A mixture of logistics rounded to the integers 0..255 (PixelCNN++'s).

    In PixelCNN++'s parametrization: pixel v sits at v / 127.5 - 1 on [-1, 1],
    component k has location `loc[..., k]` on that scale and scale
    exp(max(`log_scale[..., k]`, MIN_LOG_SCALE)), and weight softmax(`logits`).
    With F the logistic CDF, a component's mass is F(v + 1/2) - F(v - 1/2) in
    pixel units for 0 < v < 255, and the tails go to the edges: P(0) = F(1/2),
    P(255) = 1 - F(254.5). `sample` is not implemented.

    The log-mass is exact and stable everywhere, including where PixelCNN++'s
    code switches to its midpoint approximation: with a and b the bin's edges
    standardized, F(b) - F(a) = sigmoid(b) sigmoid(-a) (1 - e^(a-b)), so
    log P = -softplus(-b) - softplus(a) + log(1 - e^(-d)) with d = b - a, each
    term vanishing at the edge it does not apply to. It runs on every value
    of every component of every image at each step, forward and backward,
    which with TensorFlow's one kernel per op (no XLA: `devices.fastest` runs
    convolutional networks without it on a CPU) is a pass over memory per op.
    So it is one function with its gradient written out (`_mixture_log_prob`):
    the edges are far sentinels instead of masks, the three logarithms are
    one, and the mixture's logsumexp leaves the responsibilities the gradient
    needs.

    Args:
        logits: the mixture's logits, `[..., K]`.
        loc: the components' locations on [-1, 1], `[..., K]`.
        log_scale: the components' log-scales on that scale, `[..., K]`,
            taken at least MIN_LOG_SCALE.

    Example:

    ```python
    p = DiscretizedLogisticMixture(logits, loc, log_scale)  # each [..., K]
    p.log_prob(pixels)  # int pixels [...] -> [...], nats
    ```
    """

    # PixelCNN++ clips the log-scales below at -7 (a scale of 0.12 pixel
    # values): sharper components only make the gradients explode.
    MIN_LOG_SCALE = -7.0

    def __init__(self, logits, loc, log_scale, name="DiscretizedLogisticMixture"):
        parameters = dict(locals())
        self._logits = tf.convert_to_tensor(logits, tf.float32)
        self._raw_loc = tf.convert_to_tensor(loc, tf.float32)
        self._log_scale = tf.convert_to_tensor(log_scale, tf.float32)
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
            name: tfp.util.ParameterProperties(event_ndims=1)
            for name in ("logits", "loc", "log_scale")
        }

    @property
    def logits(self) -> tf.Tensor:
        """The mixture's logits, `[..., K]`."""
        return self._logits

    @property
    def loc(self) -> tf.Tensor:
        """The components' locations in pixel units (0..255), `[..., K]`."""
        return (self._raw_loc + 1.0) * _HALF_RANGE

    @property
    def scale(self) -> tf.Tensor:
        """The components' scales in pixel units, `[..., K]`."""
        return _HALF_RANGE * tf.math.exp(
            tf.maximum(self._log_scale, self.MIN_LOG_SCALE)
        )

    def _event_shape(self):
        return tf.TensorShape([])

    def _event_shape_tensor(self):
        return tf.constant([], tf.int32)

    def _log_prob(self, x):
        x = tf.convert_to_tensor(x)
        params = (self._logits, self._raw_loc, self._log_scale)
        shape = x.shape.concatenate([1])
        for p in params:
            shape = tf.broadcast_static_shape(shape, p.shape)
        # Broadcast outside the fused function, so autodiff sums the
        # gradients back to each parameter's own shape.
        if not shape.is_fully_defined() or any(p.shape != shape for p in params):
            dynamic = tf.concat([tf.shape(x), [1]], 0)
            for p in params:
                dynamic = tf.broadcast_dynamic_shape(dynamic, tf.shape(p))
            params = tuple(tf.broadcast_to(p, dynamic) for p in params)
        pixels = tf.broadcast_to(x, tf.shape(params[0])[:-1])
        return _mixture_log_prob(pixels, *params)

    def _mean(self):
        # E[x] = sum over v = 1..255 of P(x >= v), P(x >= v) = sum_k w_k (1 -
        # F_k(v - 1/2)), one value at a time: all 255 at once would be 255
        # copies of the parameters.
        weights = tf.math.softmax(self._logits)
        loc, scale = self.loc, self.scale

        def add_value(value, total):
            survival = tf.math.sigmoid((loc - value + 0.5) / scale)
            return value + 1.0, total + survival

        _, total = tf.while_loop(
            lambda value, _: value <= PIXEL_MAX,
            add_value,
            (tf.constant(1.0), tf.zeros_like(loc)),
        )
        return tf.reduce_sum(weights * total, axis=-1)


_HALF_RANGE = PIXEL_MAX / 2
# Where a bin's edge is the support's end, the standardized edge is this far
# out instead: every term of that tail is then exactly 0 (its softplus, its
# exponential, its part of the gradient), with no mask over the components.
# Far below float32's largest value even after the largest 1/scale, e^7.
_FAR = 1e30


@tf.custom_gradient
def _mixture_log_prob(x, logits, loc, log_scale):
    """log p(x) of `DiscretizedLogisticMixture`, and its gradient, written out.

    Args:
        x: int pixels 0..255, `[...]`.
        logits, loc, log_scale: the raw parameters, each `[..., K]`.

    Returns:
        log p(x), `[...]`, and the gradient function.
    """
    values = tf.cast(x, tf.float32)[..., tf.newaxis]
    # The bin's edges on [-1, 1], or far out past an end of the support.
    lower = tf.where(values > 0, (values - 0.5) / _HALF_RANGE - 1.0, -_FAR)
    upper = tf.where(values < PIXEL_MAX, (values + 0.5) / _HALF_RANGE - 1.0, _FAR)
    at_an_end = tf.where((values > 0) & (values < PIXEL_MAX), 0.0, _FAR)
    unclipped = log_scale > DiscretizedLogisticMixture.MIN_LOG_SCALE
    inverse_scale = tf.math.exp(
        -tf.maximum(log_scale, DiscretizedLogisticMixture.MIN_LOG_SCALE)
    )
    a = (lower - loc) * inverse_scale
    b = (upper - loc) * inverse_scale
    # d = b - a, computed apart for its digits; far out at an end.
    width = inverse_scale / _HALF_RANGE
    # 1 - e^-d = 2u / (1 + u) with u = tanh(d / 2): exact for small d.
    half_tanh = tf.math.tanh(0.5 * (width + at_an_end))
    exp_a, exp_b = tf.math.exp(-tf.abs(a)), tf.math.exp(-tf.abs(b))
    # -softplus(a) - softplus(-b) + log(1 - e^-d): softplus(y) = max(y, 0) +
    # log(1 + e^-|y|), and at most one of a > 0, b < 0 holds (a < b).
    log_mass = tf.math.log(
        2.0 * half_tanh / ((1.0 + half_tanh) * (1.0 + exp_a) * (1.0 + exp_b))
    ) - tf.maximum(tf.maximum(a, -b), 0.0)
    joint = logits + log_mass
    joint_max = tf.reduce_max(joint, axis=-1, keepdims=True)
    joint_exp = tf.math.exp(joint - joint_max)
    joint_sum = tf.reduce_sum(joint_exp, axis=-1, keepdims=True)
    logits_max = tf.reduce_max(logits, axis=-1, keepdims=True)
    logits_exp = tf.math.exp(logits - logits_max)
    logits_sum = tf.reduce_sum(logits_exp, axis=-1, keepdims=True)
    log_prob = tf.math.log(joint_sum) + joint_max - tf.math.log(logits_sum) - logits_max

    def gradient(upstream):
        upstream = upstream[..., tf.newaxis]
        # The components' responsibilities given x, and their prior weights.
        responsibility = joint_exp * (upstream / joint_sum)
        d_logits = responsibility - logits_exp * (upstream / logits_sum)
        # d log P / da = -sigmoid(a), d/db = sigmoid(-b), d/dd = 1 / (e^d - 1)
        # = (1 - u) / 2u: each exactly 0 at a far edge.
        sigmoid_a, sigmoid_minus_b = tf.math.sigmoid(a), tf.math.sigmoid(-b)
        d_loc = responsibility * inverse_scale * (sigmoid_a - sigmoid_minus_b)
        # a, b and d are all proportional to 1 / scale = e^-log_scale.
        d_log_scale = (
            responsibility
            * (
                a * sigmoid_a
                - b * sigmoid_minus_b
                - width * (1.0 - half_tanh) / (2.0 * half_tanh)
            )
            * tf.cast(unclipped, tf.float32)
        )
        return None, d_logits, d_loc, d_log_scale

    return tf.squeeze(log_prob, -1), gradient
