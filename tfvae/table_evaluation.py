"""A table VAE's test figures: likelihoods, imputation, anomaly detection, baseline.

`evaluate_table(vae, rows)` scores a table VAE on a DataFrame or a dataset
of batches, in nats per row: the negative ELBO, the IWAE bound on -log p(x)
(with `iwae.evaluate_batches`' seeds: the bound images get) and each
column's log-likelihood. Given the training split, it adds imputation
quality (`imputation_figures`: hidden test cells filled in by
`table_model.impute`, against the training split's column mean or mode) and
the independent-columns baseline's NLL (`tfvae.table_baseline`); given each
row's label and the anomalous one, the ROC AUC and average precision of each
row's -log p(x) for picking out the anomalous rows (`tfvae.ranking`).

Example:

    figures = evaluate_table(vae, test, labels, train=train, anomaly_label=9)
    figures["nll"], figures["impute/improvement"], figures["anomaly/roc_auc"]
"""

import collections
import math
import weakref

import numpy as np
import pandas as pd
import tensorflow as tf

from tfvae import batches, iwae, noise, ranking, table_baseline, table_model, tables
from tfvae.model import VAE

# The share of the present test cells `imputation_figures` hides by default.
HIDE_FRACTION = 0.1


def _batches(vae: VAE, rows, labels, batch_size: int) -> tf.data.Dataset:
    """Returns `rows` as batches, paired with the labels for a conditional VAE."""
    if isinstance(rows, tf.data.Dataset):
        return rows
    dataset = tables.table_batches(rows, vae.likelihood.schema, batch_size)
    if not vae.conditional:
        return dataset
    if labels is None or not np.issubdtype(np.asarray(labels).dtype, np.integer):
        given = None if labels is None else np.asarray(labels)[:5].tolist()
        raise ValueError(
            "A conditional VAE needs each row's class as an int code: pass "
            f"labels=[rows] ints. Received: labels starting {given}"
        )
    classes = tf.data.Dataset.from_tensor_slices(np.asarray(labels, np.int32))
    return tf.data.Dataset.zip((dataset, classes.batch(batch_size)))


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


def score_rows(
    vae: VAE,
    dataset: tf.data.Dataset,
    num_samples: int,
    samples_per_chunk: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Returns each row's figures, in nats, in the batches' order.

    Batch i uses the seeds of `iwae.evaluate_batches` (as
    `adapters.VAEAdapter` draws them), so the means are the bound it reports.

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
    ks = iwae.sweep(num_samples)
    sizes = iwae.chunk_sizes(num_samples, samples_per_chunk)
    one_z, log_weights = _compiled(vae, dataset.element_spec)
    found = {}
    for index, batch in enumerate(dataset):
        batch_seed = tf.constant([seed, index], tf.int64)
        reconstruction, kl, columns, present = one_z(batch, batch_seed)
        chunks = (
            log_weights(batch, batch_seed, tf.constant(chunk), tf.constant(size))
            for chunk, size in enumerate(sizes)
        )
        bounds = iwae.logmeanexp_prefixes(chunks, ks)
        figures = {
            "reconstruction": reconstruction,
            "kl": kl,
            "columns": columns,
            "present": present,
            **{f"nll_k{k}": -bound for k, bound in bounds.items()},
        }
        for name, value in figures.items():
            found.setdefault(name, []).append(value.numpy())
    if not found:
        raise ValueError("The rows to evaluate are empty.")
    return {name: np.concatenate(parts) for name, parts in found.items()}


def _hide(truth: np.ndarray, hide_fraction: float, seed: int) -> tuple[np.ndarray, int]:
    """Returns (the cells to hide, bool `[rows, columns]`, how many).

    `hide_fraction` of the present cells, drawn without replacement by NumPy's
    generator seeded with `seed`.
    """
    if not 0 < hide_fraction < 1:
        raise ValueError(
            f"hide_fraction must be between 0 and 1. Received: {hide_fraction=}"
        )
    present = np.flatnonzero(~np.isnan(truth))
    count = round(hide_fraction * len(present))
    if count < 1:
        raise ValueError(
            f"hide_fraction={hide_fraction} of {len(present)} present cells hides "
            "none: give more rows or a larger fraction"
        )
    hidden = np.zeros(truth.size, bool)
    hidden[np.random.default_rng(seed).choice(present, count, replace=False)] = True
    return hidden.reshape(truth.shape), count


def imputation_figures(
    vae: VAE,
    train: pd.DataFrame,
    test: pd.DataFrame,
    labels=None,
    *,
    hide_fraction: float = HIDE_FRACTION,
    seed: int = 0,
    batch_size: int = 100,
) -> dict[str, float]:
    """Returns how well `table_model.impute` fills in hidden test cells.

    `hide_fraction` of the present test cells are hidden (`seed` draws which)
    and filled in by the VAE from the rest of their row. The baselines fill
    each hidden cell with the training split's column mean (real, positive,
    count: in the data's units) or its most frequent value (binary,
    categorical).

    Args:
        vae: a table VAE.
        train: the training split (for the baselines).
        test: the rows to hide cells of, a DataFrame of the schema's columns.
        labels: int `[rows]` classes, for a conditional VAE.
        hide_fraction: the share of the present cells hidden.
        seed: seeds which cells are hidden.
        batch_size: rows per `impute` call.

    Returns:
        "impute/hidden_cells"; for each number column (real, positive,
        count) with hidden cells "impute/rmse/<column>" and
        "impute/mean_rmse/<column>" (the VAE's and the mean's RMSE, in the
        column's units); over the columns of each number type <type>
        "impute/nrmse/<type>" and "impute/mean_nrmse/<type>" (the RMSE of
        the errors divided by each column's training standard deviation,
        pooled: a few hidden cells per column make per-column ratios noisy)
        and "impute/improvement/<type>" (1 - their ratio); types apart, as
        a near-constant count column's few hidden cells would outweigh the
        rest. For each binary or categorical column
        "impute/accuracy/<column>" and "impute/mode_accuracy/<column>" (a
        binary cell is filled with 1 where p >= 0.5), and their means over
        those columns, "impute/accuracy" and "impute/mode_accuracy".

    Example:
        >>> imputation_figures(vae, train, test)["impute/improvement"]  # doctest: +SKIP
    """
    schema, head = vae.likelihood.schema, vae.likelihood
    cells = tables.table_columns(test, schema)
    truth = head.observe(cells, None).numpy()
    hidden, count = _hide(truth, hide_fraction, seed)
    for index, column in enumerate(schema["columns"]):
        gap = "" if column["type"] == "categorical" else np.nan
        cells[column["name"]] = np.where(hidden[:, index], gap, cells[column["name"]])
    dataset = _batches(vae, pd.DataFrame(cells), labels, batch_size)
    filled = np.concatenate(
        [table_model.impute(vae, *batches.unpack_batch(vae, b)) for b in dataset]
    )
    baseline = head.observe(tables.table_columns(train, schema), None).numpy()
    figures = {"impute/hidden_cells": float(count)}
    # Errors over each column's training std, pooled by type: scales weigh alike.
    errors, mean_errors = collections.defaultdict(list), collections.defaultdict(list)
    accuracies, mode_accuracies = [], []
    for index, column in enumerate(schema["columns"]):
        rows, name = hidden[:, index], column["name"]
        if not rows.any():
            continue
        true, guess = truth[rows, index], filled[rows, index]
        known = baseline[:, index][~np.isnan(baseline[:, index])]
        if column["type"] in ("binary", "categorical"):
            values, counts = np.unique(known, return_counts=True)
            if column["type"] == "binary":
                guess = (guess >= 0.5).astype(guess.dtype)
            accuracy = float(np.mean(guess == true))
            mode_accuracy = float(np.mean(values[np.argmax(counts)] == true))
            figures[f"impute/accuracy/{name}"] = accuracy
            figures[f"impute/mode_accuracy/{name}"] = mode_accuracy
            accuracies.append(accuracy)
            mode_accuracies.append(mode_accuracy)
            continue
        error, mean_error = guess - true, known.mean() - true
        figures[f"impute/rmse/{name}"] = float(np.sqrt(np.mean(error**2)))
        figures[f"impute/mean_rmse/{name}"] = float(np.sqrt(np.mean(mean_error**2)))
        errors[column["type"]].append(error / known.std())
        mean_errors[column["type"]].append(mean_error / known.std())
    for kind in errors:
        nrmse = float(np.sqrt(np.mean(np.concatenate(errors[kind]) ** 2)))
        mean_nrmse = float(np.sqrt(np.mean(np.concatenate(mean_errors[kind]) ** 2)))
        figures[f"impute/nrmse/{kind}"] = nrmse
        figures[f"impute/mean_nrmse/{kind}"] = mean_nrmse
        figures[f"impute/improvement/{kind}"] = 1.0 - nrmse / mean_nrmse
    if accuracies:
        figures["impute/accuracy"] = float(np.mean(accuracies))
        figures["impute/mode_accuracy"] = float(np.mean(mode_accuracies))
    return figures


def evaluate_table(
    vae: VAE,
    rows,
    labels=None,
    *,
    train: pd.DataFrame | None = None,
    anomaly_label=None,
    hide_fraction: float = HIDE_FRACTION,
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
        train: the training split, a DataFrame: adds `imputation_figures`
            (rows must be a DataFrame then) and the independent-columns
            baseline's "independent/nll" (`table_baseline`).
        anomaly_label: the label value of the anomalous rows (needs labels):
            adds "anomaly/roc_auc" and "anomaly/average_precision" of each
            row's IWAE bound on -log p(x) (the model's density estimate; the
            -ELBO adds each row's posterior gap and one sample's noise, its
            AUC is "anomaly/roc_auc_neg_elbo"), and with `train` the
            baseline's "independent/anomaly_roc_auc" and
            "independent/anomaly_average_precision".
        hide_fraction: `imputation_figures`' share of hidden cells.
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
    if labels is not None:
        labels = np.asarray(labels)
        if framed and labels.shape != (len(rows),):
            raise ValueError(
                f"labels must hold one value per row, [{len(rows)}]. Received: "
                f"labels of shape {labels.shape}"
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
    scores = score_rows(
        vae,
        _batches(vae, rows, model_labels, batch_size),
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
        if len(labels) != len(scores["kl"]):
            raise ValueError(
                f"labels must hold one value per row, [{len(scores['kl'])}]. "
                f"Received: labels of shape {labels.shape}"
            )
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
            imputation_figures(
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
