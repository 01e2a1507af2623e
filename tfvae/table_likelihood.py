"""The likelihood of a table's row: the product of its columns' likelihoods.

`TableHead` is the likelihood head of a table VAE (`tfvae.table_model`),
made from a schema (`tfvae.tables`). It takes a batch as a dict {column:
`[batch]` tensor} (float numbers with NaN for missing cells; string
categories with "" for missing, or int codes with -1), and owns every step
between those cells and p(x|z):

- `observe`: the cells as one float32 `[batch, columns]` tensor x, in the
  data's own units, categories as their codes, NaN where a cell is missing;
  a category the model never saw, or a value outside its column's support,
  stops the step with an error naming the column;
- `encoder_input`: what the encoder sees: numbers standardized with the
  training split's statistics (the log of positive columns, log1p of counts),
  categories one-hot, missing cells 0, then the presence mask `[batch,
  columns]` (as in HI-VAE and the partial VAE);
- `distribution`: `RowDistribution`, whose `log_prob` sums the present cells'
  log-likelihoods: real -> Normal, positive -> LogNormal, count ->
  NegativeBinomial (or Poisson, ZeroInflatedNegativeBinomial), binary ->
  Bernoulli, categorical -> Categorical. Locations and scales are
  de-standardized inside, so densities are in the data's own units.
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.distributions import SCALE_FLOOR
from tfvae.likelihoods import LikelihoodHead

tfd = tfp.distributions

# The count likelihoods, by name: (parameters per column, builder from the
# raw parameters `[..., k]`, the log1p scale's mean and std).
COUNT_LIKELIHOODS = ("negative_binomial", "poisson", "zero_inflated_negative_binomial")
_COUNT_PARAMS = dict(zip(COUNT_LIKELIHOODS, (2, 1, 3), strict=True))
# A placeholder each type scores a missing cell at (then masked out), so no
# NaN reaches a log-probability or its gradient.
_SAFE = {"real": 0.0, "positive": 1.0, "count": 0.0, "binary": 0.0}


def _serializable(cls):
    return keras.saving.register_keras_serializable(package="tfvae")(cls)


class RowDistribution(tfd.Distribution):
    """p(x|z) of table rows: independent columns given z, missing cells left out.

    Args:
        columns: one distribution per column, each of batch shape `[batch]`;
            a categorical column's values are its codes.
        types: each column's type (`tables.COLUMN_TYPES`).

    Event shape `[columns]`; values are float32 rows in the data's units, NaN
    where a cell is missing.
    """

    def __init__(self, columns: list, types: list[str], name="RowDistribution"):
        self._columns = list(columns)
        self._types = list(types)
        super().__init__(
            dtype=tf.float32,
            reparameterization_type=tfd.NOT_REPARAMETERIZED,
            validate_args=False,
            allow_nan_stats=True,
            parameters={"columns": columns, "types": types, "name": name},
            name=name,
        )

    @property
    def columns(self) -> list:
        return self._columns

    def _batch_shape(self):
        return self._columns[0].batch_shape

    def _batch_shape_tensor(self):
        return self._columns[0].batch_shape_tensor()

    def _event_shape(self):
        return tf.TensorShape([len(self._columns)])

    def _event_shape_tensor(self):
        return tf.constant([len(self._columns)], tf.int32)

    def column_log_probs(self, x: tf.Tensor) -> tf.Tensor:
        """Returns each cell's log-likelihood, 0 where missing, `[batch, columns]`."""
        x = tf.convert_to_tensor(x, tf.float32)
        scores = []
        for index, (column, kind) in enumerate(
            zip(self._columns, self._types, strict=True)
        ):
            value = x[..., index]
            present = tf.logical_not(tf.math.is_nan(value))
            safe = tf.where(present, value, _SAFE.get(kind, 0.0))
            if kind == "categorical":
                safe = tf.cast(safe, tf.int32)
            scores.append(tf.where(present, column.log_prob(safe), 0.0))
        return tf.stack(scores, axis=-1)

    def _log_prob(self, x):
        return tf.reduce_sum(self.column_log_probs(x), axis=-1)

    def _mean(self):
        # A categorical column's most likely category: its code.
        return tf.stack(
            [
                tf.cast(c.mode(), tf.float32)
                if kind == "categorical"
                else tf.cast(c.mean(), tf.float32)
                for c, kind in zip(self._columns, self._types, strict=True)
            ],
            axis=-1,
        )

    def _sample_n(self, n, seed=None):
        seeds = tfp.random.split_seed(seed, n=len(self._columns))
        return tf.stack(
            [
                tf.cast(c.sample(n, seed=s), tf.float32)
                for c, s in zip(self._columns, tf.unstack(seeds), strict=True)
            ],
            axis=-1,
        )


@_serializable
class TableHead(LikelihoodHead):
    """Decoder outputs `[batch, params_per_value]` -> p(row|z), a `RowDistribution`.

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
        # Hash tables and assertions have no XLA kernels.
        self.supports_jit = False
        self._tables = {
            c["name"]: tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(c["categories"]),
                    tf.range(len(c["categories"]), dtype=tf.int64),
                ),
                default_value=-1,
            )
            for c in self.columns
            if c["type"] == "categorical"
        }

    def _params_of(self, column: dict) -> int:
        kind = column["type"]
        if kind == "categorical":
            return len(column["categories"])
        if kind == "count":
            return _COUNT_PARAMS[self.count_likelihood]
        return {"real": 2, "positive": 2, "binary": 1}[kind]

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

    def check_batch(self, data) -> dict[str, tf.Tensor]:
        """Returns the batch's columns, refusing missing or extra ones by name."""
        if not isinstance(data, dict):
            raise ValueError(
                "A table VAE takes batches {column name: [batch] values} "
                f"(`tables.table_batches`). Received: a {type(data).__name__}"
            )
        missing = sorted(set(self.names) - set(data))
        extra = sorted(set(data) - set(self.names))
        if missing or extra:
            raise ValueError(
                f"A batch must hold the table's columns. Missing: {missing}; "
                f"extra: {extra}"
            )
        return {name: tf.convert_to_tensor(data[name]) for name in self.names}

    def _codes(self, column: dict, values: tf.Tensor) -> tf.Tensor:
        name, count = column["name"], len(column["categories"])
        if values.dtype == tf.string:
            codes = self._tables[name].lookup(values)
            unknown = tf.logical_and(codes < 0, tf.not_equal(values, ""))
            shown = tf.strings.reduce_join(tf.boolean_mask(values, unknown)[:1])
            tf.debugging.Assert(
                tf.logical_not(tf.reduce_any(unknown)),
                [f"Column {name!r} holds a category the model never saw:", shown],
            )
        elif values.dtype.is_integer:
            codes = tf.cast(values, tf.int64)
            tf.debugging.Assert(
                tf.reduce_all(codes < count),
                [f"Column {name!r}'s codes must be -1 (missing) to {count - 1}"],
            )
        else:
            raise ValueError(
                f"Column {name!r} is categorical: give its cells as strings or int "
                f"codes. Received: {values.dtype.name}"
            )
        return tf.where(codes < 0, float("nan"), tf.cast(codes, tf.float32))

    def observe(self, images, seed):
        """Returns the rows as float32 `[batch, columns]`, NaN where missing."""
        del seed  # Rows are observed as they are.
        cells = self.check_batch(images)
        columns = []
        for column in self.columns:
            values = cells[column["name"]]
            if column["type"] == "categorical":
                columns.append(self._codes(column, values))
                continue
            if values.dtype == tf.string:
                raise ValueError(
                    f"Column {column['name']!r} is {column['type']}: give numbers "
                    "(NaN for a missing cell). Received: strings"
                )
            values = tf.cast(values, tf.float32)
            columns.append(self._check_support(column, values))
        return tf.stack(columns, axis=-1)

    @staticmethod
    def _check_support(column: dict, values: tf.Tensor) -> tf.Tensor:
        kind, name = column["type"], column["name"]
        present = tf.boolean_mask(values, tf.logical_not(tf.math.is_nan(values)))
        fits = {
            "real": tf.math.is_finite(present),
            "positive": present > 0,
            "count": (present >= 0) & tf.equal(present, tf.round(present)),
            "binary": tf.equal(present, 0.0) | tf.equal(present, 1.0),
        }[kind]
        tf.debugging.Assert(
            tf.reduce_all(fits),
            [f"Column {name!r} is {kind} but holds", tf.boolean_mask(present, ~fits)],
        )
        return values

    def encoder_input(self, x):
        """Returns `[batch, features]`: standardized cells, one-hots, then the mask."""
        present = tf.logical_not(tf.math.is_nan(x))
        features = []
        for index, column in enumerate(self.columns):
            kind, value = column["type"], x[:, index]
            safe = tf.where(present[:, index], value, _SAFE.get(kind, 0.0))
            if kind == "categorical":
                # A missing cell (NaN) is code -1, whose one-hot is all 0.
                codes = tf.where(present[:, index], tf.cast(safe, tf.int32), -1)
                features.append(tf.one_hot(codes, len(column["categories"])))
                continue
            scaled = {"positive": tf.math.log, "count": tf.math.log1p}.get(
                kind, tf.identity
            )(safe)
            if kind != "binary":
                scaled = (scaled - column["mean"]) / column["std"]
            features.append(tf.where(present[:, index], scaled, 0.0)[:, tf.newaxis])
        return tf.concat([*features, tf.cast(present, tf.float32)], axis=-1)

    def distribution(self, params):
        pieces = tf.split(params, self.sizes, axis=-1)
        columns = [
            self._column_distribution(c, p)
            for c, p in zip(self.columns, pieces, strict=True)
        ]
        return RowDistribution(columns, [c["type"] for c in self.columns])

    def _column_distribution(self, column: dict, raw: tf.Tensor) -> tfd.Distribution:
        kind = column["type"]
        if kind == "categorical":
            return tfd.Categorical(logits=raw)
        if kind == "binary":
            return tfd.Bernoulli(logits=raw[..., 0], dtype=tf.float32)
        # The standardized scale's location, and its scale, in the data's units.
        loc = column["mean"] + column["std"] * raw[..., 0]
        if kind == "count":
            if self.count_likelihood == "poisson":
                return tfd.Poisson(log_rate=loc)
            total_count = tf.math.softplus(raw[..., 1]) + SCALE_FLOOR
            # The mean exp(loc) = total_count * exp(logits).
            logits = loc - tf.math.log(total_count)
            if self.count_likelihood == "negative_binomial":
                return tfd.NegativeBinomial(total_count=total_count, logits=logits)
            return tfd.ZeroInflatedNegativeBinomial(
                total_count=total_count,
                logits=logits,
                inflated_loc_logits=raw[..., 2],
            )
        scale = column["std"] * (tf.math.softplus(raw[..., 1]) + SCALE_FLOOR)
        if kind == "positive":
            return tfd.LogNormal(loc=loc, scale=scale)
        return tfd.Normal(loc=loc, scale=scale)

    def mean_image(self, likelihood):
        """Returns E[row|z] in the data's units (a category's most likely code)."""
        return likelihood.mean()

    def get_config(self):
        return {
            **super().get_config(),
            "schema": self.schema,
            "count_likelihood": self.count_likelihood,
        }
