"""p(x|z) of table rows: independent columns given z, computed by column type.

A table VAE's likelihood (`tfvae.table_likelihood.TableHead`) groups a row's
columns by type and builds one distribution per type over `[batch, n]`;
`RowDistribution` scores, averages and draws whole rows from those groups,
in the columns' own order, leaving missing cells (NaN) out.
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

# A placeholder each type scores a missing cell at (then masked out), so no
# NaN reaches a log-probability or its gradient.
PLACEHOLDERS = {
    "real": 0.0,
    "positive": 1.0,
    "count": 0.0,
    "binary": 0.0,
    "categorical": 0.0,
}


def in_column_order(pieces: list, inverse: np.ndarray) -> tf.Tensor:
    """Returns the groups' pieces side by side, in the columns' order.

    Args:
        pieces: one tensor `[..., n]` per group, over its n columns.
        inverse: `column_order` of the groups' positions, int `[columns]`.

    Returns:
        `[..., columns]`: column i is the groups' column at `inverse[i]`.

    Example:
        >>> pieces = [tf.constant([[10.0, 30.0]]), tf.constant([[20.0]])]
        >>> in_column_order(pieces, column_order([[0, 2], [1]])).numpy()
        array([[10., 20., 30.]], dtype=float32)
    """
    return tf.gather(tf.concat(pieces, axis=-1), inverse, axis=-1)


def column_order(positions: list) -> np.ndarray:
    """Returns where each column sits among the groups' columns side by side.

    Args:
        positions: each group's columns' indices in the row, int `[n]`; all
            together a permutation of the row's columns.

    Returns:
        int32 `[columns]`, for `in_column_order`.

    Example:
        >>> column_order([[0, 2], [1]]).tolist()
        [0, 2, 1]
    """
    return np.argsort(np.concatenate(positions)).astype(np.int32)


class RowDistribution(tfd.Distribution):
    """p(x|z) of table rows: independent columns given z, missing cells left out.

    Args:
        parts: one distribution per column type, each of batch shape `[batch,
            n]` over its n columns; a categorical part's values are codes.
        kinds: each part's type (`table_typing.COLUMN_TYPES`).
        positions: each part's columns' indices in the row, int `[n]`.

    Event shape `[columns]`; values are float32 rows in the data's units, NaN
    where a cell is missing.

    Example:
        >>> rows = RowDistribution(
        ...     [tfd.Normal([[0.0, 1.0]], 1.0), tfd.Bernoulli(logits=[[0.0]])],
        ...     ["real", "binary"], [[0, 2], [1]])
        >>> rows.column_log_probs([[0.0, 1.0, float("nan")]]).shape
        TensorShape([1, 3])
    """

    def __init__(
        self, parts: list, kinds: list[str], positions: list, name="RowDistribution"
    ):
        self._parts = list(parts)
        self._kinds = list(kinds)
        self._positions = [np.asarray(p, np.int32) for p in positions]
        self._inverse = column_order(self._positions)
        super().__init__(
            dtype=tf.float32,
            reparameterization_type=tfd.NOT_REPARAMETERIZED,
            validate_args=False,
            allow_nan_stats=True,
            parameters={"parts": parts, "kinds": kinds, "positions": positions},
            name=name,
        )

    def _batch_shape(self):
        return self._parts[0].batch_shape[:-1]

    def _batch_shape_tensor(self):
        return self._parts[0].batch_shape_tensor()[:-1]

    def _event_shape(self):
        return tf.TensorShape([len(self._inverse)])

    def _event_shape_tensor(self):
        return tf.constant([len(self._inverse)], tf.int32)

    def column_log_probs(self, x: tf.Tensor) -> tf.Tensor:
        """Returns each cell's log-likelihood, 0 where missing, `[..., columns]`."""
        x = tf.convert_to_tensor(x, tf.float32)
        scores = []
        for part, kind, where in zip(
            self._parts, self._kinds, self._positions, strict=True
        ):
            value = tf.gather(x, where, axis=-1)
            present = tf.logical_not(tf.math.is_nan(value))
            safe = tf.where(present, value, PLACEHOLDERS[kind])
            if kind == "categorical":
                safe = tf.cast(safe, tf.int32)
            scores.append(tf.where(present, part.log_prob(safe), 0.0))
        return in_column_order(scores, self._inverse)

    def _log_prob(self, x):
        return tf.reduce_sum(self.column_log_probs(x), axis=-1)

    def _mean(self):
        # A categorical column's most likely category: its code.
        return in_column_order(
            [
                tf.cast(p.mode() if kind == "categorical" else p.mean(), tf.float32)
                for p, kind in zip(self._parts, self._kinds, strict=True)
            ],
            self._inverse,
        )

    def imputation(self) -> tf.Tensor:
        """Returns each cell's best single value, float32 `[..., columns]`.

        A number column's mean (real, positive, count: the value of least
        squared error); a binary or categorical column's most likely value
        (its mean, a share of ones, is no value the column holds).

        Example:
            >>> RowDistribution([tfd.Bernoulli(logits=[[1.0]])], ["binary"],
            ...     [[0]]).imputation().numpy()
            array([[1.]], dtype=float32)
        """
        return in_column_order(
            [
                tf.cast(
                    p.mode() if kind in ("binary", "categorical") else p.mean(),
                    tf.float32,
                )
                for p, kind in zip(self._parts, self._kinds, strict=True)
            ],
            self._inverse,
        )

    def _sample_n(self, n, seed=None):
        seeds = tf.unstack(tfp.random.split_seed(seed, n=len(self._parts)))
        return in_column_order(
            [
                tf.cast(p.sample(n, seed=s), tf.float32)
                for p, s in zip(self._parts, seeds, strict=True)
            ],
            self._inverse,
        )
