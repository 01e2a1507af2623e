"""A table VAE's test figures: likelihoods, imputation, anomaly detection, baseline.

`evaluate_table(vae, rows)` scores a table VAE on a DataFrame or a dataset
of batches, in nats per row: the negative ELBO, the IWAE bound on -log p(x)
(with `iwae.evaluate_batches`' seeds: the bound images get) and each
column's log-likelihood. Given the training split, it adds imputation
quality (`tfvae.table_imputation`: hidden test cells filled in by
`table_model.impute`, against the training split's column mean or mode) and
the independent-columns baseline's NLL (`tfvae.table_baseline`); given each
row's label and the anomalous one, the ROC AUC and average precision of each
row's -log p(x) for picking out the anomalous rows (`tfvae.ranking`).

Example:

    figures = evaluate_table(vae, test, labels, train=train, anomaly_label=9)
    figures["nll"], figures["impute/improvement/real"], figures["anomaly/roc_auc"]
"""

import collections
import math
import weakref

import numpy as np
import pandas as pd
import tensorflow as tf

from tfvae import (
    batches,
    iwae,
    noise,
    ranking,
    table_baseline,
    table_imputation,
    table_model,
    tables,
)
from tfvae.model import VAE


def _count_rows(dataset: tf.data.Dataset) -> int:
    """Returns the rows of a dataset of batches (or of (batch, labels) pairs)."""
    sizes = dataset.map(lambda *batch: tf.shape(tf.nest.flatten(batch)[0])[0])
    return int(sizes.reduce(0, lambda total, n: total + n))


# Each VAE's compiled scoring functions, by the batches' structure: a table's
# graph (a distribution per column) takes seconds to trace, far longer than
# a batch runs, so each is traced once, for batches of any size.
_COMPILED = weakref.WeakKeyDictionary()


def _compiled(vae: VAE, batch_spec) -> tuple:
    """Returns (one_z, log_weights): `score_rows`' per-batch functions for `vae`."""
    key = repr(batch_spec)
    found = _COMPILED.setdefault(vae, {})
    if key in found:
        return found[key]
    seed_spec = tf.TensorSpec([2], tf.int64)
    scalar = tf.TensorSpec([], tf.int32)
    # Held weakly: the cache must not keep the VAE alive.
    model = weakref.ref(vae)

    @tf.function(input_signature=[batch_spec, seed_spec])
    def one_z(batch, batch_seed):
        # The -ELBO's terms, and each cell's share of its reconstruction term
        # (the decoder at the same z, scoring the same observations).
        vae = model()
        cells, labels = batches.unpack_batch(vae, batch)
        figures, chain = vae.objective_terms(cells, batch_seed, labels)
        x = vae.likelihood.observe(cells, None)  # A table's rows are as they are.
        columns = vae.decode(chain.zs[0], labels).column_log_probs(x)
        present = tf.logical_not(tf.math.is_nan(x))
        return figures["reconstruction"], figures["kl"], columns, present

    @tf.function(input_signature=[batch_spec, seed_spec, scalar, scalar])
    def log_weights(batch, batch_seed, chunk, size):
        # `iwae.evaluate_batches`' seeds, as `adapters.VAEAdapter` draws them.
        vae = model()
        cells, labels = batches.unpack_batch(vae, batch)
        observe_seed, _ = noise.split_seed(batch_seed)
        x, q = vae.observe_and_encode(cells, observe_seed, labels)
        z_seed = noise.chunk_seed(batch_seed, chunk)
        return vae.log_weights(x, q, size, z_seed, labels)

    found[key] = one_z, log_weights
    return found[key]


class _Chunks:
    """The `log_weights` of `iwae.batch_bounds`' evaluable, from a compiled one."""

    def __init__(self, log_weights):
        self._log_weights = log_weights

    def log_weights(self, cells, num_samples, seed, chunk, labels):
        batch = cells if labels is None else (cells, labels)
        return self._log_weights(
            batch, seed, tf.constant(chunk), tf.constant(num_samples)
        )


def score_rows(
    vae: VAE,
    dataset: tf.data.Dataset,
    num_samples: int,
    samples_per_chunk: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Returns each row's figures, in nats, in the batches' order.

    The bound's loop is `iwae.batch_bounds`', with the seeds of
    `iwae.evaluate_batches` (as `adapters.VAEAdapter` draws them), so the
    means are the bound it reports.

    Args:
        vae: a table VAE.
        dataset: batches {column: `[batch]` cells}, or (cells, labels) pairs.
        num_samples, samples_per_chunk, seed: as `evaluate_table`'s.

    Returns:
        "reconstruction", "kl", "nll_k<k>" for the k of `iwae.sweep`: `[rows]`
        each; "columns": each cell's log p(cell|z) at the -ELBO's z, 0 where
        missing, and "present": whether it is there, `[rows, columns]` each.

    Example:
        >>> score_rows(vae, dataset, 100, 100, 0)["nll_k100"]  # doctest: +SKIP
    """
    one_z, log_weights = _compiled(vae, dataset.element_spec)
    found = collections.defaultdict(list)
    for batch, labels, batch_seed, bounds in iwae.batch_bounds(
        _Chunks(log_weights), dataset, num_samples, samples_per_chunk, seed
    ):
        # The batch as the dataset gave it: the compiled functions' input.
        batch = batch if labels is None else (batch, labels)
        reconstruction, kl, columns, present = one_z(batch, batch_seed)
        figures = {
            "reconstruction": reconstruction,
            "kl": kl,
            "columns": columns,
            "present": present,
            **{f"nll_k{k}": -bound for k, bound in bounds.items()},
        }
        for name, value in figures.items():
            found[name].append(value.numpy())
    return {name: np.concatenate(parts) for name, parts in found.items()}


def evaluate_table(
    vae: VAE,
    rows,
    labels=None,
    *,
    train: pd.DataFrame | None = None,
    anomaly_label=None,
    hide_fraction: float = table_imputation.HIDE_FRACTION,
    num_samples: int = 1000,
    batch_size: int = 100,
    samples_per_chunk: int = iwae.SAMPLES_PER_CHUNK,
    seed: int = 0,
) -> dict[str, float]:
    """Returns a table VAE's test figures, in nats per row.

    Args:
        vae: a table VAE (`build_table_vae`).
        rows: a pandas DataFrame of the table's columns, or a
            `tf.data.Dataset` of batches {column: `[batch]` cells} (of
            `(cells, labels)` pairs for a conditional VAE).
        labels: `[rows]` each row's label, in the rows' order: int class codes
            for a conditional VAE (given to it with a DataFrame), and what
            `anomaly_label` picks rows by.
        train: the training split, a DataFrame: adds
            `table_imputation.imputation_figures` (rows must be a DataFrame
            then) and the independent-columns baseline's "independent/nll"
            (`table_baseline`).
        anomaly_label: the label value of the anomalous rows (needs labels):
            adds "anomaly/roc_auc" and "anomaly/average_precision" of each
            row's IWAE bound on -log p(x) (the model's density estimate; the
            -ELBO adds each row's posterior gap and one sample's noise, its
            AUC is "anomaly/roc_auc_neg_elbo"), and with `train` the
            baseline's "independent/anomaly_roc_auc" and
            "independent/anomaly_average_precision".
        hide_fraction: `table_imputation.imputation_figures`' share of hidden
            cells.
        num_samples: k of the IWAE bound.
        batch_size: rows per batch when `rows` is a DataFrame.
        samples_per_chunk: importance samples per call (memory grows with it).
        seed: batch i uses the stateless seed (seed, i), as
            `iwae.evaluate_batches` does, so the figures are reproducible; it
            also seeds which cells are hidden.

    Returns:
        "nll" (-L_k at k = `num_samples`) and "nll_k<k>" for the k of
        `iwae.sweep`; "neg_elbo", "reconstruction", "kl" (one z per row); and
        "log_lik/<column>": each column's E_q log p(cell|z) over its present
        cells, at one z per row; plus the figures `train` and
        `anomaly_label` add.

    Raises:
        ValueError: an image VAE, labels that do not fit the rows, an
            anomaly label no row has, or `train` with a dataset.

    Example:
        >>> evaluate_table(vae, test, num_samples=100)["nll"]  # doctest: +SKIP
    """
    if not vae.likelihood.tabular:
        raise ValueError(
            "evaluate_table takes a table VAE; evaluate an image VAE with "
            f"tfvae.evaluate_model. Received: a {type(vae.likelihood).__name__}"
        )
    framed = isinstance(rows, pd.DataFrame)
    if train is not None and not framed:
        raise ValueError(
            "With train, the rows to evaluate must be a DataFrame (cells are "
            f"hidden from it). Received: rows of type {type(rows).__name__}"
        )
    if labels is not None and (framed or anomaly_label is not None):
        # Before any scoring: a dataset's rows are counted first.
        labels = tables.checked_labels(
            labels, len(rows) if framed else _count_rows(rows)
        )
    if anomaly_label is not None:
        if labels is None:
            raise ValueError(
                f"anomaly_label={anomaly_label!r} needs each row's label: pass labels"
            )
        anomalous = labels == anomaly_label
        if not anomalous.any() or anomalous.all():
            raise ValueError(
                f"anomaly_label={anomaly_label!r} must pick some rows but not all. "
                f"Received: labels holding {np.unique(labels)[:20].tolist()}"
            )
    model_labels = labels if vae.conditional else None
    dataset = (
        table_model.frame_batches(vae, rows, model_labels, batch_size)
        if framed
        else rows
    )
    scores = score_rows(
        vae,
        dataset,
        num_samples,
        samples_per_chunk,
        seed,
    )
    figures = {
        name: float(np.mean(value))
        for name, value in scores.items()
        if name not in ("columns", "present")
    }
    present = scores["present"].sum(axis=0)
    totals = scores["columns"].sum(axis=0)
    for name, total, count in zip(vae.likelihood.names, totals, present, strict=True):
        # NaN for a column with no present cell: nothing to score.
        figures[f"log_lik/{name}"] = float(total / count) if count else math.nan
    figures["neg_elbo"] = figures["reconstruction"] + figures["kl"]
    figures["nll"] = figures[f"nll_k{num_samples}"]
    if anomaly_label is not None:
        nll = scores[f"nll_k{num_samples}"]
        figures["anomaly/rows"] = float(anomalous.sum())
        figures["anomaly/roc_auc"] = ranking.roc_auc(nll, anomalous)
        figures["anomaly/average_precision"] = ranking.average_precision(nll, anomalous)
        neg_elbo = scores["reconstruction"] + scores["kl"]
        figures["anomaly/roc_auc_neg_elbo"] = ranking.roc_auc(neg_elbo, anomalous)
    if train is not None:
        baseline = table_baseline.IndependentColumns(vae.likelihood.schema, train)
        independent = baseline.row_nll(rows)
        figures["independent/nll"] = float(independent.mean())
        if anomaly_label is not None:
            figures["independent/anomaly_roc_auc"] = ranking.roc_auc(
                independent, anomalous
            )
            figures["independent/anomaly_average_precision"] = (
                ranking.average_precision(independent, anomalous)
            )
        figures.update(
            table_imputation.imputation_figures(
                vae,
                train,
                rows,
                model_labels,
                hide_fraction=hide_fraction,
                seed=seed,
                batch_size=batch_size,
            )
        )
    return figures
