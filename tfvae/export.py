r"""Exports a trained run as a SavedModel: `python -m tfvae.export --model_dir=RUN`.

Writes `<export_dir>/<version>/`, the next free integer version, the layout
TF Serving watches. The model is rebuilt from the run's config.json,
dataset.json and model.weights.h5, outside any distribution strategy, so
whatever trained it, the export loads on any device count. Signatures and
seeds: see `tfvae.saved_model`; serving it: export/README.md.

Do not import this module next to `tfvae.train`: both define --model_dir and
--export_dir.
"""

from absl import app, flags

from tfvae import model, saved_model

flags.DEFINE_string("model_dir", None, "Run directory written by tfvae.train.")
flags.DEFINE_string(
    "export_dir",
    None,
    "TF Serving model base path: the SavedModel goes to <export_dir>/<version>. "
    "Unset means the run's own --export_dir (see its config.json).",
)

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS.model_dir:
        raise app.UsageError("--model_dir is required (a tfvae.train run directory).")
    config, info, vae = model.load_vae(FLAGS.model_dir)
    saved_model.export(vae, config, info, FLAGS.export_dir or config.export_dir)


if __name__ == "__main__":
    app.run(main)
