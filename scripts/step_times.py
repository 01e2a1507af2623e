r"""Times a training step per model, XLA on and off, and in float32 and
mixed_bfloat16: the rule of `devices.fastest`.

    python scripts/step_times.py [--steps=24] [--rounds=3] \
        [--models=cifar10_conv_bernoulli,cifar10_conv_logistic_mixture] \
        [--jit_compile=false] [--mixed_precision=float32,mixed_bfloat16]

Each model trains in a fresh process on generated uint8 images (the step
does not depend on the pixels' values): a warm-up call with compilation,
then `--steps` timed steps. The rounds alternate the models and executions
(a, b, a, b, ...), so a load that comes and goes disturbs them alike; each
keeps its best round. Prints one JSON object: for each model, the seconds
per step in each execution, the fastest, and its ratio to the slowest; and
`logistic_mixture_over_bernoulli`, the step of configs/cifar10.flags over
the same network's with a Bernoulli likelihood, in each execution where
both ran. Compare ratios: they survive a busy machine better than times.
"""

import json
import subprocess
import sys

from absl import app, flags

flags.DEFINE_integer("steps", 24, "Timed training steps per model and execution.")
flags.DEFINE_integer("rounds", 1, "Alternating rounds; each run keeps its best.")
flags.DEFINE_list("models", None, "Models of MODELS to time (default: all).")
flags.DEFINE_list("jit_compile", ["true", "false"], "XLA on, off, or both.")
flags.DEFINE_list(
    "mixed_precision", ["float32"], "Keras dtype policies to time each model in."
)
FLAGS = flags.FLAGS

# configs/cifar10.flags' network.
_CIFAR10_NETWORK = dict(
    network="conv",
    conv_filters=(32, 64, 128),
    hidden_units=(),
    latent_dim=128,
    activation="relu",
)
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
    "cifar10_conv_bernoulli": ((32, 32, 3), _CIFAR10_NETWORK, 128),
    "cifar10_conv_logistic_mixture": (
        (32, 32, 3),
        {**_CIFAR10_NETWORK, "likelihood": "logistic_mixture"},
        128,
    ),
}

_ONE_RUN = """
import json, sys, time
import keras, numpy as np, tensorflow as tf
import tfvae
from tfvae import devices
shape, settings, batch, jit, policy, steps = json.loads(sys.argv[1])
keras.utils.set_random_seed(0)
with devices.dtype_policy(policy):
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


def _seconds_per_step(shape, settings, batch, jit: bool, policy: str) -> float:
    spec = json.dumps([shape, settings, batch, jit, policy, FLAGS.steps])
    result = subprocess.run(
        [sys.executable, "-c", _ONE_RUN, spec],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout.split()[-1])


def _execution_name(policy: str, jit: bool) -> str:
    return f"{policy}_{'xla' if jit else 'no_xla'}"


def main(argv):
    del argv
    names = FLAGS.models or list(MODELS)
    unknown = sorted(set(names) - set(MODELS))
    jits = sorted({value.lower() for value in FLAGS.jit_compile})
    if unknown or not set(jits) <= {"true", "false"}:
        raise app.UsageError(
            f"--models takes {sorted(MODELS)} and --jit_compile true and/or "
            f"false. Received: --models={unknown}, --jit_compile={jits}"
        )
    executions = [
        (policy, jit == "true") for policy in FLAGS.mixed_precision for jit in jits
    ]
    best = {}
    for _ in range(FLAGS.rounds):
        for name in names:
            shape, settings, batch = MODELS[name]
            for policy, jit in executions:
                seconds = _seconds_per_step(shape, settings, batch, jit, policy)
                key = (name, _execution_name(policy, jit))
                best[key] = min(best.get(key, seconds), seconds)
    results = {}
    for name in names:
        steps = {
            execution: round(seconds, 4)
            for (model_name, execution), seconds in best.items()
            if model_name == name
        }
        fastest, slowest = min(steps, key=steps.get), max(steps, key=steps.get)
        results[name] = {
            "network": MODELS[name][1].get("network", "mlp"),
            "s_per_step": steps,
            "fastest": fastest,
            "ratio": round(steps[slowest] / steps[fastest], 2),
        }
    pair = ("cifar10_conv_logistic_mixture", "cifar10_conv_bernoulli")
    if set(pair) <= set(names):
        results["logistic_mixture_over_bernoulli"] = {
            _execution_name(policy, jit): round(
                best[pair[0], _execution_name(policy, jit)]
                / best[pair[1], _execution_name(policy, jit)],
                2,
            )
            for policy, jit in executions
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    app.run(main)
