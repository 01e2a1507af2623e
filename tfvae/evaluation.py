r"""Evaluating a trained VAE: ELBO, importance-weighted log-likelihood, pictures.

The ELBO is only a lower bound on log p(x). VAE papers compare models by the
importance-weighted bound of Burda et al. (2015),

    L_k = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)],  z_1..z_k ~ q(z|x),

which rises towards log p(x) as k grows; -L_k at k=5000 on the test set is
the "test negative log-likelihood" (NLL) they report. Here, for every batch,
the observation x is fixed (one observe seed) and the k samples of z come in
chunks, each drawn with its own seed; a running logsumexp over the chunks
keeps memory flat in k, and the first k' samples give -L_k' for every k' of
the sweep 1, 10, 100, 1000, 5000 at no extra cost.

The loop runs on anything that follows `EvaluableModel`: a Keras VAE
(`VAEAdapter`) or an exported SavedModel, through its signatures only
(`SavedModelAdapter`). `evaluate_run` is `python -m tfvae.evaluate`; what it
writes to its output dir (`<model_dir>/eval` by default):

  metrics.json            per-example means in nats: <split>_neg_elbo,
                          <split>_reconstruction, <split>_kl, <split>_nll
                          (-L_k at k = num_importance_samples) and
                          <split>_nll_k<k'> for the sweep; bits per dimension
                          when the likelihood is discrete over pixel values
  reconstructions.png     inputs (odd rows) over their reconstructions
  prior_samples.png       64 decoded samples from the prior
  interpolations.png      input, decoded means along the line between two
                          posterior means, input (one pair per row)
  latent_scatter.png      posterior means of the split in 2-D, by label
  latent_manifold.png     2-D latents only: decoded prior quantile grid
  elbo_curve.png          -ELBO (and IWAE points) per training epoch
  events.out.tfevents.*   the same numbers and pictures for TensorBoard

`IWAECallback` computes the same bound during training, every N epochs.
"""

import collections
import csv
import dataclasses
import glob
import io
import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from typing import Protocol

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from absl import logging
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tensorboard.compat.proto import event_pb2
from tensorboard.util import tensor_util

from tfvae import config as config_lib
from tfvae import data, images, model

tfd = tfp.distributions

# The k at which the IWAE bound is reported (those up to the requested k).
IWAE_SWEEP = (1, 10, 100, 1000, 5000)
EVAL_DIRNAME = "eval"
METRICS_FILENAME = "metrics.json"

# Pictures: how many test images, samples and grid cells they show.
_SHOWN_IMAGES = 32
_GRID_COLUMNS = 8
_PRIOR_SAMPLES = 64
_INTERPOLATION_PAIRS = 8
_INTERPOLATION_STEPS = 10
_MANIFOLD_SIZE = 20
# The manifold grid spans these prior quantiles; 0 and 1 would be infinite z.
_MANIFOLD_QUANTILES = (0.05, 0.95)


# --- The IWAE bound from chunks of log-weights -------------------------------


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


# --- What the loop evaluates: a Keras VAE or an exported SavedModel ----------


def _chunk_z_seed(seed: tf.Tensor, chunk: int | tf.Tensor) -> tf.Tensor:
    """Returns the z seed, int64 `[2]`, of sample chunk `chunk` of batch seed `seed`."""
    # Split as `neg_elbo_terms` splits its seed, so the ELBO and the IWAE
    # bound of one batch seed score the same observations x.
    _, z_seed = model.VAE.split_seed(seed)
    return tf.cast(tf.random.experimental.stateless_fold_in(z_seed, chunk), tf.int64)


class EvaluableModel(Protocol):
    """What evaluation needs of a model; images are raw `uint8 [batch, H, W, C]`."""

    latent_dim: int
    # True when p(x|z) is a probability mass over the 256 pixel values.
    discrete: bool

    def neg_elbo_terms(
        self, images: tf.Tensor, seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns (reconstruction, kl), each `[batch]` nats; seed is int64 `[2]`."""

    def log_weights(
        self, images: tf.Tensor, num_samples: int, seed: tf.Tensor, chunk: int
    ) -> tf.Tensor:
        """Returns chunk `chunk`'s importance log-weights, `[num_samples, batch]`.

        With one batch `seed`, every chunk scores the same observations and
        draws its own z.
        """

    def encode_mean(self, images: tf.Tensor) -> tf.Tensor:
        """Returns the posterior means E_q[z|x], `[batch, latent_dim]`."""

    def decode_mean(self, z: tf.Tensor) -> tf.Tensor:
        """Returns E[x|z] as float pixels in [0, 1], `[batch, H, W, C]`."""

    def reconstruction_grid(self, images: tf.Tensor) -> tf.Tensor:
        """Returns a `uint8` grid: rows of inputs over their reconstructions."""

    def prior_samples(self, count: int, seed: int) -> tf.Tensor:
        """Returns E[x|z] for `count` z ~ p(z), `[count, H, W, C]`."""


class VAEAdapter:
    """`EvaluableModel` for a Keras `VAE`; the chunk computation is compiled.

    `jit_compile` compiles it with XLA too (see `tfvae.evaluate` for timings).
    """

    def __init__(self, vae: model.VAE, jit_compile: bool):
        self.vae = vae
        self.latent_dim = vae.latent_dim
        self.discrete = vae.likelihood.discrete
        self._neg_elbo_terms = tf.function(vae.neg_elbo_terms, jit_compile=jit_compile)
        self._log_weights = tf.function(
            self._chunk_log_weights, jit_compile=jit_compile
        )

    def _chunk_log_weights(self, images, num_samples, seed, chunk):
        observe_seed, _ = self.vae.split_seed(seed)
        x, q = self.vae.observe_and_encode(images, observe_seed)
        return self.vae.log_weights(x, q, num_samples, _chunk_z_seed(seed, chunk))

    def neg_elbo_terms(self, images, seed):
        return self._neg_elbo_terms(images, seed)

    def log_weights(self, images, num_samples, seed, chunk):
        # num_samples is a Python int: it fixes the compiled shapes.
        return self._log_weights(images, num_samples, seed, tf.constant(chunk))

    def encode_mean(self, images):
        return self.vae.posterior_mean(images)

    def decode_mean(self, z):
        return self.vae.decode_mean(z)

    def reconstruction_grid(self, batch):
        return images.reconstructions(self.vae, batch)

    def prior_samples(self, count, seed):
        return images.prior_samples(self.vae, count, seed)


class SavedModelAdapter:
    """`EvaluableModel` over the signatures of an exported SavedModel.

    The contract is `tfvae.saved_model`'s: the export fixes its observation
    noise inside, so `neg_elbo_terms` ignores its seed (`score` takes none) and
    every batch is observed with the export's fixed seed, while the z noise of
    `log_weights` still comes from the batch seed and chunk. With batch seed
    `saved_model.fixed_seed(config.seed)`, both adapters give the same numbers.
    """

    def __init__(self, export_dir: str):
        self._signatures = tf.saved_model.load(export_dir).signatures
        description = json.loads(self._signatures["metadata"]()["json"].numpy())
        self.config = config_lib.Config.from_dict(description["config"])
        self.latent_dim = description["latent_dim"]
        self.discrete = model.LIKELIHOODS[self.config.likelihood](self.config).discrete

    def neg_elbo_terms(self, images, seed):
        del seed  # The export observes with its own fixed seed.
        scores = self._signatures["score"](images=images)
        return scores["reconstruction"], scores["kl"]

    def log_weights(self, images, num_samples, seed, chunk):
        log_weights = self._signatures["log_weights"](
            images=images,
            num_samples=tf.constant(num_samples, tf.int32),
            seed=_chunk_z_seed(seed, chunk),
        )["log_weights"]
        return tf.transpose(log_weights)  # The export is batch-major.

    def encode_mean(self, images):
        return self._signatures["encode"](images=images)["mean"]

    def decode_mean(self, z):
        return self._signatures["decode"](z=z)["mean"]

    def reconstruction_grid(self, batch):
        return images.reconstruction_grid(
            batch,
            self._signatures["reconstruct"](images=batch)["images"],
            _GRID_COLUMNS,
        )

    def prior_samples(self, count, seed):
        # The z `images.prior_samples` draws, so both adapters show the same.
        return self._signatures["sample"](
            num_samples=tf.constant(count, tf.int32),
            seed=tf.constant([seed, images.PRIOR_SAMPLE_SEED_OFFSET], tf.int64),
        )["images"]


# --- The evaluation loop ------------------------------------------------------


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
    `batches` yields `uint8 [batch, H, W, C]`; batch i uses the stateless
    seed (seed, i) and chunk j of its samples a seed folded from it, so the
    numbers are reproducible for a given seed, batch size and chunk size.
    """
    ks = sweep(num_samples)
    sizes = chunk_sizes(num_samples, samples_per_chunk)
    sums = collections.defaultdict(float)
    count = 0
    for index, batch in enumerate(batches):
        batch_seed = tf.constant([seed, index], tf.int64)
        reconstruction, kl = evaluable.neg_elbo_terms(batch, batch_seed)
        chunks = (
            evaluable.log_weights(batch, size, batch_seed, chunk)
            for chunk, size in enumerate(sizes)
        )
        bounds = logmeanexp_prefixes(chunks, ks)
        sums["reconstruction"] += float(tf.reduce_sum(reconstruction))
        sums["kl"] += float(tf.reduce_sum(kl))
        for k, bound in bounds.items():
            sums[f"nll_k{k}"] -= float(tf.reduce_sum(bound))
        count += int(tf.shape(batch)[0])
        if progbar is not None:
            progbar.update(
                index + 1,
                [
                    ("neg_elbo", (sums["reconstruction"] + sums["kl"]) / count),
                    ("nll", sums[f"nll_k{num_samples}"] / count),
                ],
            )
    if not count:
        raise ValueError("The dataset to evaluate is empty.")
    means = {name: total / count for name, total in sums.items()}
    means["neg_elbo"] = means["reconstruction"] + means["kl"]
    means["nll"] = means[f"nll_k{num_samples}"]
    return means


def split_metrics(
    means: dict[str, float],
    split: str,
    image_shape: tuple[int, int, int],
    discrete: bool,
) -> dict[str, float]:
    """Returns `means` keyed `<split>_<name>`, plus bits per dimension if `discrete`.

    Bits per dimension (`<split>_<name>_bits_per_dim`) are given for the
    negative ELBO and every IWAE figure, the quantities that bound -log p(x).
    """
    metrics = {f"{split}_{name}": value for name, value in means.items()}
    if discrete:
        for name, value in means.items():
            if name not in ("reconstruction", "kl"):
                metrics[f"{split}_{name}_bits_per_dim"] = model.bits_per_dim(
                    value, image_shape
                )
    return metrics


# --- Pictures -----------------------------------------------------------------


def pca(points: np.ndarray, components: int = 2) -> np.ndarray:
    """Returns `points` `[N, D]` on their top principal axes, `[N, components]`."""
    centered = points - points.mean(axis=0)
    _, _, axes = np.linalg.svd(centered, full_matrices=False)
    return centered @ axes[:components].T


def embed_2d(points: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    """Returns (`[N, 2]` coordinates of `points` `[N, D]`, how they were made).

    2-D points are kept as they are ("latent"); otherwise t-SNE if scikit-learn
    is installed (it is optional), else PCA.
    """
    if points.shape[1] == 2:
        return points, "latent"
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        return pca(points), "PCA"
    return TSNE(init="pca", random_state=seed).fit_transform(points), "t-SNE"


def interpolation_grid(
    evaluable: EvaluableModel, starts: tf.Tensor, ends: tf.Tensor, steps: int
) -> tf.Tensor:
    """Returns `uint8` rows: start, `steps` decoded means from z_start to z_end, end.

    `starts` and `ends` are raw `uint8 [pairs, H, W, C]`; z are posterior means.
    """
    z_start, z_end = evaluable.encode_mean(starts), evaluable.encode_mean(ends)
    weights = tf.linspace(0.0, 1.0, steps)[:, tf.newaxis, tf.newaxis]
    z = (1.0 - weights) * z_start + weights * z_end  # [steps, pairs, latent]
    decoded = evaluable.decode_mean(tf.reshape(z, [-1, evaluable.latent_dim]))
    decoded = tf.reshape(decoded, [steps, -1, *decoded.shape[1:]])
    rows = tf.concat(
        [
            tf.cast(starts, tf.float32)[tf.newaxis] / 255.0,
            decoded,
            tf.cast(ends, tf.float32)[tf.newaxis] / 255.0,
        ],
        axis=0,
    )  # [steps + 2, pairs, H, W, C]
    rows = tf.transpose(rows, [1, 0, 2, 3, 4])
    return images.grid(tf.reshape(rows, [-1, *rows.shape[2:]]), steps + 2)


def manifold_grid(evaluable: EvaluableModel, size: int) -> tf.Tensor:
    """Returns `uint8`: E[x|z] over a `size` x `size` grid of 2-D prior quantiles."""
    if evaluable.latent_dim != 2:
        raise ValueError(
            "The latent manifold is drawn for 2-D latents only. Received: "
            f"latent_dim={evaluable.latent_dim}"
        )
    values = tfd.Normal(0.0, 1.0).quantile(tf.linspace(*_MANIFOLD_QUANTILES, size))
    # Rows run from high to low z_2 so the picture's y axis points up.
    z2, z1 = tf.meshgrid(values[::-1], values, indexing="ij")
    z = tf.stack([tf.reshape(z1, [-1]), tf.reshape(z2, [-1])], axis=1)
    return images.grid(evaluable.decode_mean(z), size)


def _figure_png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def scatter_png(
    coordinates: np.ndarray, labels: np.ndarray | None, method: str, title: str
) -> bytes:
    """Returns a PNG of 2-D `coordinates` `[N, 2]`, coloured by integer `labels`."""
    figure = Figure(figsize=(6.4, 5.6))
    axes = figure.add_subplot()
    if labels is None:
        axes.scatter(*coordinates.T, s=3, alpha=0.6, linewidths=0)
    else:
        # One colour per class, centred on its integer label in the colour bar.
        classes = int(labels.max()) + 1
        palette = "tab10" if classes <= 10 else "tab20" if classes <= 20 else "turbo"
        points = axes.scatter(
            *coordinates.T,
            c=labels,
            cmap=colormaps[palette].resampled(classes),
            vmin=-0.5,
            vmax=classes - 0.5,
            s=3,
            alpha=0.6,
            linewidths=0,
        )
        bar = figure.colorbar(points, ax=axes, label="label")
        if classes <= 20:
            bar.set_ticks(range(classes))
    axis = {"latent": "z", "PCA": "PC ", "t-SNE": "t-SNE "}[method]
    axes.set_xlabel(f"{axis}1")
    axes.set_ylabel(f"{axis}2")
    axes.set_title(title)
    return _figure_png(figure)


@dataclasses.dataclass(frozen=True)
class History:
    """Per-epoch training curves; epochs count from 1, values are nats."""

    epochs: list[int]
    train_neg_elbo: list[float]
    test_neg_elbo: list[float]


def _history_from_csv(path: str) -> History:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    # CSVLogger numbers epochs from 0; a resumed run may repeat one.
    last = {int(row["epoch"]) + 1: row for row in rows}
    epochs = sorted(last)
    return History(
        epochs=epochs,
        train_neg_elbo=[float(last[e]["neg_elbo"]) for e in epochs],
        test_neg_elbo=[float(last[e]["val_neg_elbo"]) for e in epochs],
    )


def _tensorboard_scalars(log_dir: str, tag: str) -> dict[int, float]:
    """Returns {epoch (from 1): value} of scalar `tag` in `log_dir`'s event files."""
    values = {}
    for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag == tag:
                    # Keras logs epoch scalars at step = epoch index, from 0.
                    values[event.step + 1] = float(
                        tensor_util.make_ndarray(value.tensor)
                    )
    return values


def read_history(model_dir: str) -> History | None:
    """Returns a run's training curves, or None if it recorded none.

    Reads `<model_dir>/history.csv` if present, else the Keras TensorBoard
    event files in `<model_dir>/logs/{train,validation}`.
    """
    path = os.path.join(model_dir, config_lib.HISTORY_FILENAME)
    if os.path.exists(path):
        return _history_from_csv(path)
    logs = os.path.join(model_dir, "logs")
    train = _tensorboard_scalars(os.path.join(logs, "train"), "epoch_neg_elbo")
    test = _tensorboard_scalars(os.path.join(logs, "validation"), "epoch_neg_elbo")
    epochs = sorted(set(train) & set(test))
    if not epochs:
        return None
    return History(
        epochs=epochs,
        train_neg_elbo=[train[e] for e in epochs],
        test_neg_elbo=[test[e] for e in epochs],
    )


def read_iwae_history(path: str) -> dict[int, tuple[int, float]]:
    """Returns {epoch (from 1): (k, nll)} from an `IWAECallback` CSV ({} if absent)."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {
            int(row["epoch"]) + 1: (
                int(row["num_importance_samples"]),
                float(row["nll"]),
            )
            for row in csv.DictReader(f)
        }


def elbo_curve_png(
    history: History,
    iwae: dict[int, tuple[int, float]],
    final: tuple[int, float] | None,
) -> bytes:
    """Returns a PNG of -ELBO per epoch, with IWAE -L_k points.

    `iwae` maps epochs to (k, nll) measured during training; `final` is
    (k, nll) of this evaluation, drawn at the last epoch.
    """
    figure = Figure(figsize=(6.4, 4.8))
    axes = figure.add_subplot()
    axes.plot(history.epochs, history.train_neg_elbo, "--", label="train -ELBO")
    axes.plot(history.epochs, history.test_neg_elbo, label="test -ELBO")
    if iwae:
        epochs = sorted(iwae)
        ks = sorted({iwae[e][0] for e in epochs})
        axes.plot(
            epochs,
            [iwae[e][1] for e in epochs],
            "o",
            label=f"test -log p(x), IWAE k={'/'.join(map(str, ks))}",
        )
    if final is not None:
        axes.plot(
            [history.epochs[-1]],
            [final[1]],
            "*",
            markersize=12,
            label=f"test -log p(x), IWAE k={final[0]} (this evaluation)",
        )
    axes.set_xlabel("epoch")
    axes.set_ylabel("nats per image")
    axes.set_title("Negative ELBO and IWAE bound during training")
    axes.grid(alpha=0.3)
    axes.legend()
    return _figure_png(figure)


def _decode_png(png: bytes) -> tf.Tensor:
    return tf.io.decode_png(png, channels=3)


def write_pictures(
    evaluable: EvaluableModel,
    images_and_labels: Iterable[tuple[tf.Tensor, tf.Tensor | None]],
    output_dir: str,
    seed: int,
    split: str,
    history: History | None = None,
    iwae_history: dict[int, tuple[int, float]] | None = None,
    final_nll: tuple[int, float] | None = None,
) -> dict[str, tf.Tensor]:
    """Writes the evaluation's PNGs to `output_dir`; returns {file name: image}.

    `images_and_labels` yields batches `(uint8 [batch, H, W, C], int labels
    [batch] or None)` of the split being evaluated; every image is encoded
    for the latent scatter. The ELBO curve is drawn only if `history` is given.
    Images are `uint8 [rows, cols, C]`, ready for `tf.summary.image`.
    """
    means, labels, shown = [], [], []
    for batch_images, batch_labels in images_and_labels:
        means.append(evaluable.encode_mean(batch_images).numpy())
        if batch_labels is not None:
            labels.append(batch_labels.numpy())
        if sum(len(s) for s in shown) < _SHOWN_IMAGES:
            shown.append(batch_images)
    shown = tf.concat(shown, axis=0)[:_SHOWN_IMAGES]
    pairs = min(_INTERPOLATION_PAIRS, len(shown) // 2)
    coordinates, method = embed_2d(np.concatenate(means), seed)
    pictures = {
        "reconstructions.png": evaluable.reconstruction_grid(shown),
        "prior_samples.png": images.grid(
            evaluable.prior_samples(_PRIOR_SAMPLES, seed), _GRID_COLUMNS
        ),
        "interpolations.png": interpolation_grid(
            evaluable,
            shown[:pairs],
            shown[pairs : 2 * pairs],
            _INTERPOLATION_STEPS,
        ),
        "latent_scatter.png": _decode_png(
            scatter_png(
                coordinates,
                np.concatenate(labels) if labels else None,
                method,
                f"Posterior means of the {split} set "
                + ("(the 2-D latent)" if method == "latent" else f"({method})"),
            )
        ),
    }
    if evaluable.latent_dim == 2:
        pictures["latent_manifold.png"] = manifold_grid(evaluable, _MANIFOLD_SIZE)
    if history is not None:
        pictures["elbo_curve.png"] = _decode_png(
            elbo_curve_png(history, iwae_history or {}, final_nll)
        )
    os.makedirs(output_dir, exist_ok=True)
    for name, picture in pictures.items():
        images.write_png(os.path.join(output_dir, name), picture)
    return pictures


# --- Training-time IWAE -----------------------------------------------------


class IWAECallback(keras.callbacks.Callback):
    """Every `every_n_epochs` epochs, estimates the test NLL with the IWAE bound.

    Uses `evaluate_batches` with k = `num_samples` on `test_images` (a dataset
    of `uint8 [batch, H, W, C]`), the same seed every time so the curve shows
    the model changing, not the noise. Logs `epoch_nll_k<k>` and
    `epoch_neg_elbo` to TensorBoard in `<log_dir>/iwae` at step = epoch index
    (as Keras's TensorBoard callback does) and appends a row (epoch from 0,
    num_importance_samples, neg_elbo, nll) to `csv_path`, which
    `evaluate_run` plots: pass `<model_dir>/iwae_history.csv`.
    """

    def __init__(
        self,
        test_images: tf.data.Dataset,
        num_samples: int,
        every_n_epochs: int,
        log_dir: str,
        csv_path: str,
        samples_per_chunk: int = 200,
        seed: int = 0,
        jit_compile: bool = False,
    ):
        super().__init__()
        sweep(num_samples)
        chunk_sizes(num_samples, samples_per_chunk)
        if every_n_epochs < 1:
            raise ValueError(
                "every_n_epochs must be at least 1. Received: "
                f"every_n_epochs={every_n_epochs}"
            )
        self.test_images = test_images
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.csv_path = csv_path
        self.samples_per_chunk = samples_per_chunk
        self.seed = seed
        self.jit_compile = jit_compile
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "iwae"))
        self._evaluable = None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        if self._evaluable is None:
            self._evaluable = VAEAdapter(self.model, self.jit_compile)
        means = evaluate_batches(
            self._evaluable,
            self.test_images,
            self.num_samples,
            self.samples_per_chunk,
            self.seed,
        )
        logging.info(
            "Epoch %d: test -ELBO %.3f, IWAE -L_%d %.3f nats.",
            epoch + 1,
            means["neg_elbo"],
            self.num_samples,
            means["nll"],
        )
        with self.writer.as_default():
            tf.summary.scalar(f"epoch_nll_k{self.num_samples}", means["nll"], epoch)
            tf.summary.scalar("epoch_neg_elbo", means["neg_elbo"], epoch)
        self.writer.flush()
        new_file = not os.path.exists(self.csv_path)
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.writer(f)
            if new_file:
                writer.writerow(["epoch", "num_importance_samples", "neg_elbo", "nll"])
            writer.writerow([epoch, self.num_samples, means["neg_elbo"], means["nll"]])


# --- The command -------------------------------------------------------------


def split_name(split: str) -> str:
    """Returns the split without TFDS slicing ("test" for "test[:1000]")."""
    return split.split("[")[0]


def evaluate_run(
    *,
    model_dir: str | None,
    export_dir: str | None,
    output_dir: str | None,
    split: str,
    num_samples: int,
    batch_size: int,
    samples_per_chunk: int,
    data_dir: str | None,
    manual_dir: str | None,
    seed: int,
    jit_compile: bool,
) -> dict:
    """Evaluates a training run or an exported SavedModel; returns metrics.json's dict.

    Exactly one of `model_dir` (a `tfvae.train` run) and `export_dir` (one
    version folder of a `tfvae.saved_model` export) names the model; the
    dataset and its default data/manual dirs come from its saved configuration.
    Results go to `output_dir`, by default `<model_dir>/eval` (required with
    `export_dir`, whose folder stays untouched). See the module docstring.
    """
    if (model_dir is None) == (export_dir is None):
        raise ValueError(
            "Pass exactly one of --model_dir (a training run) and --export_dir "
            f"(an exported SavedModel). Received: {model_dir=}, {export_dir=}"
        )
    if model_dir is not None:
        config, _, vae = model.load_vae(model_dir)
        evaluable = VAEAdapter(vae, jit_compile)
        output_dir = output_dir or os.path.join(model_dir, EVAL_DIRNAME)
    else:
        if not output_dir:
            raise ValueError(
                "--output_dir is required with --export_dir (results are not "
                "written into a SavedModel), e.g. --output_dir=eval/mnist."
            )
        evaluable = SavedModelAdapter(export_dir)
        config = evaluable.config
    builder, info = data.prepare(
        config.dataset, data_dir or config.data_dir, manual_dir or config.manual_dir
    )
    try:
        num_examples = builder.info.splits[split].num_examples
    except (KeyError, ValueError) as e:
        raise ValueError(
            f"--split={split} is not a split of {config.dataset}: use one of "
            f"{sorted(builder.info.splits)}, or a TFDS slice such as test[:1000]."
        ) from e
    logging.info(
        "Evaluating %s on %s %s (%d images): -ELBO and the IWAE bound with k=%d.",
        model_dir or export_dir,
        config.dataset,
        split,
        num_examples,
        num_samples,
    )
    start = time.perf_counter()
    means = evaluate_batches(
        evaluable,
        data.batches(data.split_images(builder, split), batch_size),
        num_samples,
        samples_per_chunk,
        seed,
        keras.utils.Progbar(
            math.ceil(num_examples / batch_size),
            unit_name="batch",
            stateful_metrics=["neg_elbo", "nll"],
        ),
    )
    seconds = time.perf_counter() - start
    prefix = split_name(split)
    metrics = {
        **split_metrics(means, prefix, info.image_shape, evaluable.discrete),
        "split": split,
        "num_examples": num_examples,
        "num_importance_samples": num_samples,
        "samples_per_chunk": samples_per_chunk,
        "batch_size": batch_size,
        "seed": seed,
        "jit_compile": jit_compile,
        "seconds": round(seconds, 1),
        "dataset": config.dataset,
        "likelihood": config.likelihood,
        "model": model_dir or export_dir,
    }

    history = read_history(model_dir) if model_dir else None
    if labelled := info.num_classes is not None:
        pairs = data.split_images_and_labels(builder, split).batch(batch_size)
    else:
        pairs = data.split_images(builder, split).batch(batch_size)
    pictures = write_pictures(
        evaluable,
        pairs if labelled else ((batch, None) for batch in pairs),
        output_dir,
        seed,
        split,
        history=history,
        iwae_history=read_iwae_history(
            os.path.join(model_dir, config_lib.IWAE_HISTORY_FILENAME)
        )
        if model_dir
        else None,
        final_nll=(num_samples, metrics[f"{prefix}_nll"])
        if prefix == data.TEST_SPLIT
        else None,
    )
    with open(os.path.join(output_dir, METRICS_FILENAME), "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
    step = history.epochs[-1] if history else 0
    with tf.summary.create_file_writer(output_dir).as_default():
        for name, value in metrics.items():
            if name.startswith(f"{prefix}_"):
                tf.summary.scalar(name, value, step=step)
        for name, picture in pictures.items():
            tf.summary.image(name.removesuffix(".png"), picture[tf.newaxis], step=step)
    logging.info(
        "Wrote %s and %d pictures to %s in %.1f s: %s",
        METRICS_FILENAME,
        len(pictures),
        output_dir,
        seconds,
        json.dumps(metrics, sort_keys=True),
    )
    return metrics
