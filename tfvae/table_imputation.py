"""Imputation quality: hide some test cells, fill them in, compare with the truth.

`imputation_figures(vae, train, test)` hides `HIDE_FRACTION` of the present
test cells (drawn with NumPy's generator of the seed), fills them in with
`table_model.impute` (a number column's mean under p(x|z), a binary or
categorical column's most likely value, at the posterior mean given the rest
of the row) and scores them against the training split's column mean or
mode. `tfvae.table_evaluation.evaluate_table` adds these figures when given
the training split.

Example:

    figures = imputation_figures(vae, train, test)
    figures["impute/improvement/real"], figures["impute/accuracy"]
"""

import collections

import numpy as np
import pandas as pd

from tfvae import batches, table_model, tables
from tfvae.model import VAE

# The share of the present test cells `imputation_figures` hides by default.
HIDE_FRACTION = 0.1


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
        "impute/accuracy/<column>" and "impute/mode_accuracy/<column>", and
        their means over those columns, "impute/accuracy" and
        "impute/mode_accuracy".

    Raises:
        ValueError: hide_fraction outside (0, 1) or hiding no cell; labels
            that are not one int per row, for a conditional VAE.

    Example:
        >>> figures = imputation_figures(vae, train, test)  # doctest: +SKIP
        >>> figures["impute/improvement/real"]  # doctest: +SKIP
    """
    schema, head = vae.likelihood.schema, vae.likelihood
    cells = tables.table_columns(test, schema)
    truth = head.observe(cells, None).numpy()
    hidden, count = _hide(truth, hide_fraction, seed)
    for index, column in enumerate(schema["columns"]):
        gap = "" if column["type"] == "categorical" else np.nan
        cells[column["name"]] = np.where(hidden[:, index], gap, cells[column["name"]])
    dataset = table_model.frame_batches(vae, pd.DataFrame(cells), labels, batch_size)
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
