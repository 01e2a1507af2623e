r"""Trains the tutorial's VAE, evaluates it with k=5000 and writes a one-page report.

    python scripts/report.py --model_dir=runs/mnist_report \
        [--manual_dir=../shared/datasets/mnist] [--data_dir=...]

Three steps, each rerunnable (training resumes, a finished run is kept):

  1. python -m tfvae.train --flagfile=mnist.flags --epochs=100 --model_dir=RUN
     --noexport (the Pyro tutorial's 784-400-50 MLP on dynamically binarized
     MNIST);
  2. python -m tfvae.evaluate --model_dir=RUN --num_importance_samples=5000;
  3. RUN/report.md, RUN/report.png and RUN/report.pdf: the test metrics with
     the IWAE sweep k = 1 ... 5000 beside the evaluation's pictures.

How long each step takes: see the README.
"""

import math
import os
import subprocess
import sys

from absl import app, flags, logging
from matplotlib import image as mpimg
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tfvae import config as config_lib
from tfvae import iwae, run_dir, run_eval

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_string("model_dir", "runs/mnist_report", "Run directory.")
flags.DEFINE_string(
    "train_flags",
    os.path.join(REPO, "mnist.flags"),
    "Flag file of the model to train (passed to tfvae.train as --flagfile).",
)
flags.DEFINE_integer("epochs", 100, "Training epochs.", lower_bound=1)
flags.DEFINE_integer(
    "num_importance_samples", 5000, "k of the reported IWAE bound.", lower_bound=1
)
flags.DEFINE_string("data_dir", None, "TFDS data directory.")
flags.DEFINE_string(
    "manual_dir", None, "Original dataset files, to build the dataset offline."
)

FLAGS = flags.FLAGS

# The pictures of the report, in reading order, with their captions.
_PANELS = (
    ("reconstructions.png", "Test images (odd rows) and reconstructions"),
    ("prior_samples.png", "Samples: E[x|z], z ~ p(z)"),
    ("interpolations.png", "Interpolations between posterior means"),
    ("latent_manifold.png", "Decoded prior quantiles (2-D latent)"),
    ("latent_scatter.png", None),  # The plot has its own title.
    ("elbo_curve.png", None),
)
_CURVE = "elbo_curve.png"


def _run(module: str, *args: str) -> None:
    """Runs `python -m module args` from the repository; raises if it fails."""
    command = [sys.executable, "-m", module, *args]
    logging.info("Running %s", " ".join(command))
    result = subprocess.run(command, cwd=REPO)
    if result.returncode:
        raise RuntimeError(
            f"{module} failed with exit code {result.returncode}; its messages are "
            "above. Fix the cause and rerun: finished steps are kept."
        )


def _data_flags() -> list[str]:
    return [
        f"--{name}={os.path.abspath(FLAGS[name].value)}"
        for name in ("data_dir", "manual_dir")
        if FLAGS[name].value
    ]


def metrics_rows(metrics: dict) -> list[tuple[str, str, str]]:
    """Returns the report's table: (quantity, nats, bits/dim or "") per row."""
    split = run_eval.split_name(metrics["split"])
    rows = [
        ("-ELBO", "neg_elbo"),
        ("reconstruction term", "reconstruction"),
        ("KL term", "kl"),
    ]
    ks = iwae.sweep(metrics["num_importance_samples"])
    rows += [(f"-log p(x), IWAE k={k}", f"nll_k{k}") for k in ks]
    table = []
    for label, name in rows:
        bits = metrics.get(f"{split}_{name}_bits_per_dim")
        table.append(
            (label, f"{metrics[f'{split}_{name}']:.2f}", f"{bits:.4f}" if bits else "")
        )
    return table


def _markdown(
    config: config_lib.Config,
    train: dict,
    metrics: dict,
    table: list[tuple[str, str, str]],
    panels: list[str],
) -> str:
    has_bits = any(bits for _, _, bits in table)
    header = "| quantity | nats |" + (" bits/dim |" if has_bits else "")
    lines = [header, "|---|---:|" + ("---:|" if has_bits else "")]
    for label, nats, bits in table:
        lines.append(f"| {label} | {nats} |" + (f" {bits} |" if has_bits else ""))
    model = (
        f"{config.network} {'-'.join(map(str, config.hidden_units))}, "
        f"latent_dim={config.latent_dim}, {config.activation}, "
        f"{config.posterior} posterior, {config.likelihood} likelihood"
        + (
            " (dynamically binarized)"
            if config.likelihood == "bernoulli" and config.binarize
            else ""
        )
    )
    pictures = "\n\n".join(f"![{name}](eval/{name})" for name in panels)
    training = (
        f"Trained {train['epochs']} epochs (Adam {config.learning_rate}, batch "
        f"{config.batch_size}, seed {config.seed}, "
        f"{train.get('seconds_per_epoch', '?')} s/epoch)."
    )
    evaluated = (
        f"Evaluated on the {metrics['num_examples']} images of the "
        f"{metrics['split']} split in {metrics['seconds']} s."
    )
    return f"""# VAE on {config.dataset}: test log-likelihood

Model: {model}. {training} {evaluated}

{chr(10).join(lines)}

-log p(x) is the importance-weighted bound of Burda et al. (2015) with k
samples: in expectation an upper bound on the negative log-likelihood, which
tightens as k grows; k=1 estimates the -ELBO. All per image, averaged over
the split.

{pictures}
"""


def _show(axes, path: str, caption: str | None) -> None:
    picture = mpimg.imread(path)
    axes.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
    axes.axis("off")
    if caption:
        axes.set_title(caption)


def _figure(
    title: str,
    table_rows: list[tuple[str, str, str]],
    eval_dir: str,
    panels: list[str],
) -> Figure:
    """Returns the page: the table beside the training curve, then the pictures."""
    pictures = [name for name in panels if name != _CURVE]
    rows = 1 + math.ceil(len(pictures) / 2)
    figure = Figure(figsize=(11, 4.5 * rows), layout="constrained")
    figure.suptitle(title, fontsize=14)
    grid = figure.add_gridspec(rows, 2)
    table_axes = figure.add_subplot(grid[0, 0])
    table_axes.axis("off")
    columns = 3 if any(bits for _, _, bits in table_rows) else 2
    table = table_axes.table(
        cellText=[row[:columns] for row in table_rows],
        colLabels=["test, per image", "nats", "bits/dim"][:columns],
        colWidths=[0.55, 0.25, 0.25][:columns],
        loc="center",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(11)
    table.scale(1, 1.6)
    if _CURVE in panels:
        _show(figure.add_subplot(grid[0, 1]), os.path.join(eval_dir, _CURVE), None)
    for index, name in enumerate(pictures):
        axes = figure.add_subplot(grid[1 + index // 2, index % 2])
        _show(axes, os.path.join(eval_dir, name), dict(_PANELS)[name])
    return figure


def write_report(model_dir: str) -> list[str]:
    """Writes report.md, report.png and report.pdf to `model_dir`; returns their paths.

    Reads the run's config.json and metrics.json and what `tfvae.evaluate`
    wrote to `<model_dir>/eval`, through `tfvae.run_dir`.
    """
    eval_dir = run_dir.path(model_dir, run_dir.EVAL)
    config = run_dir.load_config(model_dir)
    train = run_dir.read_metrics(model_dir)
    metrics = run_dir.read_metrics(eval_dir)
    if not metrics:
        raise FileNotFoundError(
            f"{run_dir.path(eval_dir, run_dir.METRICS)} does not exist: evaluate "
            f"the run first (python -m tfvae.evaluate --model_dir={model_dir})."
        )
    # One table for the page and the figure, so they cannot disagree.
    table = metrics_rows(metrics)
    # The manifold exists for 2-D latents only, the curve for runs with a history.
    panels = [
        name for name, _ in _PANELS if os.path.exists(os.path.join(eval_dir, name))
    ]
    paths = [os.path.join(model_dir, f"report.{ext}") for ext in ("md", "png", "pdf")]
    with open(paths[0], "w") as f:
        f.write(_markdown(config, train, metrics, table, panels))
    nll = metrics[f"{run_eval.split_name(metrics['split'])}_nll"]
    figure = _figure(
        f"VAE on {config.dataset}, {train['epochs']} epochs: -log p(x) <= "
        f"{nll:.2f} nats (IWAE, k={metrics['num_importance_samples']})",
        table,
        eval_dir,
        panels,
    )
    FigureCanvasAgg(figure)
    for path in paths[1:]:
        figure.savefig(path, dpi=100)
    return paths


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    model_dir = os.path.abspath(FLAGS.model_dir)
    _run(
        "tfvae.train",
        f"--flagfile={os.path.abspath(FLAGS.train_flags)}",
        f"--epochs={FLAGS.epochs}",
        f"--model_dir={model_dir}",
        # The report writes inside model_dir only; export with tfvae.train.
        "--noexport",
        *_data_flags(),
    )
    _run(
        "tfvae.evaluate",
        f"--model_dir={model_dir}",
        f"--num_importance_samples={FLAGS.num_importance_samples}",
        *_data_flags(),
    )
    for path in write_report(model_dir):
        logging.info("Wrote %s", path)


if __name__ == "__main__":
    app.run(main)
