r"""Evaluates a trained VAE: `python -m tfvae.evaluate --model_dir=RUN`.

Reports the test negative ELBO, its reconstruction and KL terms, and the
importance-weighted bound on the test negative log-likelihood (Burda et al.
2015) at k = 1, 10, 100, 1000, 5000 (up to --num_importance_samples), and
draws reconstructions, prior samples, interpolations, the latent space and the
training curve. The model's settings come from the run's saved configuration;
`--export_dir=export/mnist/1 --output_dir=DIR` evaluates an exported
SavedModel through its signatures instead (`--export_dir=export/mnist`: its
latest version, as TF Serving does). Results land in `RUN/eval/`
(metrics.json, PNGs, TensorBoard events); `tfvae.evaluation` has the details.

The flags are `tfvae.evaluation.EvalConfig`'s fields, checked there. Do not
import this module next to `tfvae.train`: both define --model_dir.
"""

from absl import app, flags

from tfvae import errors, evaluation, settings

settings.define_flags(evaluation.EvalConfig)
# Show them in this command's --help, not only in --helpfull.
flags.adopt_module_key_flags(settings)


@errors.reported
def main(argv):
    if len(argv) > 1:
        raise errors.UsageError(f"Unexpected arguments: {argv[1:]}")
    evaluation.evaluate_run(settings.from_flags(evaluation.EvalConfig))


if __name__ == "__main__":
    app.run(main)
