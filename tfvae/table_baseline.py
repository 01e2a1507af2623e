"""The independent-columns baseline: each column alone, fitted on the training split.

A table VAE earns its latent space only if it beats the model that treats the
columns as independent, each fitted by itself on the training split:

    real         Gaussian at the column's mean and standard deviation
    positive     log-normal at the mean and standard deviation of its log
    count        negative binomial matched to the mean and variance (Poisson
                 when the variance is not above the mean)
    binary       Bernoulli at the share of ones
    categorical  the categories' frequencies

`IndependentColumns(schema, train)` fits it; `row_nll(frame)` scores rows in
nats, missing cells left out as the VAE leaves them out, so its test NLL and
anomaly scores compare with `tfvae.table_evaluation.evaluate_table`'s.

Example:

    baseline = IndependentColumns(schema, train)
    baseline.row_nll(test).mean()  # nats per row
"""

import numpy as np
import pandas as pd
import tensorflow_probability as tfp

from tfvae import tables

tfd = tfp.distributions


def _fit(column: dict, values: np.ndarray) -> tfd.Distribution:
    """Returns one column's distribution fitted to its present training values.

    Categorical values are codes; everything is float64.
    """
    kind = column["type"]
    if kind == "categorical":
        counts = np.bincount(values.astype(int), minlength=len(column["categories"]))
        return tfd.Categorical(probs=counts / counts.sum())
    if kind == "binary":
        return tfd.Bernoulli(probs=values.mean(), dtype=np.float64)
    if kind == "positive":
        logs = np.log(values)
        return tfd.LogNormal(logs.mean(), logs.std())
    mean, variance = values.mean(), values.var()
    if kind == "real":
        return tfd.Normal(mean, np.sqrt(variance))
    if variance <= mean:
        return tfd.Poisson(rate=mean)
    # Mean r p / (1 - p) and variance r p / (1 - p)^2, solved for r and p.
    return tfd.NegativeBinomial(
        total_count=mean**2 / (variance - mean), probs=1.0 - mean / variance
    )


def _codes(column: dict, cells: np.ndarray) -> np.ndarray:
    """Returns one column's cells as float64, categories as codes, NaN if missing."""
    if column["type"] != "categorical":
        return cells.astype(np.float64)
    index = {category: code for code, category in enumerate(column["categories"])}
    unknown = sorted({c for c in cells if c and c not in index})
    if unknown:
        raise ValueError(
            f"Column {column['name']!r} holds categories the training split does "
            f"not: {unknown[:5]}. Received: them in the rows to score"
        )
    return np.array([index.get(c, np.nan) for c in cells], np.float64)


class IndependentColumns:
    """The table's columns as independent distributions, fitted on its training split.

    Args:
        schema: the table's schema (`tables.infer_schema`); it gives the types
            and the categories.
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
        cells = tables.table_columns(train, schema)
        self.distributions = []
        for column in self.columns:
            values = _codes(column, cells[column["name"]])
            self.distributions.append(_fit(column, values[~np.isnan(values)]))

    def column_nll(self, frame: pd.DataFrame) -> np.ndarray:
        """Returns each cell's -log p, 0 where missing, `[rows, columns]` nats.

        Args:
            frame: rows of the schema's columns.

        Returns:
            float64 `[rows, columns]`, in the schema's column order.
        """
        cells = tables.table_columns(frame, {"columns": self.columns})
        scores = []
        for column, distribution in zip(self.columns, self.distributions, strict=True):
            values = _codes(column, cells[column["name"]])
            present = ~np.isnan(values)
            # Any value in the support stands in for a missing cell.
            safe = np.where(present, values, 1.0 if column["type"] == "positive" else 0)
            if column["type"] == "categorical":
                safe = safe.astype(np.int32)
            scores.append(np.where(present, -distribution.log_prob(safe).numpy(), 0.0))
        return np.stack(scores, axis=-1)

    def row_nll(self, frame: pd.DataFrame) -> np.ndarray:
        """Returns each row's -log p(row) under independent columns, `[rows]` nats."""
        return self.column_nll(frame).sum(axis=-1)
