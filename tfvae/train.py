r"""Trains a VAE on a TFDS image dataset: `python -m tfvae.train --flagfile=FILE`.

The flags are `tfvae.config.Config`'s fields (`--helpfull` lists them). They
are checked up front and turned once into a frozen `Config`;
`tfvae.training.train_and_evaluate(config)` does the rest (and can be called
from Python). What lands in `--model_dir`: see `tfvae.run_dir`.
"""

from absl import app, flags

from tfvae import config as config_lib
from tfvae import errors, fields, training

fields.define_flags(config_lib.Config)
# Show them in this command's --help, not only in --helpfull.
flags.adopt_module_key_flags(fields)


@errors.reported
def main(argv):
    if len(argv) > 1:
        raise errors.UsageError(f"Unexpected arguments: {argv[1:]}")
    training.train_and_evaluate(fields.from_flags(config_lib.Config))


if __name__ == "__main__":
    app.run(main)
