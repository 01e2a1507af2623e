r"""Evaluates a trained VAE: `python -m tfvae.evaluate --model_dir=RUN`.

Reports the test negative ELBO, its reconstruction and KL terms, and the
importance-weighted bound on the test negative log-likelihood (Burda et al.
2015) at k = 1, 10, 100, 1000, 5000 (up to --num_importance_samples), and
draws reconstructions, prior samples, interpolations, the latent space and the
training curve. The model's settings come from the run's saved configuration;
`--export_dir=export/mnist/1 --output_dir=DIR` evaluates an exported
SavedModel through its signatures instead (`--export_dir=export/mnist`: its
latest version, as TF Serving does). Results land in `RUN/eval/`
(metrics.json, PNGs, TensorBoard events); `tfvae.run_eval` has the details,
and `tfvae.evaluation.evaluate` is the same from Python.

A table run (`--table`, or a TFDS `--dataset` of scalar features) gets its
table's figures instead (nats per row: the IWAE bound, each column's
log-likelihood, imputation, anomaly AUCs) and pictures, on the split it
recorded.

The flags are `tfvae.run_eval.EvalConfig`'s fields, checked there. Do not
import this module next to `tfvae.train`: both define --model_dir.
"""

from absl import app, flags

from tfvae import errors, fields, run_eval

fields.define_flags(run_eval.EvalConfig)
# Show them in this command's --help, not only in --helpfull.
flags.adopt_module_key_flags(fields)


@errors.reported
def main(argv):
    if len(argv) > 1:
        raise errors.UsageError(f"Unexpected arguments: {argv[1:]}")
    run_eval.evaluate_run(fields.from_flags(run_eval.EvalConfig))


if __name__ == "__main__":
    app.run(main)
