r"""Training throughput of a model given by train flags; prints one JSON object.

    python scripts/benchmark.py --flagfile=mnist.flags \
        --manual_dir=../shared/datasets/mnist --epochs=4

Trains the configuration twice in temporary run directories, once with XLA and
once without, through the same `train_and_evaluate` as `python -m tfvae.train`
(input pipeline, progress callbacks and validation included), and reports per
variant: training examples/s and seconds per epoch at steady state (epochs
after the first), the first epoch apart (it pays for tracing and compilation),
and the test negative ELBO. Timings on a shared machine are noisy: compare the
ratio measured in one run (`xla_speedup`), not absolute figures across runs.
"""

import dataclasses
import json
import sys
import tempfile

from absl import app

from tfvae import train, training

_KEYS = ("train_examples_per_s", "seconds_per_epoch", "first_epoch_s", "test_neg_elbo")


def main(argv):
    del argv
    config = train.config_from_flags()
    if config.epochs < 2:
        raise app.UsageError("--epochs must be at least 2 to measure a steady state.")
    results = {}
    for name, jit in (("xla", True), ("no_xla", False)):
        with tempfile.TemporaryDirectory() as model_dir:
            metrics = training.train_and_evaluate(
                dataclasses.replace(
                    config, jit_compile=jit, model_dir=model_dir, export=False
                )
            )
        results[name] = {key: metrics[key] for key in _KEYS}
    report = {
        "dataset": config.dataset,
        "network": config.network,
        "hidden_units": list(config.hidden_units),
        "latent_dim": config.latent_dim,
        "likelihood": config.likelihood,
        "batch_size": config.batch_size,
        "epochs": config.epochs,
        **results,
        "xla_speedup": round(
            results["xla"]["train_examples_per_s"]
            / results["no_xla"]["train_examples_per_s"],
            3,
        ),
    }
    sys.stdout.write(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    app.run(main)
