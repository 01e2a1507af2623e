r"""Evaluates a trained VAE: `python -m tfvae.evaluate --model_dir=RUN`.

Reports the test negative ELBO, its reconstruction and KL terms, and the
importance-weighted bound on the test negative log-likelihood (Burda et al.
2015) at k = 1, 10, 100, 1000, 5000 (up to --num_importance_samples), and
draws reconstructions, prior samples, interpolations, the latent space and the
training curve. The model's settings come from the run's saved configuration;
`--export_dir=export/mnist/1 --output_dir=DIR` evaluates an exported
SavedModel through its signatures instead. Results land in `RUN/eval/`
(metrics.json, PNGs, TensorBoard events); `tfvae.evaluation` has the details.

Timing on this project's 2-core CPU: k=5000 on the 10,000 MNIST test images
(the Pyro tutorial's 784-400-50 MLP, 5e7 decoder passes) took 197-375 s
(3-6 minutes, 1.2 GB of memory) with the defaults. XLA (--jit_compile) is about
2.7x slower for this computation on CPU.
"""

from absl import app, flags

from tfvae import evaluation

flags.DEFINE_string("model_dir", None, "Run directory written by tfvae.train.")
flags.DEFINE_string(
    "export_dir",
    None,
    "Instead of --model_dir: one exported SavedModel version folder, e.g. "
    "export/mnist/1 (needs --output_dir).",
)
flags.DEFINE_string("output_dir", None, "Where results go. Unset: <model_dir>/eval.")
flags.DEFINE_string(
    "split", "test", "TFDS split to evaluate; slices work, e.g. test[:1000]."
)
flags.DEFINE_integer(
    "num_importance_samples",
    5000,
    "k of the IWAE bound; the sweep 1, 10, 100, 1000, 5000 is reported up to k.",
)
flags.DEFINE_integer("batch_size", 100, "Images per batch.")
flags.DEFINE_integer(
    "samples_per_chunk",
    200,
    "Importance samples drawn per compiled call: memory grows with "
    "batch_size * samples_per_chunk. The k samples of a batch are drawn in "
    "chunks of this size, so results depend on it (within Monte Carlo noise).",
)
flags.DEFINE_string(
    "data_dir", None, "TFDS data directory. Unset: the run's --data_dir."
)
flags.DEFINE_string(
    "manual_dir", None, "Original dataset files, to build the dataset offline."
)
flags.DEFINE_integer("seed", 0, "Seed of the binarization and z noise.")
flags.DEFINE_bool(
    "jit_compile",
    False,
    "Compile the per-chunk computation with XLA. On a CPU it is ~2.7x slower "
    "than TensorFlow's own kernels for this computation (XLA's matmul and "
    "softplus lose to oneDNN's); it also draws other (equally valid) random "
    "numbers, so results differ within Monte Carlo noise.",
)

FLAGS = flags.FLAGS


def _check_flags() -> None:
    """Raises app.UsageError, naming the flag and its fix, for a bad flag value."""
    if bool(FLAGS.model_dir) == bool(FLAGS.export_dir):
        raise app.UsageError(
            "Pass exactly one of --model_dir (a training run) and --export_dir "
            "(an exported SavedModel version folder)."
        )
    if FLAGS.export_dir and not FLAGS.output_dir:
        raise app.UsageError(
            "--output_dir is required with --export_dir (results are not written "
            "into a SavedModel), e.g. --output_dir=eval/mnist."
        )
    for name in ("num_importance_samples", "batch_size", "samples_per_chunk"):
        if FLAGS[name].value < 1:
            raise app.UsageError(
                f"--{name} must be at least 1. Received: --{name}={FLAGS[name].value}"
            )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    _check_flags()
    evaluation.evaluate_run(
        model_dir=FLAGS.model_dir,
        export_dir=FLAGS.export_dir,
        output_dir=FLAGS.output_dir,
        split=FLAGS.split,
        num_samples=FLAGS.num_importance_samples,
        batch_size=FLAGS.batch_size,
        samples_per_chunk=FLAGS.samples_per_chunk,
        data_dir=FLAGS.data_dir,
        manual_dir=FLAGS.manual_dir,
        seed=FLAGS.seed,
        jit_compile=FLAGS.jit_compile,
    )


if __name__ == "__main__":
    app.run(main)
