"""Matplotlib figures of an evaluation: the latent scatter and the -ELBO curve.

Only `tfvae.evaluation` (and the report script) use these; training never
imports this module, so it never pays for importing matplotlib. Figures are
made with matplotlib's object API and its Agg canvas, not pyplot: no global
figure state and no display needed. Each function returns PNG bytes.
"""

import io

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tfvae import history

# scikit-learn's default; t-SNE needs more points than this.
_TSNE_PERPLEXITY = 30.0


def pca(points: np.ndarray, components: int = 2) -> np.ndarray:
    """Returns `points` `[N, D]` on their top principal axes, `[N, components]`.

    Fewer points (or dimensions) than `components` span fewer axes: the
    missing coordinates are 0, so one point still gives `[1, components]`.
    """
    centered = points - points.mean(axis=0)
    _, _, axes = np.linalg.svd(centered, full_matrices=False)
    projected = centered @ axes[:components].T
    return np.pad(projected, [(0, 0), (0, components - projected.shape[1])])


def embed_2d(points: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    """Returns (`[N, 2]` coordinates of `points` `[N, D]`, how they were made).

    2-D points are kept as they are ("latent"); otherwise t-SNE if scikit-learn
    is installed (it is optional) and there are more points than its
    perplexity, else PCA.
    """
    if points.shape[1] == 2:
        return points, "latent"
    if len(points) <= _TSNE_PERPLEXITY:
        return pca(points), "PCA"
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        return pca(points), "PCA"
    return (
        TSNE(perplexity=_TSNE_PERPLEXITY, init="pca", random_state=seed).fit_transform(
            points
        ),
        "t-SNE",
    )


def figure_png(figure: Figure) -> bytes:
    """Returns `figure` rendered as PNG bytes at 100 dpi."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def scatter_png(
    coordinates: np.ndarray,
    labels: np.ndarray | None,
    method: str,
    title: str,
    names: list[str] | None = None,
) -> bytes:
    """Returns a PNG of 2-D `coordinates` `[N, 2]`, coloured by integer `labels`.

    `method` is `embed_2d`'s second result; it names the axes. `names[i]`,
    if given, names label i in the colour bar (else the integers do).
    """
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
        # Beyond 20 classes the ticks would overlap; the colours still tell.
        if classes <= 20:
            bar.set_ticks(range(classes), labels=names)
    axis = {"latent": "z", "PCA": "PC ", "t-SNE": "t-SNE "}[method]
    axes.set_xlabel(f"{axis}1")
    axes.set_ylabel(f"{axis}2")
    axes.set_title(title)
    return figure_png(figure)


def elbo_curve_png(
    history: history.History,
    iwae_history: dict[int, tuple[int, float]],
    final: tuple[int, float] | None,
) -> bytes:
    """Returns a PNG of -ELBO per epoch, with IWAE -L_k points.

    `iwae_history` maps epochs to (k, nll) measured during training
    (`history.read_iwae_history`); `final` is (k, nll) of this evaluation,
    drawn at the last epoch.
    """
    figure = Figure(figsize=(6.4, 4.8))
    axes = figure.add_subplot()
    axes.plot(history.epochs, history.train_neg_elbo, "--", label="train -ELBO")
    axes.plot(history.epochs, history.test_neg_elbo, label="test -ELBO")
    if iwae_history:
        epochs = sorted(iwae_history)
        ks = sorted({iwae_history[e][0] for e in epochs})
        axes.plot(
            epochs,
            [iwae_history[e][1] for e in epochs],
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
    return figure_png(figure)
