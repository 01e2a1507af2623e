r"""Prints the model family's results table: one row per config, from finished runs.

    python scripts/results.py --runs=runs [--configs=vae,iwae,vamp,two_layer]

Each config `configs/<name>.flags` is trained and evaluated (k=5000 on the
10,000 test images) by

    python scripts/report.py --train_flags=configs/<name>.flags \
        --model_dir=runs/<name> [--epochs=N] [--manual_dir=...]

This script reads `runs/<name>/metrics.json` (epochs, training seconds) and
`runs/<name>/eval/metrics.json` (test -ELBO, the IWAE bound), prints one JSON
object per config, then the README's markdown table. A config without a
finished evaluation is named, not skipped silently.
"""

import json
import os
import sys

from absl import app, flags, logging

from tfvae import run_dir

flags.DEFINE_string("runs", "runs", "Folder holding one run directory per config.")
flags.DEFINE_list(
    "configs",
    ["vae", "iwae", "vamp", "two_layer", "cvae", "gated_vamp", "best"],
    "Config names (configs/<name>.flags, <runs>/<name>).",
)

FLAGS = flags.FLAGS

# The published test NLL (nats, k=5000) each config is compared with, on
# the binarization tfvae trains and tests with: dynamic, a fresh draw of
# each pixel each time (Burda et al.'s Table 1 is, as their code and README
# say; a fixed, "static" binarization scores about 2 nats worse). None:
# no figure on dynamic MNIST could be checked, and why.
_IWAE_TABLE = "Burda et al. 2015, Table 1 (dynamic MNIST)"
_IWAE_BUDGET = "3280 epochs, batch 20"
_VAMP_STATIC = (
    "no dynamic-MNIST figure checked: Tomczak & Welling 2018's 85.57 for "
    "the one-layer VampPrior is static MNIST"
)
PUBLISHED = {
    "vae": (86.76, f"{_IWAE_TABLE}, one layer, VAE k=1; {_IWAE_BUDGET}"),
    "iwae": (85.54, f"{_IWAE_TABLE}, one layer, IWAE k=5; {_IWAE_BUDGET}"),
    "two_layer": (
        83.89,
        f"{_IWAE_TABLE}, two layers, IWAE k=5; {_IWAE_BUDGET}; this cell "
        "not checked against the paper here",
    ),
    "vamp": (None, _VAMP_STATIC),
    "gated_vamp": (None, _VAMP_STATIC),
    "best": (
        None,
        "no dynamic-MNIST figure checked for Tomczak & Welling 2018's HVAE "
        "with the VampPrior",
    ),
}


# What a run's metrics.json says of its training time.
_TIMING = ("train_seconds", "seconds_per_epoch", "first_epoch_s")


def _train_seconds(metrics: dict, metrics_path: str) -> float | None:
    """Returns the seconds training took, or None (logged) if metrics.json lacks them.

    For a run without `train_seconds`: the first epoch plus the steady
    epochs (exact unless it was resumed). A rerun that trained no epoch
    writes no timing at all.
    """
    if "train_seconds" in metrics:
        return metrics["train_seconds"]
    if "seconds_per_epoch" in metrics and "first_epoch_s" in metrics:
        steady = metrics["seconds_per_epoch"] * (metrics["epochs"] - 1)
        return metrics["first_epoch_s"] + steady
    logging.warning(
        "%s holds none of %s, so the training time is shown as -: it was "
        "written by a rerun that trained no epoch. Train the run in a new "
        "--model_dir to time it.",
        metrics_path,
        ", ".join(_TIMING),
    )
    return None


def row(name: str, runs: str) -> dict:
    """Returns one config's figures; raises FileNotFoundError naming a missing file."""
    model_dir = os.path.join(runs, name)
    train = run_dir.read_metrics(model_dir)
    evaluation = run_dir.read_metrics(os.path.join(model_dir, "eval"))
    if not train or not evaluation:
        raise FileNotFoundError(
            f"{model_dir} has no metrics.json of a finished training and of "
            "its evaluation (eval/metrics.json); run scripts/report.py first."
        )
    published, source = PUBLISHED.get(name, (None, ""))
    seconds = _train_seconds(train, run_dir.path(model_dir, run_dir.METRICS))
    return {
        "config": name,
        "command": f"python scripts/report.py --train_flags=configs/{name}.flags",
        "epochs": train["epochs"],
        "train_minutes": None if seconds is None else round(seconds / 60, 1),
        "test_neg_elbo": round(evaluation["test_neg_elbo"], 2),
        "k": evaluation["num_importance_samples"],
        "test_nll": round(evaluation["test_nll"], 2),
        "published_nll": published,
        "published_source": source,
    }


def markdown(rows: list[dict]) -> str:
    """Returns the README's results table for `rows`."""
    lines = [
        "| config | epochs | training minutes | test -ELBO | NLL, k=5000 "
        "| published, dynamic MNIST | tfvae - published |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        published, gap = r["published_source"] or "-", "-"
        if r["published_nll"]:
            published = f"{r['published_nll']} ({published})"
            gap = f"{r['test_nll'] - r['published_nll']:+.2f}"
        lines.append(
            f"| `configs/{r['config']}.flags` | {r['epochs']} "
            f"| {'-' if r['train_minutes'] is None else r['train_minutes']} "
            f"| {r['test_neg_elbo']} | {r['test_nll']} | {published} | {gap} |"
        )
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    rows = []
    for name in FLAGS.configs:
        try:
            rows.append(row(name, FLAGS.runs))
        except FileNotFoundError as e:
            logging.warning("No finished run and evaluation of %s: %s", name, e)
    # The script's output: JSON lines, then the table.
    sys.stdout.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    sys.stdout.write(markdown(rows) + "\n")


if __name__ == "__main__":
    app.run(main)
