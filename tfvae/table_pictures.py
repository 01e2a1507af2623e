"""The pictures of a table VAE: data against model samples, and its latent space.

`table_pictures(vae, frame, labels, out_dir)` writes three PNGs:

  marginals.png      each column's distribution in the data and in rows drawn
                     from the model (z from the prior, then x ~ p(x|z)):
                     histograms for numbers, bars for binary and categorical
                     columns
  correlations.png   the columns' correlation matrix in the data and in the
                     samples, side by side (categorical columns one-hot)
  latent.png         the rows' posterior means (PCA to 2-D if z is larger),
                     coloured by label

The samples come from the stream `noise.PRIOR_SAMPLES` of `seed`, as the
images' prior samples do; figures are drawn with `tfvae.plots`' conventions
(matplotlib's object API, no pyplot state).

Example:

    paths = table_pictures(vae, test, labels, "runs/wine/pictures")
"""

import math
import os

import numpy as np
import pandas as pd
from absl import logging
from matplotlib.figure import Figure

from tfvae import batches, images, noise, plots, table_model, tables
from tfvae.model import VAE

# The most rows of the data the pictures show (drawn with the seed): the
# pictures of a million rows tell no more than those of a few thousand.
MAX_ROWS = 5000
# A count column with at most this many distinct values gets one bin each.
INTEGER_BINS = 40
# Bins of the other number columns' histograms.
_BINS = 30


def _columns_frame(rows: np.ndarray, schema: dict) -> pd.DataFrame:
    """Returns rows as a DataFrame, categorical codes as their categories' one-hots."""
    parts = []
    for index, column in enumerate(schema["columns"]):
        values = pd.Series(rows[:, index], name=column["name"])
        if column["type"] != "categorical":
            parts.append(values)
            continue
        for code, category in enumerate(column["categories"]):
            one_hot = (values == code).astype(float).where(values.notna())
            parts.append(one_hot.rename(f"{column['name']}={category}"))
    return pd.concat(parts, axis=1)


def _bins(kind: str, low: float, high: float) -> np.ndarray:
    """Returns a histogram's bin edges from `low` to `high`.

    A count column of at most `INTEGER_BINS` values gets one bin per integer,
    centred on it (the quantile bounds are whole numbers first); the others
    `_BINS` equal bins.
    """
    if kind == "count" and math.ceil(high) - math.floor(low) < INTEGER_BINS:
        return np.arange(math.floor(low), math.ceil(high) + 2) - 0.5
    return np.linspace(low, high, _BINS + 1)


def _marginals_png(data: np.ndarray, samples: np.ndarray, schema: dict) -> bytes:
    columns = schema["columns"]
    across = math.ceil(math.sqrt(len(columns)))
    down = math.ceil(len(columns) / across)
    figure = Figure(figsize=(2.6 * across, 2.0 * down + 0.6), layout="constrained")
    for index, column in enumerate(columns):
        axes = figure.add_subplot(down, across, index + 1)
        axes.set_title(column["name"], fontsize=9)
        axes.tick_params(labelsize=7)
        seen = data[:, index][~np.isnan(data[:, index])]
        drawn = samples[:, index]
        if not len(seen):
            logging.info(
                "marginals.png: column %r has no present cell among the rows "
                "shown; its panel is left empty",
                column["name"],
            )
            continue
        if column["type"] in ("binary", "categorical"):
            names = column.get("categories", ["0", "1"])
            positions = np.arange(len(names))
            for shift, values, label in ((-0.2, seen, "data"), (0.2, drawn, "model")):
                shares = np.bincount(values.astype(int), minlength=len(names))
                axes.bar(positions + shift, shares / len(values), 0.4, label=label)
            axes.set_xticks(positions, names, rotation=90 if len(names) > 3 else 0)
        else:
            # The data's range, widened to the samples' central 99.8%: a
            # heavy-tailed draw would squash the data into one bin.
            low = min(seen.min(), np.quantile(drawn, 0.001))
            high = max(seen.max(), np.quantile(drawn, 0.999))
            bins = _bins(column["type"], low, high)
            for values, label in ((seen, "data"), (drawn, "model")):
                axes.hist(values, bins, density=True, histtype="step", label=label)
    drawn_axes = [axes for axes in figure.axes if axes.has_data()]
    if drawn_axes:
        drawn_axes[0].legend(fontsize=7)
    figure.suptitle("Each column: data against rows drawn from the model")
    return plots.figure_png(figure)


def _correlations_png(data: np.ndarray, samples: np.ndarray, schema: dict) -> bytes:
    matrices = [
        _columns_frame(rows, schema).corr().to_numpy() for rows in (data, samples)
    ]
    names = list(_columns_frame(data[:1], schema).columns)
    figure = Figure(figsize=(12.0, 5.8), layout="constrained")
    for panel, (matrix, title) in enumerate(
        zip(matrices, ("data", "rows drawn from the model"), strict=True)
    ):
        axes = figure.add_subplot(1, 2, panel + 1)
        shown = axes.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
        # Beyond 30 names the ticks would overlap; the pattern still tells.
        if len(names) <= 30:
            axes.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
            axes.set_yticks(range(len(names)), names, fontsize=7)
        axes.set_title(f"Correlations: {title}")
    figure.colorbar(shown, ax=figure.axes, shrink=0.8)
    return plots.figure_png(figure)


def _posterior_means(vae: VAE, frame: pd.DataFrame, labels) -> np.ndarray:
    means = []
    for batch in table_model.frame_batches(vae, frame, labels, 256):
        means.append(vae.posterior_mean(*batches.unpack_batch(vae, batch)).numpy())
    return np.concatenate(means)


def table_pictures(
    vae: VAE,
    frame: pd.DataFrame,
    labels,
    out_dir: str,
    *,
    num_samples: int = 1000,
    seed: int = 0,
) -> list[str]:
    """Writes a table VAE's pictures as PNGs; returns their paths.

    Args:
        vae: a table VAE.
        frame: the rows to show (e.g. the test split), a DataFrame of the
            schema's columns; at most `MAX_ROWS` of them, drawn with `seed`.
        labels: `[rows]` each row's label (the latent picture's colours; int
            classes for a conditional VAE, which needs them), or None.
        out_dir: where the PNGs go; created if absent.
        num_samples: rows drawn from the model (`table_model.sample_rows`).
        seed: seeds the samples and which rows are shown.

    Returns:
        The paths of marginals.png, correlations.png and latent.png.

    Raises:
        ValueError: an image VAE, labels that are not one per row, or (for
            a conditional VAE) missing or not int class codes.

    Example:
        >>> table_pictures(vae, test, None, "/tmp/pictures")  # doctest: +SKIP
        ['/tmp/pictures/marginals.png', ...]
    """
    if not vae.likelihood.tabular:
        raise ValueError(
            "table_pictures takes a table VAE; an image VAE's pictures are "
            "tfvae.pictures'. Received: a " + type(vae.likelihood).__name__
        )
    if labels is not None:
        labels = tables.checked_labels(labels, len(frame))
    if len(frame) > MAX_ROWS:
        shown = np.sort(
            np.random.default_rng(seed).choice(len(frame), MAX_ROWS, replace=False)
        )
        frame = frame.iloc[shown].reset_index(drop=True)
        labels = None if labels is None else labels[shown]
    schema = vae.likelihood.schema
    data = vae.likelihood.observe(tables.table_columns(frame, schema), None).numpy()
    # As the export's `sample` signature draws them, for the seed (seed,
    # PRIOR_SAMPLES).
    samples = table_model.sample_rows(
        vae,
        num_samples,
        noise.seed(seed, noise.PRIOR_SAMPLES),
        images.sample_labels(vae.num_classes, num_samples),
    ).numpy()
    means = _posterior_means(vae, frame, labels)
    coordinates, method = (
        (means, "latent")
        if means.shape[1] == 2
        else (
            plots.pca(means),
            "PCA",
        )
    )
    codes, names = (None, None)
    if labels is not None:
        codes, uniques = pd.factorize(np.asarray(labels), sort=True)
        names = [str(name) for name in uniques]
    pictures = {
        "marginals.png": _marginals_png(data, samples, schema),
        "correlations.png": _correlations_png(data, samples, schema),
        "latent.png": plots.scatter_png(
            coordinates,
            codes,
            method,
            "Posterior means of the rows "
            + ("(the 2-D latent)" if method == "latent" else "(PCA)")
            + ("" if labels is None else ", by label"),
            names,
        ),
    }
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, png in pictures.items():
        paths.append(os.path.join(out_dir, name))
        with open(paths[-1], "wb") as file:
            file.write(png)
    return paths
