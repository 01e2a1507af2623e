r"""Trains a VAE on a TFDS image dataset: `python -m tfvae.train --flagfile=FILE`.

Flags are validated up front and turned once into a frozen `Config`;
`tfvae.training.train_and_evaluate(config)` does the rest (and can be called
from Python). What lands in `--model_dir`:

  config.json          the run's configuration (a resumed run must match it)
  dataset.json         image shape and sizes of the dataset it was trained on
  backup/              Keras BackupAndRestore state: rerunning resumes here
  model.weights.h5     the latest weights, saved every epoch
  logs/                TensorBoard: scalars per epoch (train/, validation/),
                       images/ (reconstructions and prior samples)
  reconstructions.png  test images (odd rows) over their reconstructions
  samples.png          64 decoded samples from the prior
  history.csv          train and test (val_) metrics of every epoch
  metrics.json         final train/test negative ELBO (nats), timing
"""

import os

import keras
from absl import app, flags

from tfvae import config as config_lib
from tfvae import distribute, model, training

# Data.
flags.DEFINE_string("dataset", "mnist", "TFDS image dataset name.")
flags.DEFINE_string("data_dir", None, "TFDS data directory (TFDS default if unset).")
flags.DEFINE_string(
    "manual_dir",
    None,
    "Folder holding the dataset's original downloaded files, to build it "
    "offline (tfds.download.DownloadConfig(manual_dir=...)).",
)
# Model.
flags.DEFINE_enum(
    "likelihood", "bernoulli", list(model.LIKELIHOODS), "Observation model p(x|z)."
)
flags.DEFINE_bool(
    "binarize",
    True,
    "bernoulli only: observe pixels as fresh Bernoulli(pixel/255) draws "
    "(dynamic binarization); --nobinarize scores gray pixels as the Pyro "
    "tutorial does.",
)
flags.DEFINE_float(
    "gaussian_scale",
    None,
    "gaussian only: fixed per-pixel standard deviation; unset learns it per pixel.",
)
flags.DEFINE_enum(
    "posterior",
    "diag",
    list(model.POSTERIORS),
    "q(z|x): diagonal or full-covariance normal.",
)
flags.DEFINE_integer("latent_dim", 50, "Size of z.", lower_bound=1)
flags.DEFINE_enum("network", "mlp", list(model.NETWORKS), "Encoder/decoder bodies.")
flags.DEFINE_list("hidden_units", ["400"], "Dense layer sizes, encoder order.")
flags.DEFINE_list("conv_filters", ["32", "64"], "conv only: filters per conv layer.")
flags.DEFINE_string("activation", "softplus", "Hidden activation (a Keras name).")
flags.DEFINE_enum(
    "kl", "analytic", list(model.KL_ESTIMATORS), "KL(q||p): closed form or 1 sample."
)
# Optimization.
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.", lower_bound=0.0)
flags.DEFINE_integer("batch_size", 256, "Global batch size.", lower_bound=1)
flags.DEFINE_integer("epochs", 10, "Total epochs (a resumed run counts those done).")
flags.DEFINE_integer("seed", 0, "Seed: weights, shuffling, binarization, z noise.")
# Execution.
flags.DEFINE_enum(
    "strategy", "auto", list(distribute.STRATEGIES), "tf.distribute strategy."
)
flags.DEFINE_bool(
    "jit_compile",
    True,
    "Compile the train/test steps with XLA (turned off, with a log line, under "
    "a multi-replica strategy, where Keras does not support it).",
)
flags.DEFINE_integer(
    "steps_per_execution",
    16,
    "Training steps per compiled call, lowered to a divisor of the steps per "
    "epoch: fewer Python round trips (1 step per call is 1.4x slower on "
    "MNIST), but the progress bar and the NaN check see only each call's end.",
    lower_bound=1,
)
flags.DEFINE_enum(
    "mixed_precision",
    "float32",
    ["float32", "mixed_float16", "mixed_bfloat16"],
    "Keras dtype policy: mixed_float16 (with loss scaling) or mixed_bfloat16 "
    "compute in 16 bits on GPUs/TPUs; weights and log-probs stay float32.",
)
# Evaluation during training.
flags.DEFINE_integer(
    "iwae_every_epochs",
    0,
    "Every N epochs, also estimate the test log-likelihood with the IWAE bound "
    "(TensorBoard and iwae_history.csv); 0 never does.",
    lower_bound=0,
)
flags.DEFINE_integer(
    "iwae_samples", 100, "Importance samples k for --iwae_every_epochs.", lower_bound=1
)
flags.DEFINE_string("model_dir", None, "Run directory (created, or resumed).")
flags.DEFINE_string(
    "export_dir",
    None,
    "TF Serving model base path: the SavedModel goes to <export_dir>/<version>. "
    "Unset means export/<dataset>.",
)
flags.DEFINE_bool("export", True, "Export a SavedModel after training.")

FLAGS = flags.FLAGS

_OPTION_OWNERS = {
    # flag: (owning flag, values for which it applies)
    "binarize": ("likelihood", {"bernoulli"}),
    "gaussian_scale": ("likelihood", {"gaussian"}),
    "conv_filters": ("network", {"conv"}),
}


def _int_list(name: str, values: list[str], allow_empty: bool) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in values)
    except ValueError:
        sizes = None
    if sizes is None or (not sizes and not allow_empty) or any(s < 1 for s in sizes):
        raise app.UsageError(
            f"--{name} must be a comma-separated list of positive integers. "
            f"Received: --{name}={','.join(values)}"
        )
    return sizes


def config_from_flags() -> config_lib.Config:
    """Validates the flags and returns them as a frozen `Config`."""
    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir is required (the run directory).")
    for name, (owner, values) in _OPTION_OWNERS.items():
        if FLAGS[name].present and FLAGS[owner].value not in values:
            raise app.UsageError(
                f"--{name} only applies to --{owner}={'/'.join(sorted(values))}; "
                f"this run has --{owner}={FLAGS[owner].value}. Remove --{name}."
            )
    if FLAGS.gaussian_scale is not None and FLAGS.gaussian_scale <= 0:
        raise app.UsageError(
            "--gaussian_scale must be positive (or unset to learn the scale). "
            f"Received: --gaussian_scale={FLAGS.gaussian_scale}"
        )
    if FLAGS.learning_rate <= 0:
        raise app.UsageError(
            f"--learning_rate must be positive. Received: {FLAGS.learning_rate}"
        )
    if FLAGS.epochs < 1:
        raise app.UsageError(f"--epochs must be at least 1. Received: {FLAGS.epochs}")
    try:
        keras.activations.get(FLAGS.activation)
    except ValueError as e:
        raise app.UsageError(
            f"--activation={FLAGS.activation} is not a Keras activation name "
            "(e.g. relu, softplus, gelu, tanh)."
        ) from e
    return config_lib.Config(
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        manual_dir=FLAGS.manual_dir,
        likelihood=FLAGS.likelihood,
        binarize=FLAGS.binarize,
        gaussian_scale=FLAGS.gaussian_scale,
        posterior=FLAGS.posterior,
        latent_dim=FLAGS.latent_dim,
        network=FLAGS.network,
        # The conv network may go straight from convolutions to the latent.
        hidden_units=_int_list(
            "hidden_units", FLAGS.hidden_units, allow_empty=FLAGS.network == "conv"
        ),
        conv_filters=_int_list("conv_filters", FLAGS.conv_filters, allow_empty=False),
        activation=FLAGS.activation,
        kl=FLAGS.kl,
        learning_rate=FLAGS.learning_rate,
        batch_size=FLAGS.batch_size,
        epochs=FLAGS.epochs,
        seed=FLAGS.seed,
        strategy=FLAGS.strategy,
        jit_compile=FLAGS.jit_compile,
        steps_per_execution=FLAGS.steps_per_execution,
        mixed_precision=FLAGS.mixed_precision,
        iwae_every_epochs=FLAGS.iwae_every_epochs,
        iwae_samples=FLAGS.iwae_samples,
        model_dir=FLAGS.model_dir,
        export_dir=FLAGS.export_dir or os.path.join("export", FLAGS.dataset),
        export=FLAGS.export,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = config_from_flags()
    training.train_and_evaluate(config)


if __name__ == "__main__":
    app.run(main)
