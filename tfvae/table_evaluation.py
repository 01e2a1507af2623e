"""A table VAE's test figures: the IWAE bound and each column's log-likelihood.

`evaluate_table(vae, rows)` scores a table VAE (`tfvae.table_model`) on a
DataFrame or a dataset of batches, in nats per row: the negative ELBO, the
IWAE bound on -log p(x) (`tfvae.iwae`, the same bound `tfvae.evaluate_model`
reports for images) and each column's log-likelihood.

Example:

    figures = evaluate_table(vae, test, num_samples=1000)
    figures["nll"], figures["log_lik/alcohol"]
"""

import collections
import math

import numpy as np
import tensorflow as tf

from tfvae import batches, iwae, noise, tables
from tfvae.model import VAE


def evaluate_table(
    vae: VAE,
    rows,
    num_samples: int = 1000,
    batch_size: int = 100,
    samples_per_chunk: int = iwae.SAMPLES_PER_CHUNK,
    seed: int = 0,
) -> dict[str, float]:
    """Returns a table VAE's test figures, in nats per row.

    Args:
        vae: a table VAE (`build_table_vae`).
        rows: a pandas DataFrame of the table's columns, or a
            `tf.data.Dataset` of batches {column: `[batch]` cells}.
        num_samples: k of the IWAE bound.
        batch_size: rows per batch when `rows` is a DataFrame.
        samples_per_chunk: importance samples per call (memory grows with it).
        seed: batch i uses the stateless seed (seed, i), as
            `iwae.evaluate_batches` does, so the figures are reproducible.

    Returns:
        "nll" (-L_k at k = `num_samples`) and "nll_k<k>" for the k of
        `iwae.sweep`; "neg_elbo", "reconstruction", "kl" (one z per row); and
        "log_lik/<column>": each column's E_q log p(cell|z) over its present
        cells, at one z per row.

    Example:
        >>> evaluate_table(vae, test, num_samples=100)["nll"]  # doctest: +SKIP
    """
    if not vae.likelihood.tabular:
        raise ValueError(
            "evaluate_table takes a table VAE; evaluate an image VAE with "
            f"tfvae.evaluate_model. Received: a {type(vae.likelihood).__name__}"
        )
    if not isinstance(rows, tf.data.Dataset):
        rows = tables.table_batches(rows, vae.likelihood.schema, batch_size)
    names = vae.likelihood.names
    ks = iwae.sweep(num_samples)
    sizes = iwae.chunk_sizes(num_samples, samples_per_chunk)

    @tf.function(reduce_retracing=True)
    def terms(cells, batch_seed):
        # The z of the -ELBO's terms, scoring each cell under p(x|z).
        figures, chain = vae.objective_terms(cells, batch_seed)
        x = vae.likelihood.observe(cells, batch_seed)
        columns = vae.decode(chain.zs[0]).column_log_probs(x)
        present = tf.logical_not(tf.math.is_nan(x))
        return figures, columns, tf.reduce_sum(tf.cast(present, tf.float32), axis=0)

    @tf.function(reduce_retracing=True)
    def chunk(cells, batch_seed, index, size):
        observe_seed, _ = noise.split_seed(batch_seed)
        x, q = vae.observe_and_encode(cells, observe_seed)
        return vae.log_weights(x, q, size, noise.chunk_seed(batch_seed, index))

    sums = collections.defaultdict(float)
    # Each column's summed log-likelihood, and its present cells.
    column_sums, cells_present = np.zeros(len(names)), np.zeros(len(names))
    count = 0
    for index, batch in enumerate(rows):
        cells, _ = batches.unpack_batch(vae, batch)
        batch_seed = tf.constant([seed, index], tf.int64)
        figures, columns, present = terms(cells, batch_seed)
        for name in ("reconstruction", "kl"):
            sums[name] += float(tf.reduce_sum(figures[name]))
        column_sums += tf.reduce_sum(columns, axis=0).numpy()
        cells_present += present.numpy()
        bounds = iwae.logmeanexp_prefixes(
            (
                chunk(cells, batch_seed, tf.constant(j), tf.constant(size))
                for j, size in enumerate(sizes)
            ),
            ks,
        )
        for k, bound in bounds.items():
            sums[f"nll_k{k}"] -= float(tf.reduce_sum(bound))
        count += int(columns.shape[0])
    if not count:
        raise ValueError("The rows to evaluate are empty.")
    means = {name: total / count for name, total in sums.items()}
    for name, total, present in zip(names, column_sums, cells_present, strict=True):
        # NaN for a column with no present cell: nothing to score.
        means[f"log_lik/{name}"] = float(total / present) if present else math.nan
    means["neg_elbo"] = means["reconstruction"] + means["kl"]
    means["nll"] = means[f"nll_k{num_samples}"]
    return means
