r"""Exports a trained run as a SavedModel: `python -m tfvae.export --model_dir=RUN`.

Writes `<export_dir>/<version>/`, the next free integer version, the layout
TF Serving watches; `--export_dir` defaults to the run's own (its
config.json's `--export_dir`, else export/<dataset>), and so does
`--export_max_samples` (the most samples `sample` and `log_weights` serve
per call). A thin layer over `saved_model.export`: the VAE, of images or
of a `--table`, comes from the run directory (`run_dir.load_run`), and the
export holds plain variables, so whatever strategy trained it, it loads on
any device count.
Signatures and their noise: export/README.md.

Do not import this module next to `tfvae.train`: both define --model_dir and
--export_dir.
"""

import dataclasses

from absl import app, flags

from tfvae import errors, run_dir, saved_model

flags.DEFINE_string("model_dir", None, "Run directory written by tfvae.train.")
flags.DEFINE_string(
    "export_dir",
    None,
    "TF Serving model base path: the SavedModel goes to <export_dir>/<version>. "
    "Unset means the run's own --export_dir (see its config.json), or "
    "export/<dataset> if that is unset too.",
)
flags.DEFINE_integer(
    "export_max_samples",
    None,
    "The largest num_samples the export's sample and log_weights signatures "
    "accept. Unset means the run's own (see its config.json).",
)

FLAGS = flags.FLAGS


@errors.reported
def main(argv):
    if len(argv) > 1:
        raise errors.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS.model_dir:
        raise errors.UsageError(
            "--model_dir is required (a tfvae.train run directory)."
        )
    # Checked before the model is loaded; export() checks it again, as it
    # does for every caller.
    export_base = FLAGS.export_dir or run_dir.load_config(FLAGS.model_dir).export_base
    saved_model.check_export_base(export_base)
    config, info, vae = run_dir.load_run(FLAGS.model_dir)
    if FLAGS.export_max_samples is not None:
        config = dataclasses.replace(
            config, export_max_samples=FLAGS.export_max_samples
        )
    saved_model.export(vae, export_base, config=config, dataset_info=info)


if __name__ == "__main__":
    app.run(main)
