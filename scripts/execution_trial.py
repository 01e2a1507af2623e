r"""Times a training step with XLA on and off, per model: the rule of `devices.FASTEST`.

    python scripts/execution_trial.py [--steps=24]

Each model trains in a fresh process on generated uint8 images (the step
does not depend on the pixels' values): a warm-up call with compilation,
then `--steps` timed steps. Prints one JSON object: for each model, the
seconds per step with XLA and without, and which is faster. Run it with
nothing else on the machine; compare the ratios.
"""

import json
import subprocess
import sys

from absl import app, flags

flags.DEFINE_integer("steps", 24, "Timed training steps per model and execution.")
FLAGS = flags.FLAGS

# name: (image shape, build_vae settings, batch): the tutorial's MLP,
# keras-io's convolutional VAE, and configs/cifar10.flags' network with a
# Bernoulli and with its own logistic-mixture likelihood.
MODELS = {
    "mnist_mlp": ((28, 28, 1), {}, 256),
    "kerasio_conv": (
        (28, 28, 1),
        dict(
            network="conv",
            conv_filters=(32, 64),
            hidden_units=(16,),
            latent_dim=2,
            activation="relu",
        ),
        128,
    ),
    "cifar10_conv_bernoulli": (
        (32, 32, 3),
        dict(
            network="conv",
            conv_filters=(32, 64, 128),
            hidden_units=(),
            latent_dim=128,
            activation="relu",
        ),
        128,
    ),
    "cifar10_conv_logistic_mixture": (
        (32, 32, 3),
        dict(
            network="conv",
            conv_filters=(32, 64, 128),
            hidden_units=(),
            latent_dim=128,
            activation="relu",
            likelihood="logistic_mixture",
        ),
        128,
    ),
}

_ONE_RUN = """
import json, sys, time
import keras, numpy as np, tensorflow as tf
import tfvae
shape, settings, batch, jit, steps = json.loads(sys.argv[1])
keras.utils.set_random_seed(0)
vae = tfvae.build_vae(tuple(shape), **settings)
vae.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit,
            steps_per_execution=4)
images = np.random.RandomState(0).randint(0, 256, (batch * 8, *shape), np.uint8)
batches = tf.data.Dataset.from_tensor_slices(images).batch(batch).repeat()
vae.fit(batches, steps_per_epoch=8, epochs=1, verbose=0)
start = time.perf_counter()
vae.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0)
print((time.perf_counter() - start) / steps)
"""


def _seconds_per_step(shape, settings, batch, jit: bool) -> float:
    spec = json.dumps([shape, settings, batch, jit, FLAGS.steps])
    result = subprocess.run(
        [sys.executable, "-c", _ONE_RUN, spec],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout.split()[-1])


def main(argv):
    del argv
    results = {}
    for name, (shape, settings, batch) in MODELS.items():
        xla, plain = (
            _seconds_per_step(shape, settings, batch, jit) for jit in (True, False)
        )
        results[name] = {
            "network": settings.get("network", "mlp"),
            "s_per_step_xla": round(xla, 4),
            "s_per_step_no_xla": round(plain, 4),
            "faster": "xla" if xla < plain else "no_xla",
            "ratio": round(max(xla, plain) / min(xla, plain), 2),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    app.run(main)
