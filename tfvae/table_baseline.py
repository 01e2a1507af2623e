"""The independent-columns baseline: each column alone, fitted on the training split.

A table VAE earns its latent space only if it beats the model that treats the
columns as independent, each fitted by itself on the training split:

    real         Gaussian at the column's mean and standard deviation
    positive     log-normal at the mean and standard deviation of its log
    count        negative binomial matched to the mean and variance (Poisson
                 when the variance is not above the mean)
    binary       Bernoulli at the share of ones
    categorical  the categories' frequencies

Each is floored as the VAE's likelihood is, so a test value the training
split lacks scores finite: the schema's standard deviations (never 0), a
rate of at least `table_likelihood`'s smallest, and one extra (add-one)
count for each binary value and category. Rows are observed by the VAE's
own `TableHead` and scored by its `RowDistribution`: the same cells, the
same refusals, missing cells left out the same way.

`IndependentColumns(schema, train)` fits it; `row_nll(frame)` scores rows in
nats, missing cells left out as the VAE leaves them out, so its test NLL and
anomaly scores compare with `tfvae.table_evaluation.evaluate_table`'s.

Example:

    baseline = IndependentColumns(schema, train)
    baseline.row_nll(test).mean()  # nats per row
"""

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import row_distribution, tables
from tfvae.table_likelihood import MIN_RATE, TableHead

tfd = tfp.distributions


def _fit(column: dict, values: np.ndarray) -> tfd.Distribution:
    """Returns one column's distribution fitted to its present training values.

    Args:
        column: its schema entry (the mean and std of real and positive
            columns are the moments the fit needs, floored).
        values: its present cells as `TableHead.observe` gives them
            (categories as codes), `[n]`.

    Returns:
        A float32 distribution of batch shape `[1]`.
    """
    kind = column["type"]
    if kind in ("categorical", "binary"):
        # Add-one smoothing: a value the training split lacks is not impossible.
        slots = 2 if kind == "binary" else len(column["categories"])
        counts = np.bincount(values.astype(int), minlength=slots) + 1.0
        probs = (counts / counts.sum()).astype(np.float32)
        if kind == "binary":
            return tfd.Bernoulli(probs=probs[1:], dtype=tf.float32)
        return tfd.Categorical(probs=probs[None])
    if kind in ("real", "positive"):
        loc, scale = [np.float32([column[key]]) for key in ("mean", "std")]
        return (tfd.Normal if kind == "real" else tfd.LogNormal)(loc, scale)
    mean, variance = max(values.mean(), MIN_RATE), values.var()
    if variance <= mean:
        return tfd.Poisson(rate=np.float32([mean]))
    # Mean r p / (1 - p) and variance r p / (1 - p)^2, solved for r and p.
    return tfd.NegativeBinomial(
        total_count=np.float32([mean**2 / (variance - mean)]),
        probs=np.float32([1.0 - mean / variance]),
    )


class IndependentColumns:
    """The table's columns as independent distributions, fitted on its training split.

    Args:
        schema: the table's schema (`tables.infer_schema`); it gives the types,
            the categories and the moments of the real and positive columns.
        train: the training split, a DataFrame of the schema's columns.

    Example:
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"x": [0.0, 1.0, 2.0], "n": [0, 2, 7]})
        >>> baseline = IndependentColumns(tables.infer_schema(frame), frame)
        >>> baseline.row_nll(frame).shape
        (3,)
    """

    def __init__(self, schema: dict, train: pd.DataFrame):
        self.columns = schema["columns"]
        self._head = TableHead(schema)
        x = self._observe(train)
        parts = [
            _fit(column, x[:, index][~np.isnan(x[:, index])])
            for index, column in enumerate(self.columns)
        ]
        # One part per column: the VAE's row distribution, scoring alike.
        self._rows = row_distribution.RowDistribution(
            parts,
            [column["type"] for column in self.columns],
            [[index] for index in range(len(self.columns))],
        )

    def _observe(self, frame: pd.DataFrame) -> np.ndarray:
        cells = tables.table_columns(frame, {"columns": self.columns})
        return self._head.observe(cells, None).numpy()

    def column_nll(self, frame: pd.DataFrame) -> np.ndarray:
        """Returns each cell's -log p, 0 where missing, `[rows, columns]` nats.

        Args:
            frame: rows of the schema's columns.

        Returns:
            float64 `[rows, columns]`, in the schema's column order.

        Raises:
            tf.errors.InvalidArgumentError: a cell outside its column (a
                category the training split lacks, a value off the
                support), naming the column, as the VAE refuses it.
        """
        scores = -self._rows.column_log_probs(self._observe(frame))
        # A missing cell scores 0, not -0.
        return np.where(scores.numpy() == 0, 0.0, scores.numpy()).astype(np.float64)

    def row_nll(self, frame: pd.DataFrame) -> np.ndarray:
        """Returns each row's -log p(row) under independent columns, `[rows]` nats.

        Args:
            frame: rows of the schema's columns.

        Returns:
            float64 `[rows]`.
        """
        return self.column_nll(frame).sum(axis=-1)
