"""Two probability distributions TFP lacks, for the likelihood heads.

- `LogitBernoulli`: `tfd.Bernoulli` whose log-mass takes one softplus;
- `DiscretizedLogisticMixture`: a mixture of logistics rounded to the pixel
  values 0..255 (PixelCNN++'s), with an exact, stable log-mass and its
  gradient written out, compiled with XLA (`without_xla` traces it as plain
  TensorFlow ops, for exports).

`SCALE_FLOOR` and `PIXEL_MAX` are the constants the heads share.
"""

import contextlib
import threading

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
    component k has weight softmax(logits)[k], a location on that scale and
    scale exp(max(log-scale, MIN_LOG_SCALE)). With F the logistic CDF, a
    component's mass is F(v + 1/2) - F(v - 1/2) in pixel units for 0 < v <
    255, and the tails go to the edges: P(0) = F(1/2), P(255) = 1 - F(254.5).
    `sample` is not implemented.

    The log-mass is exact and stable everywhere, including where PixelCNN++'s
    code switches to its midpoint approximation: with a and b the bin's edges
    standardized, F(b) - F(a) = sigmoid(b) sigmoid(-a) (1 - e^(a-b)), so
    log P = -softplus(-b) - softplus(a) + log(1 - e^(-d)) with d = b - a, each
    term vanishing at the edge it does not apply to. It runs on every value
    of every component of every image at each step, forward and backward, so
    it is one function with its gradient written out (`_mixture_log_prob`),
    compiled with XLA into a few passes over memory (TensorFlow's kernels
    take one pass per op), on the parameters laid out component-major, where
    XLA's loops are vectorized: see `_log_prob_by_components`.

    Args:
        params: `[..., 3 * K]`: the K mixture logits, then the K locations on
            [-1, 1], then the K log-scales on that scale, taken at least
            MIN_LOG_SCALE: the layout `LogisticMixtureHead`'s decoder gives.

    Example:

    ```python
    p = DiscretizedLogisticMixture(params)  # [..., 3 * K]
    p.log_prob(pixels)  # int pixels [...] -> [...], nats
    ```
    """

    # PixelCNN++ clips the log-scales below at -7 (a scale of 0.12 pixel
    # values): sharper components only make the gradients explode.
    MIN_LOG_SCALE = -7.0

    def __init__(self, params, *, name="DiscretizedLogisticMixture"):
        parameters = dict(locals())
        self._params = tf.convert_to_tensor(params, tf.float32)
        size = self._params.shape[-1]
        if size is not None and (size == 0 or size % 3):
            raise ValueError(
                "params' last axis must hold 3 values per component (logits, "
                f"locations, log-scales). Received: params.shape={self._params.shape}"
            )
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
        return {"params": tfp.util.ParameterProperties(event_ndims=1)}

    def _raw(self) -> list[tf.Tensor]:
        """Returns the logits, locations and log-scales on [-1, 1], each `[..., K]`."""
        return tf.split(self._params, 3, axis=-1)

    @property
    def logits(self) -> tf.Tensor:
        """The mixture's logits, `[..., K]`."""
        return self._raw()[0]

    @property
    def loc(self) -> tf.Tensor:
        """The components' locations in pixel units (0..255), `[..., K]`."""
        return (self._raw()[1] + 1.0) * _HALF_RANGE

    @property
    def scale(self) -> tf.Tensor:
        """The components' scales in pixel units, `[..., K]`."""
        log_scale = self._raw()[2]
        return _HALF_RANGE * tf.math.exp(tf.maximum(log_scale, self.MIN_LOG_SCALE))

    def _event_shape(self):
        return tf.TensorShape([])

    def _event_shape_tensor(self):
        return tf.constant([], tf.int32)

    def _log_prob(self, x):
        x = tf.convert_to_tensor(x)
        params = self._params
        batch = tf.broadcast_static_shape(x.shape, params.shape[:-1])
        # Broadcast outside the compiled function, so autodiff sums the
        # gradients back to the parameters' own shape.
        if not (
            batch.is_fully_defined() and x.shape == batch and params.shape[:-1] == batch
        ):
            dynamic = tf.broadcast_dynamic_shape(tf.shape(x), tf.shape(params)[:-1])
            x = tf.broadcast_to(x, dynamic)
            params = tf.broadcast_to(
                params, tf.concat([dynamic, tf.shape(params)[-1:]], 0)
            )
        return _log_prob_by_components(x, params)

    def _mean(self):
        # E[x] = sum over v = 1..255 of P(x >= v), P(x >= v) = sum_k w_k (1 -
        # F_k(v - 1/2)), one value at a time: all 255 at once would be 255
        # copies of the parameters.
        weights = tf.math.softmax(self.logits)
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


_TRACING = threading.local()


@contextlib.contextmanager
def without_xla():
    """Within it, `DiscretizedLogisticMixture.log_prob` traces plain TensorFlow ops.

    For SavedModel exports (`tfvae.saved_model`): TF Serving runs XLA only
    when started with its experimental `--xla_cpu_compilation_enabled`, so an
    exported graph asks for none. The log-probabilities agree to float32
    rounding: XLA's exp, log and tanh differ from TensorFlow's in the last bits.

    Example:

    ```python
    with tfvae.distributions.without_xla():
        concrete = tf.function(score).get_concrete_function(spec)
    ```
    """
    previous = getattr(_TRACING, "without_xla", False)
    _TRACING.without_xla = True
    try:
        yield
    finally:
        _TRACING.without_xla = previous


def _log_prob_by_components(x: tf.Tensor, params: tf.Tensor) -> tf.Tensor:
    """Returns log p(x), `[...]`, for int pixels `[...]` and `params` `[..., 3K]`.

    The decoder gives each pixel value's 3K parameters side by side. Per
    example, one transpose lays them out component-major, `[3, K, values]`,
    so that the compiled function's reductions over the K components add
    whole rows, which XLA's loops vectorize; over K values innermost they
    ran slower than TensorFlow's own kernels (the README's Performance).
    """
    shape = tf.shape(x)
    # The first axis (the batch) and the rest; 1 and 1 for a single value.
    lead, rest = tf.reduce_prod(shape[:1]), tf.reduce_prod(shape[1:])
    per_value = tf.shape(params)[-1]
    by_component = tf.transpose(tf.reshape(params, [lead, rest, per_value]), [0, 2, 1])
    compute = (
        _mixture_log_prob
        if getattr(_TRACING, "without_xla", False)
        else _compiled_log_prob
    )
    log_prob = compute(
        tf.reshape(x, [lead, rest]),
        tf.reshape(by_component, [lead, 3, per_value // 3, rest]),
    )
    return tf.reshape(log_prob, shape)


@tf.custom_gradient
def _mixture_log_prob(x, params):
    """log p(x) of `DiscretizedLogisticMixture`, and its gradient, written out.

    Args:
        x: int pixels 0..255, `[batch, values]`.
        params: the raw parameters, `[batch, 3, K, values]`: logits,
            locations and log-scales.

    Returns:
        log p(x), `[batch, values]`, and the gradient function.
    """
    logits, loc, log_scale = tf.unstack(params, axis=1)  # Each [batch, K, values].
    values = tf.cast(x, tf.float32)[:, tf.newaxis]
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
    joint_max = tf.reduce_max(joint, axis=1, keepdims=True)
    joint_exp = tf.math.exp(joint - joint_max)
    joint_sum = tf.reduce_sum(joint_exp, axis=1, keepdims=True)
    logits_max = tf.reduce_max(logits, axis=1, keepdims=True)
    logits_exp = tf.math.exp(logits - logits_max)
    logits_sum = tf.reduce_sum(logits_exp, axis=1, keepdims=True)
    log_prob = tf.math.log(joint_sum) + joint_max - tf.math.log(logits_sum) - logits_max

    def gradient(upstream):
        upstream = upstream[:, tf.newaxis]
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
        return None, tf.stack([d_logits, d_loc, d_log_scale], axis=1)

    return tf.squeeze(log_prob, 1), gradient


# XLA fuses the function above, forward and backward, into a few loops; it is
# retraced per input shape (training's batches, evaluation's chunks).
_compiled_log_prob = tf.function(
    _mixture_log_prob, jit_compile=True, reduce_retracing=True
)
