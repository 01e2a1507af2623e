"""The likelihood of a table's row: the product of its columns' likelihoods.

`TableHead` is the likelihood head of a table VAE (`tfvae.table_model`),
made from a schema (`tfvae.tables`). It takes a batch as cells {column:
`[batch]` values} or as rows float32 `[batch, columns]` (`tfvae.table_rows`),
and owns every step between those and p(x|z):

- `observe`: the batch's rows x, in the data's own units, categories as
  their codes, NaN where a cell is missing (`table_rows.RowObserver`, which
  checks cells and stops the step on a bad one, naming the column);
- `encoder_input`: what the encoder sees: numbers standardized with the
  training split's statistics (the log of positive columns, log1p of counts),
  categories one-hot, missing cells 0, then the presence mask `[batch,
  columns]` (as in HI-VAE and the partial VAE);
- `distribution`: a `row_distribution.RowDistribution`, whose `log_prob`
  sums the present cells' log-likelihoods: real -> Normal, positive ->
  LogNormal, count -> NegativeBinomial (or Poisson,
  ZeroInflatedNegativeBinomial), binary -> Bernoulli, categorical ->
  Categorical. Locations and scales are de-standardized inside, so densities
  are in the data's own units.

Every step is computed per column type, not per column: one distribution,
one standardization per type (tracing and running a
step cost per op), then gathered back into the columns' order.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import row_distribution, table_rows, table_typing
from tfvae.distributions import SCALE_FLOOR
from tfvae.likelihoods import LikelihoodHead

tfd = tfp.distributions

# The smallest typical count a count column's rate starts from (its log is
# finite for a column of nearly all zeros).
MIN_RATE = 1e-3
# The count likelihoods, and their parameters per column.
COUNT_LIKELIHOODS = ("negative_binomial", "poisson", "zero_inflated_negative_binomial")
_COUNT_PARAMS = dict(zip(COUNT_LIKELIHOODS, (2, 1, 3), strict=True))
# The other types' parameters per column (a categorical's: its categories).
_PARAMS = {"real": 2, "positive": 2, "binary": 1}
# The logit of a categorical column's padding (the slots past its own
# categories, up to the most any column has): exp underflows to exactly 0
# in float32, so the padding has probability 0 and is never drawn.
_PAD_LOGIT = -1e30


def _serializable(cls):
    return keras.saving.register_keras_serializable(package="tfvae")(cls)


@dataclasses.dataclass(frozen=True, eq=False)
class _Group:
    """The columns of one type: where they sit in a row and in the parameters.

    A group is computed as one distribution over `[batch, n]`, not n small
    ones: tracing and running a step cost per op, not per cell.
    """

    kind: str
    positions: np.ndarray  # int32 [n]: the columns' indices in the row.
    # int32 indices into the decoder's output: [k, n] (parameter j of each
    # column), or for categoricals [n, most categories] (padding -> 0).
    params: np.ndarray
    mean: np.ndarray  # float32 [n]: the standardized scale's statistics
    std: np.ndarray  # (mean 0 and std 1 for binary and categorical columns).
    counts: np.ndarray  # int32 [n]: parameters per column (its categories).

    @property
    def params_valid(self) -> np.ndarray:
        """bool `[n, most categories]`: which of a categorical's slots are its own."""
        return np.arange(self.params.shape[-1]) < self.counts[:, None]


@_serializable
class TableHead(LikelihoodHead):
    """Decoder outputs `[batch, params_per_value]` -> p(row|z), a `RowDistribution`.

    The columns are computed by type: one distribution, one support check
    and one standardization per type, whatever the number of columns.

    Args:
        schema: the table's schema (`tables.infer_schema`).
        count_likelihood: one of `COUNT_LIKELIHOODS`, for every count column.

    Example:
        >>> head = TableHead({"columns": [{"name": "x", "type": "real",
        ...     "mean": 1.0, "std": 2.0}]})
        >>> head.params_per_value
        2
    """

    tabular = True

    def __init__(self, schema: dict, count_likelihood="negative_binomial", **kwargs):
        super().__init__(**kwargs)
        if count_likelihood not in COUNT_LIKELIHOODS:
            raise ValueError(
                f"count_likelihood must be one of {', '.join(COUNT_LIKELIHOODS)}. "
                f"Received: {count_likelihood=}"
            )
        if not schema.get("columns"):
            raise ValueError(f"A schema holds at least one column. Received: {schema}")
        self.schema = schema
        self.count_likelihood = count_likelihood
        self.columns = schema["columns"]
        self.names = [c["name"] for c in self.columns]
        self.sizes = [self._params_of(c) for c in self.columns]
        self.params_per_value = sum(self.sizes)
        self._groups = tuple(self._make_groups())
        self._inverse = row_distribution.column_order(
            [g.positions for g in self._groups]
        )
        self._feature_order = self._make_feature_order()
        self.observer = table_rows.RowObserver(schema)

    def _params_of(self, column: dict) -> int:
        kind = column["type"]
        if kind == "categorical":
            return len(column["categories"])
        if kind == "count":
            return _COUNT_PARAMS[self.count_likelihood]
        return _PARAMS[kind]

    def _make_groups(self):
        offsets = np.cumsum([0, *self.sizes[:-1]]).astype(np.int32)
        kinds = [c["type"] for c in self.columns]
        for kind, where in table_typing.positions_by_type(kinds):
            members = [self.columns[i] for i in where]
            counts = np.array([self.sizes[i] for i in where], np.int32)
            if kind == "categorical":
                slots = np.arange(counts.max(), dtype=np.int32)
                # Padding slots point at parameter 0, then masked out.
                params = np.where(
                    slots < counts[:, None], offsets[where][:, None] + slots, 0
                )
            else:
                params = offsets[where] + np.arange(counts[0], dtype=np.int32)[:, None]
            yield _Group(
                kind=kind,
                positions=where,
                params=params.astype(np.int32),
                mean=np.array([c.get("mean", 0.0) for c in members], np.float32),
                std=np.array([c.get("std", 1.0) for c in members], np.float32),
                counts=counts,
            )

    def _make_feature_order(self) -> np.ndarray:
        """Where each column's encoder features sit among the groups' features.

        The groups' features side by side are each number column's one value,
        and each categorical group's one-hots padded to its most categories;
        gathering by this order puts them in the columns' order (what the
        encoder has always seen) and leaves the padding out.
        """
        spans, start = {}, 0
        for g in self._groups:
            width = g.params.shape[1] if g.kind == "categorical" else 1
            for index, count in zip(g.positions, g.counts, strict=True):
                used = count if g.kind == "categorical" else 1
                spans[int(index)] = range(start, start + used)
                start += width
        return np.concatenate([spans[i] for i in range(len(self.columns))]).astype(
            np.int32
        )

    def input_shape_for(self, image_shape=None) -> tuple:
        """Returns `(None, params_per_value)`: the columns' parameters side by side."""
        del image_shape  # A row's shape is the schema's.
        return (None, self.params_per_value)

    def example_batch(self, image_shape=None) -> dict[str, tf.Tensor]:
        """Returns one row with every cell missing (what the VAE is built with)."""
        del image_shape
        return {
            c["name"]: tf.constant([""])
            if c["type"] == "categorical"
            else tf.constant([float("nan")])
            for c in self.columns
        }

    def check_batch(self, data):
        """Returns a batch's cells or rows, checked (`RowObserver.check_batch`)."""
        return self.observer.check_batch(data)

    def observe(self, images, seed):
        """Returns the rows float32 `[batch, columns]` of cells (rows as they are)."""
        del seed  # Rows are observed as they are.
        return self.observer(images)

    def encoder_input(self, x):
        """Returns `[batch, features]`: standardized cells, one-hots, then the mask.

        A column's features are in the columns' order: a number column's one
        standardized value (binary as is), a categorical column's one-hot.
        """
        present = tf.logical_not(tf.math.is_nan(x))
        features = []
        for g in self._groups:
            value = tf.gather(x, g.positions, axis=-1)
            seen = tf.gather(present, g.positions, axis=-1)
            safe = tf.where(seen, value, row_distribution.PLACEHOLDERS[g.kind])
            if g.kind == "categorical":
                # A missing cell (NaN) is code -1, whose one-hot is all 0.
                codes = tf.where(seen, tf.cast(safe, tf.int32), -1)
                hot = tf.one_hot(codes, g.params.shape[1])
                features.append(tf.reshape(hot, [-1, hot.shape[1] * hot.shape[2]]))
                continue
            scaled = safe
            if g.kind != "binary":
                scaled = (table_typing.to_scale(g.kind, safe, tf.math) - g.mean) / g.std
            features.append(tf.where(seen, scaled, 0.0))
        ordered = tf.gather(tf.concat(features, axis=-1), self._feature_order, axis=-1)
        return tf.concat([ordered, tf.cast(present, tf.float32)], axis=-1)

    def distribution(self, params):
        return row_distribution.RowDistribution(
            [
                self._group_distribution(g, tf.gather(params, g.params, axis=-1))
                for g in self._groups
            ],
            [g.kind for g in self._groups],
            [g.positions for g in self._groups],
        )

    def _group_distribution(self, group: _Group, raw: tf.Tensor) -> tfd.Distribution:
        """Returns the group's distribution of batch shape `[batch, n]`.

        Args:
            group: the columns of one type.
            raw: their parameters, `[batch, k, n]` (categorical: `[batch, n,
                most categories]`).
        """
        kind = group.kind
        if kind == "categorical":
            return tfd.Categorical(logits=tf.where(group.params_valid, raw, _PAD_LOGIT))
        if kind == "binary":
            return tfd.Bernoulli(logits=raw[..., 0, :], dtype=tf.float32)
        if kind == "count":
            # The log of the mean count: raw 0 is the training split's typical
            # count (expm1 of its mean log1p), a unit of raw a factor e. On the
            # log1p scale's std instead, a column of nearly all zeros would
            # start at a mean near 1, out of the network's reach.
            typical = np.maximum(np.expm1(group.mean), 0.0) + MIN_RATE
            log_rate = np.log(typical) + raw[..., 0, :]
            if self.count_likelihood == "poisson":
                return tfd.Poisson(log_rate=log_rate)
            total_count = tf.math.softplus(raw[..., 1, :]) + SCALE_FLOOR
            # The mean exp(log_rate) = total_count * exp(logits).
            logits = log_rate - tf.math.log(total_count)
            if self.count_likelihood == "negative_binomial":
                return tfd.NegativeBinomial(total_count=total_count, logits=logits)
            return tfd.ZeroInflatedNegativeBinomial(
                total_count=total_count,
                logits=logits,
                inflated_loc_logits=raw[..., 2, :],
            )
        # The standardized scale's location, and its scale, in the data's units.
        loc = group.mean + group.std * raw[..., 0, :]
        scale = group.std * (tf.math.softplus(raw[..., 1, :]) + SCALE_FLOOR)
        if kind == "positive":
            return tfd.LogNormal(loc=loc, scale=scale)
        return tfd.Normal(loc=loc, scale=scale)

    def get_config(self):
        return {
            **super().get_config(),
            "schema": self.schema,
            "count_likelihood": self.count_likelihood,
        }
