r"""The importance-weighted bound on log p(x) (Burda et al. 2015), in chunks.

The ELBO is only a lower bound on log p(x). VAE papers compare models by

    L_k = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)],  z_1..z_k ~ q(z|x),

which rises towards log p(x) as k grows; -L_k at k=5000 on the test set is
the "test negative log-likelihood" (NLL) they report. Here, for every batch,
the observation x is fixed (one observe seed) and the k samples of z come in
chunks, each drawn with its own seed (`noise.chunk_seed`); a running
logsumexp over the chunks keeps memory flat in k, and the first k' samples
give -L_k' for every k' of the sweep 1, 10, 100, 1000, 5000 at no extra cost.

`evaluate_batches` runs on anything that follows `EvaluableModel`: a Keras
VAE or an exported SavedModel (`tfvae.adapters`).
"""

import collections
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

import keras
import tensorflow as tf

from tfvae import chain

# The k at which the IWAE bound is reported (those up to the requested k).
IWAE_SWEEP = (1, 10, 100, 1000, 5000)
# Importance samples per call, by default: memory grows with it times the
# batch (`evaluation.evaluate`, `python -m tfvae.evaluate`, training's pass).
SAMPLES_PER_CHUNK = 200


def sweep(num_samples: int) -> tuple[int, ...]:
    """Returns the k to report: those of `IWAE_SWEEP` below `num_samples`, and it."""
    if num_samples < 1:
        raise ValueError(
            f"num_samples must be at least 1. Received: num_samples={num_samples}"
        )
    return tuple(k for k in IWAE_SWEEP if k < num_samples) + (num_samples,)


def chunk_sizes(num_samples: int, samples_per_chunk: int) -> list[int]:
    """Returns the sample count of each chunk: `samples_per_chunk`, the last fewer."""
    if samples_per_chunk < 1:
        raise ValueError(
            "samples_per_chunk must be at least 1. Received: "
            f"samples_per_chunk={samples_per_chunk}"
        )
    full, rest = divmod(num_samples, samples_per_chunk)
    return [samples_per_chunk] * full + ([rest] if rest else [])


def _logaddexp(a: tf.Tensor | None, b: tf.Tensor) -> tf.Tensor:
    return b if a is None else tf.reduce_logsumexp(tf.stack([a, b]), axis=0)


def logmeanexp_prefixes(
    log_weight_chunks: Iterable[tf.Tensor], ks: Sequence[int]
) -> dict[int, tf.Tensor]:
    """Returns {k: log of the mean of exp of the first k log-weights}, each `[batch]`.

    `log_weight_chunks` yields log-weights `[chunk, batch]` in sample order
    (chunks may differ in size) and must hold at least max(ks) samples; it is
    consumed only as far as max(ks). Only a running logsumexp `[batch]` is
    kept, in float64, so any number of samples fits in memory. With
    importance log-weights this is the IWAE bound L_k for every k in `ks`.
    """
    remaining = sorted(set(ks))
    if not remaining or remaining[0] < 1:
        raise ValueError(f"ks must be positive sample counts. Received: ks={ks}")
    results = {}
    total = None  # logsumexp of the `seen` log-weights before this chunk.
    seen = 0
    for chunk in log_weight_chunks:
        chunk = tf.cast(chunk, tf.float64)
        size = chunk.shape[0]
        while remaining and remaining[0] <= seen + size:
            k = remaining.pop(0)
            prefix = tf.reduce_logsumexp(chunk[: k - seen], axis=0)
            results[k] = _logaddexp(total, prefix) - math.log(k)
        if not remaining:
            return results
        total = _logaddexp(total, tf.reduce_logsumexp(chunk, axis=0))
        seen += size
    raise ValueError(
        f"Got {seen} log-weights, fewer than k={remaining[0]}: the chunks must "
        f"hold at least max(ks)={max(ks)} samples."
    )


class EvaluableModel(Protocol):
    """What evaluation needs of a model; images are raw `uint8 [batch, H, W, C]`.

    `labels` are the images' int classes `[batch]` for a conditional VAE,
    else None.
    """

    # The raw images' (H, W, C).
    image_shape: tuple[int, int, int]
    latent_dim: int
    # The number of classes of a conditional VAE, else None.
    num_classes: int | None
    # True when p(x|z) is a probability mass over the 256 pixel values.
    discrete: bool

    def neg_elbo_terms(
        self, images: tf.Tensor, seed: tf.Tensor, labels: tf.Tensor | None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns (reconstruction, kl), each `[batch]` nats; seed is int64 `[2]`."""

    def log_weights(
        self,
        images: tf.Tensor,
        num_samples: int,
        seed: tf.Tensor,
        chunk: int,
        labels: tf.Tensor | None,
    ) -> tf.Tensor:
        """Returns chunk `chunk`'s importance log-weights, `[num_samples, batch]`.

        With one batch `seed`, every chunk scores the same observations and
        draws its own z.
        """

    def encode_mean(self, images: tf.Tensor, labels: tf.Tensor | None) -> tf.Tensor:
        """Returns the posterior means E_q[z1|x], `[batch, latent_dim]`."""

    def decode_mean(self, z: tf.Tensor, labels: tf.Tensor | None) -> tf.Tensor:
        """Returns E[x|z] as float pixels in [0, 1], `[batch, H, W, C]`."""

    def reconstruction_grid(
        self, images: tf.Tensor, labels: tf.Tensor | None
    ) -> tf.Tensor:
        """Returns a `uint8` grid: rows of inputs over their reconstructions."""

    def prior_samples(self, count: int, seed: int) -> tf.Tensor:
        """Returns E[x|z1] for `count` draws from the model, `[count, H, W, C]`.

        A conditional VAE draws them for the classes 0, 1, 2, ... cycling.
        """


def batch_bounds(
    evaluable: EvaluableModel,
    batches: tf.data.Dataset,
    num_samples: int,
    samples_per_chunk: int,
    seed: int,
) -> Iterator[tuple]:
    """Yields each batch's IWAE bounds per example, in the batches' order.

    Batch i uses the stateless seed (seed, i); chunk j of its samples is
    `evaluable.log_weights(..., seed, j, ...)`. The one loop of the bound:
    `evaluate_batches` sums it, `tfvae.table_evaluation.score_rows` keeps
    every row's.

    Args:
        evaluable: an `EvaluableModel` (only `log_weights` is called).
        batches: batches, or `(batch, labels)` pairs for a conditional VAE.
        num_samples: k, the importance samples per example.
        samples_per_chunk: samples per `log_weights` call.
        seed: the evaluation's seed.

    Yields:
        (batch, labels or None, batch seed int64 `[2]`, {k: L_k `[batch]`}
        for each k of `sweep(num_samples)`).

    Raises:
        ValueError: an empty dataset (after the loop), or bad sample counts.

    Example:
        >>> for batch, labels, batch_seed, bounds in batch_bounds(
        ...         adapter, dataset, 100, 50, 0):  # doctest: +SKIP
        ...     print(bounds[100])
    """
    ks = sweep(num_samples)
    sizes = chunk_sizes(num_samples, samples_per_chunk)
    empty = True
    for index, batch in enumerate(batches):
        batch, labels = batch if isinstance(batch, tuple) else (batch, None)
        batch_seed = tf.constant([seed, index], tf.int64)
        chunks = (
            evaluable.log_weights(batch, size, batch_seed, chunk, labels)
            for chunk, size in enumerate(sizes)
        )
        empty = False
        yield batch, labels, batch_seed, logmeanexp_prefixes(chunks, ks)
    if empty:
        raise ValueError("The dataset to evaluate is empty.")


def evaluate_batches(
    evaluable: EvaluableModel,
    batches: tf.data.Dataset,
    num_samples: int,
    samples_per_chunk: int,
    seed: int,
    progbar: keras.utils.Progbar | None = None,
) -> dict[str, float]:
    """Returns per-example means, in nats, over all images of `batches`.

    Keys: neg_elbo, reconstruction, kl, nll (the IWAE bound -L_k at k =
    `num_samples`) and nll_k<k> for every k of `sweep(num_samples)`.
    `batches` yields `uint8 [batch, H, W, C]` (or `(images, labels)` for a
    conditional VAE, whose bound is on log p(x|y)); batch i uses the stateless
    seed (seed, i) and chunk j of its samples a seed folded from it, so the
    numbers are reproducible for a given seed, batch size and chunk size.
    """
    sums = collections.defaultdict(float)
    count = 0
    bounds = batch_bounds(evaluable, batches, num_samples, samples_per_chunk, seed)
    for index, (batch, labels, batch_seed, bound) in enumerate(bounds):
        reconstruction, kl = evaluable.neg_elbo_terms(batch, batch_seed, labels)
        sums["reconstruction"] += float(tf.reduce_sum(reconstruction))
        sums["kl"] += float(tf.reduce_sum(kl))
        for k, value in bound.items():
            sums[f"nll_k{k}"] -= float(tf.reduce_sum(value))
        # A table's batch is a dict of columns.
        count += int(tf.shape(tf.nest.flatten(batch)[0])[0])
        if progbar is not None:
            progbar.update(
                index + 1,
                [
                    ("neg_elbo", (sums["reconstruction"] + sums["kl"]) / count),
                    ("nll", sums[f"nll_k{num_samples}"] / count),
                ],
            )
    means = {name: total / count for name, total in sums.items()}
    means["neg_elbo"] = means["reconstruction"] + means["kl"]
    means["nll"] = means[f"nll_k{num_samples}"]
    return means


def split_metrics(
    means: dict[str, float],
    split: str | None,
    image_shape: tuple[int, int, int],
    discrete: bool,
) -> dict[str, float]:
    """Returns `means` keyed `<split>_<name>`, plus bits per dimension if `discrete`.

    Bits per dimension (`<split>_<name>_bits_per_dim`) are given for the
    negative ELBO and every IWAE figure, the quantities that bound -log p(x).
    With `split` None, the keys are the names alone.
    """
    prefix = f"{split}_" if split else ""
    metrics = {f"{prefix}{name}": value for name, value in means.items()}
    if discrete:
        for name, value in means.items():
            if name not in ("reconstruction", "kl"):
                metrics[f"{prefix}{name}_bits_per_dim"] = chain.bits_per_dim(
                    value, image_shape
                )
    return metrics
