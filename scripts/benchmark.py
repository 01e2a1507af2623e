r"""Speed of a model given by train flags, against the hardware and a peer; prints JSON.

    python scripts/benchmark.py --flagfile=mnist.flags \
        --manual_dir=../shared/datasets/mnist --epochs=4 \
        --pyro_python=/tmp/pyro-venv/bin/python \
        --pyro_script=../shared/bench/pyro_vae.py \
        --keras_script=../shared/bench/keras_vae.py

Measures one after the other, in one process (the peer in a subprocess):

- training: `train_and_evaluate` in a temporary run directory, exactly as
  `python -m tfvae.train` runs it (input pipeline, callbacks, validation):
  examples/s at steady state (epochs after the first), the first epoch apart
  (it pays for tracing and compilation), in the execution the flags resolve
  to (`mixed_precision`, `jit_compile`: `tfvae/devices.py`); then in float32
  with XLA, tfvae's default before `--mixed_precision=auto`
  (`speedup_vs_float32_xla`), unless --nocompare_float32 or the run is that
  already; then once more with --jit_compile flipped (`xla_speedup`), unless
  --nocompare_xla; then on the IWAE bound
  with k = --compare_iwae_samples samples per example (`iwae_epoch_cost`:
  its seconds per epoch over the ELBO's; the decoder runs once on all
  k * batch samples, so the ratio stays near the k-fold products' cost).
- the matrix-product floor: the time of the model's dense-layer products
  alone for one epoch (forward, weight gradients, input gradients but for the
  first layer), `tf.matmul` in a compiled loop, with and without XLA, in
  float32 and in bfloat16, measured before and after training (the best time
  counts). `fraction_of_matmul_floor` = the floor in the training run's
  format / training time per epoch: a ratio to what the CPU can do, which a
  busy machine disturbs less than it does absolute times.
- the step alone: one epoch of the model's own `train_step` (Adam, metrics,
  noise) in one compiled loop over batches already in memory, no `fit`: how
  far the step's own ops are from the floor, and what `fit` adds to it
  (`fit_overhead`); unless --nocompare_formats, also in float32 and
  mixed_bfloat16, XLA and not (`s_per_epoch_by_execution`).
- the input paths, unless --nocompare_input: training in a fresh process on
  the in-memory path and on the streaming path (`--memory_budget=0`), each
  with its examples/s and its peak RSS (`streaming_vs_in_memory`: the ratio
  of their examples/s), and each pipeline alone, one epoch of batches with
  no model (`input_pipeline_examples_per_s`).
- evaluation: `model.evaluate` on the test split, examples/s, XLA on and off.
- serving: the run's SavedModel loaded with `tf.saved_model.load`, p50 and p99
  latency of its `encode` and `decode` signatures at batch 1 and 256.
- peak memory: max RSS after training and at the end.
- with --pyro_python and --pyro_script: first, the Pyro VAE tutorial's model
  (`pyro_vae.py`, run by that interpreter, e.g. a separate virtualenv with
  torch and pyro-ppl) on the same data, and `speedup_vs_pyro`.
- with --keras_script: then the same model as a Keras user writes it by hand
  (`keras_vae.py`: keras-io's vae.py style, a subclassed `keras.Model` with
  its own `train_step`, no TFP), and `speedup_vs_keras`.

Timings on a shared machine are noisy: check the load first (the JSON records
the load average at the start and the end) and compare the ratios of one run,
not absolute figures across runs.
"""

import contextlib
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import typing

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from tfvae import builder as model_builder
from tfvae import config as config_lib
from tfvae import (
    data,
    devices,
    errors,
    fields,
    model,
    run_dir,
    saved_model,
    splits,
    streaming,
    training,
)

# The model's settings are tfvae.train's flags.
fields.define_flags(config_lib.Config)
# Show them in this command's --help, not only in --helpfull.
flags.adopt_module_key_flags(fields)

flags.DEFINE_bool(
    "compare_xla", True, "Also train with --jit_compile flipped (xla_speedup)."
)
flags.DEFINE_bool(
    "compare_formats",
    True,
    "Also time the step alone in float32 and mixed_bfloat16, XLA and not.",
)
flags.DEFINE_bool(
    "compare_float32",
    True,
    "Also train in float32 with XLA, when the run's execution differs "
    "(speedup_vs_float32_xla).",
)
flags.DEFINE_integer(
    "compare_iwae_samples",
    5,
    "Also train on the IWAE bound with this k (iwae_epoch_cost); 0 skips it.",
    lower_bound=0,
)
flags.DEFINE_bool(
    "compare_input",
    True,
    "Also train in fresh processes on the in-memory and the streaming input "
    "paths, and time each pipeline alone.",
)
flags.DEFINE_integer(
    "repeats", 5, "Timed repetitions of the floor and of evaluation.", lower_bound=1
)
flags.DEFINE_integer(
    "latency_calls", 200, "Timed calls per signature and batch size.", lower_bound=1
)
flags.DEFINE_string(
    "pyro_python", None, "Python interpreter with torch and pyro-ppl installed."
)
flags.DEFINE_string("pyro_script", None, "Path of the peer's pyro_vae.py.")
flags.DEFINE_integer("pyro_epochs", 3, "Epochs of the peer.", lower_bound=2)
flags.DEFINE_string(
    "keras_script",
    None,
    "Path of the hand-written Keras peer, keras_vae.py (run by this interpreter; "
    "needs --manual_dir).",
)
flags.DEFINE_integer("keras_epochs", 3, "Epochs of the Keras peer.", lower_bound=2)

FLAGS = flags.FLAGS

# What pyro_vae.py trains; a comparison needs the same model.
_TUTORIAL_MODEL = {
    "dataset": "mnist",
    "network": "mlp",
    "hidden_units": (400,),
    "latent_dim": (50,),
    "posterior": "diag",
    "likelihood": "bernoulli",
}
_TRAIN_KEYS = (
    "train_examples_per_s",
    "seconds_per_epoch",
    "first_epoch_s",
    "mixed_precision",
    "jit_compile",
)
# tfvae's default before `--mixed_precision=auto`: the baseline of `speedup_vs_float32`.
_FLOAT32_XLA = devices.Execution("float32", jit_compile=True)
_LATENCY_BATCH_SIZES = (1, 256)
# Untimed calls before the timed ones: the first call of a signature builds
# its function.
_WARMUP_CALLS = 10


def _peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    # ru_maxrss is in KiB on Linux.
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)


class _Product(typing.NamedTuple):
    """One matrix product a @ b of a training step, as `tf.matmul` takes it."""

    a_shape: tuple[int, int]
    b_shape: tuple[int, int]
    transpose_a: bool
    transpose_b: bool

    @property
    def flops(self) -> int:
        columns = self.b_shape[0] if self.transpose_b else self.b_shape[1]
        return 2 * self.a_shape[0] * self.a_shape[1] * columns


def _step_products(kernel_shapes, batch_size: int) -> list[_Product]:
    """Returns the matrix products of one training step of dense layers.

    For each layer x[B, n] @ W[n, m], in data-flow order: the forward product,
    the weight gradient x^T @ dy and, but for the first layer (whose input is
    data), the input gradient dy @ W^T.
    """
    products = []
    for index, (n, m) in enumerate(kernel_shapes):
        products.append(_Product((batch_size, n), (n, m), False, False))
        products.append(_Product((batch_size, n), (batch_size, m), True, False))
        if index:
            products.append(_Product((batch_size, m), (n, m), False, True))
    return products


# The number formats of the floor, and the training policies computing in each.
_FLOOR_FORMATS = {"float32": tf.float32, "bfloat16": tf.bfloat16}


def _floor_format(policy: str) -> str:
    """Returns the format of `_FLOOR_FORMATS` a dtype policy's products run in."""
    return "bfloat16" if policy == "mixed_bfloat16" else "float32"


class _MatmulFloor:
    """A model's dense-layer products alone, in compiled loops, XLA and not,
    in float32 and in bfloat16.

    The time of one epoch of them is what the CPU needs for the model's
    matrix products in that format; nothing that trains the model in that
    format can be faster.
    """

    def __init__(self, vae: model.VAE, batch_size: int, steps_per_epoch: int):
        # Dense kernels are the model's 2-D weights, in data-flow order.
        kernels = [tuple(w.shape) for w in vae.trainable_weights if len(w.shape) == 2]
        self.products = _step_products(kernels, batch_size)
        self.steps_per_epoch = steps_per_epoch
        self.loops = {
            f"{name}_{xla}": self._loop(jit_compile, dtype)
            for name, dtype in _FLOOR_FORMATS.items()
            for xla, jit_compile in (("xla", True), ("no_xla", False))
        }

    @property
    def gflop_per_step(self) -> float:
        return sum(p.flops for p in self.products) / 1e9

    def seconds_per_epoch(self, repeats: int) -> dict[str, float]:
        """Returns the best of `repeats` epochs, in s, by "<format>_xla" and
        "<format>_no_xla"."""
        steps = tf.constant(self.steps_per_epoch)
        return {
            name: _best_seconds(lambda loop=loop: loop(steps).numpy(), repeats)
            for name, loop in self.loops.items()
        }

    def _loop(self, jit_compile: bool, dtype: tf.DType):
        operands = [
            (
                tf.Variable(tf.random.normal(p.a_shape, dtype=dtype)),
                tf.Variable(tf.random.normal(p.b_shape, dtype=dtype)),
            )
            for p in self.products
        ]

        @tf.function(jit_compile=jit_compile, autograph=False)
        def loop(steps):
            def body(step, total):
                # Scaling by the running total makes every step depend on the
                # one before, so no compiler can hoist the products out of the
                # loop or drop them; the sums cost one pass over each output.
                scale = tf.cast(1.0 + total * 1e-30, dtype)
                for (a, b), product in zip(operands, self.products, strict=True):
                    c = tf.matmul(
                        a * scale,
                        b,
                        transpose_a=product.transpose_a,
                        transpose_b=product.transpose_b,
                    )
                    total += tf.cast(tf.reduce_sum(c), tf.float32) * 1e-30
                return step + 1, total

            return tf.while_loop(
                lambda step, _: step < steps, body, (tf.constant(0), tf.constant(0.0))
            )[1]

        loop(tf.constant(1)).numpy()  # Traces and compiles.
        return loop


def _step_loop_seconds(
    config, execution: devices.Execution, shape, train_images, repeats: int
) -> float:
    """Returns the best time of one epoch of `VAE.train_step` in one compiled loop.

    `train_images` is the training split, `uint8 [N, H, W, C]`; the epoch is
    its first N // batch_size batches, in order, read from a variable. The
    step runs in `execution`'s format, compiled by XLA or not as it says.
    """
    with devices.dtype_policy(execution.mixed_precision):
        vae = model_builder.build_vae(
            shape, seed=config.seed, **config.model_settings()
        )
    vae.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    vae.optimizer.build(vae.trainable_weights)
    steps, batch = len(train_images) // config.batch_size, config.batch_size
    images = tf.Variable(train_images[: steps * batch], trainable=False)

    @tf.function(jit_compile=execution.jit_compile, autograph=False)
    def epoch():
        def body(step, total):
            start = tf.stack([step * batch, 0, 0, 0])
            logs = vae.train_step(tf.slice(images, start, [batch, *shape]))
            return step + 1, total + logs["neg_elbo"]

        return tf.while_loop(
            lambda step, _: step < steps, body, (tf.constant(0), tf.constant(0.0))
        )[1]

    epoch().numpy()  # Traces and compiles.
    return _best_seconds(lambda: epoch().numpy(), repeats)


def _best_seconds(run, repeats: int) -> float:
    """Returns the shortest of `repeats` timed calls of `run()`, in s."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def _train(config, model_dir: str, **overrides) -> dict:
    metrics = training.train_and_evaluate(
        dataclasses.replace(config, model_dir=model_dir, export=False, **overrides)
    )
    return _train_figures(metrics)


def _train_figures(metrics: dict) -> dict:
    """Returns the figures a training run's `metrics.json` gives the report."""
    return {key: metrics[key] for key in _TRAIN_KEYS} | {
        "test_neg_elbo": round(metrics["test_neg_elbo"], 2)
    }


def _eval_examples_per_s(vae, test_ds, num_test: int, repeats: int) -> dict:
    """Returns `model.evaluate` examples/s on `test_ds`, XLA on and off."""
    result = {}
    for name, jit_compile in (("xla", True), ("no_xla", False)):
        vae.compile(jit_compile=jit_compile)
        vae.evaluate(test_ds, verbose=0)  # Traces and compiles.
        seconds = _best_seconds(lambda: vae.evaluate(test_ds, verbose=0), repeats)
        result[name] = round(num_test / seconds, 1)
    return result


def _latency_ms(signature, inputs: dict, calls: int) -> dict:
    """Returns p50 and p99 of a signature's latency, in ms, outputs in hand."""
    times = []
    for call in range(_WARMUP_CALLS + calls):
        start = time.perf_counter()
        outputs = signature(**inputs)
        for value in outputs.values():
            value.numpy()
        if call >= _WARMUP_CALLS:
            times.append((time.perf_counter() - start) * 1e3)
    p50, p99 = np.percentile(times, [50, 99])
    return {"p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3)}


def _serving_latency(path: str, test_images: tf.Tensor, calls: int) -> dict:
    """Returns encode and decode latencies of the SavedModel at `path`."""
    loaded = tf.saved_model.load(path)
    encode, decode = loaded.signatures["encode"], loaded.signatures["decode"]
    result = {}
    for batch in _LATENCY_BATCH_SIZES:
        images = test_images[:batch]
        z = encode(images=images)["z"]
        result[f"encode_batch_{batch}"] = _latency_ms(encode, {"images": images}, calls)
        result[f"decode_batch_{batch}"] = _latency_ms(decode, {"z": z}, calls)
    return result


def _peer(command: list[str]) -> dict:
    """Runs a peer script; returns its steady-state throughput.

    The peer prints one JSON line per epoch with `examples_per_s`, its
    training seconds (`train_s` or `seconds`) and `test_neg_elbo`.
    """
    logging.info("Running the peer: %s", " ".join(command))
    output = subprocess.run(command, check=True, capture_output=True, text=True)
    epochs_run = [
        json.loads(line) for line in output.stdout.splitlines() if line.startswith("{")
    ]
    seconds_of = [e.get("train_s", e.get("seconds")) for e in epochs_run]
    steady = list(zip(epochs_run[1:], seconds_of[1:], strict=True))
    # As tfvae's figure: all examples of the steady epochs over their time.
    seconds = sum(s for _, s in steady)
    examples = sum(e["examples_per_s"] * s for e, s in steady)
    return {
        "train_examples_per_s": round(examples / seconds, 1),
        "seconds_per_epoch": round(seconds / len(steady), 3),
        "first_epoch_s": seconds_of[0],
        "test_neg_elbo": epochs_run[-1]["test_neg_elbo"],
        "epochs": len(epochs_run),
    }


def _pyro(config, python: str, script: str, epochs: int) -> dict:
    """Runs the Pyro peer; returns its throughput and its peak memory."""
    command = [python, script, f"--epochs={epochs}", f"--batch={config.batch_size}"]
    if config.binarize:
        command.append("--binarize")
    if config.manual_dir:
        command.append(f"--data={config.manual_dir}")
    # The largest child waited for so far: the Pyro peer runs first.
    return _peer(command) | {"peak_rss_mb": _peak_rss_mb(resource.RUSAGE_CHILDREN)}


def _keras(config, script: str, epochs: int) -> dict:
    """Runs the hand-written Keras peer (this interpreter); returns its throughput."""
    return _peer(
        [sys.executable, script, f"--data={config.manual_dir}", f"--epochs={epochs}"]
    )


# Trains a config given as JSON in a fresh process, then prints its peak RSS
# in KiB: VmHWM, not getrusage's ru_maxrss, which a child inherits from the
# process that started it.
_CHILD = """
import json, sys
from tfvae import config, training
training.train_and_evaluate(config.Config.from_dict(json.loads(sys.argv[1])))
with open("/proc/self/status") as f:
    print(next(l.split()[1] for l in f if l.startswith("VmHWM:")), file=sys.stderr)
"""


def _train_in_a_process(config, model_dir: str, **overrides) -> dict:
    """Trains in a fresh process; returns its throughput and its peak RSS."""
    child = dataclasses.replace(config, model_dir=model_dir, export=False, **overrides)
    output = subprocess.run(
        [sys.executable, "-c", _CHILD, child.to_json()],
        check=True,
        capture_output=True,
        text=True,
    )
    return _train_figures(run_dir.read_metrics(model_dir)) | {
        "peak_rss_mb": round(int(output.stderr.splitlines()[-1]) / 1024, 1)
    }


def _pipeline_examples_per_s(batches: tf.data.Dataset, steps: int, rows: int) -> float:
    """Returns examples/s of `steps` batches of `batches`, after one epoch's warm-up."""
    iterator = iter(batches)
    for _ in range(steps):
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return round(steps * rows / (time.perf_counter() - start), 1)


def _compare_input(config, builder, work_dir: str) -> dict:
    """Returns the two input paths' training and pipeline-alone figures."""
    report = {
        name: _train_in_a_process(
            config, os.path.join(work_dir, name), memory_budget=budget
        )
        for name, budget in (("in_memory", "100%"), ("streaming", "0"))
    }
    report["streaming_vs_in_memory"] = round(
        report["streaming"]["train_examples_per_s"]
        / report["in_memory"]["train_examples_per_s"],
        3,
    )
    records = streaming.decoded_records(builder, splits.TRAIN_SPLIT)
    steps = streaming.streamed_steps(records.lengths, config.batch_size)
    pipelines = {
        "in_memory": data.shuffled_batches(
            data.load_split(builder, splits.TRAIN_SPLIT), config.batch_size, config.seed
        ),
        "streaming": streaming.streamed_batches(
            records, config.batch_size, config.seed, 0, config.shuffle_buffer
        ),
    }
    report["input_pipeline_examples_per_s"] = {
        name: _pipeline_examples_per_s(batches, steps, config.batch_size)
        for name, batches in pipelines.items()
    }
    return report


def _measure(config) -> dict:
    """Runs every measurement; returns the report."""
    report = {
        "dataset": config.dataset_name,
        "network": config.network,
        "hidden_units": list(config.hidden_units),
        "latent_dim": config.latent_dim,
        "likelihood": config.likelihood,
        "batch_size": config.batch_size,
        "epochs": config.epochs,
        "steps_per_execution": config.steps_per_execution,
        "cpus": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }
    if FLAGS.pyro_python:
        report["pyro"] = _pyro(
            config, FLAGS.pyro_python, FLAGS.pyro_script, FLAGS.pyro_epochs
        )
    if FLAGS.keras_script:
        report["keras"] = _keras(config, FLAGS.keras_script, FLAGS.keras_epochs)
    builder, info = data.prepare(
        config.dataset, config.data_dir, config.manual_dir, config.image_source
    )
    floor = _MatmulFloor(
        model_builder.build_vae(
            info.image_shape, seed=config.seed, **config.model_settings()
        ),
        config.batch_size,
        info.num_train // config.batch_size,
    )
    floor_before = floor.seconds_per_epoch(FLAGS.repeats)
    execution = devices.resolve(
        config.mixed_precision, config.jit_compile, config.network
    )
    with tempfile.TemporaryDirectory() as work_dir:
        model_dir = os.path.join(work_dir, "run")
        report.update(_train(config, model_dir))
        report["peak_rss_mb_training"] = _peak_rss_mb()
        # The floor is a floor: the best of before and after training.
        floor_after = floor.seconds_per_epoch(FLAGS.repeats)
        floor_s = {name: min(t, floor_after[name]) for name, t in floor_before.items()}
        # The training run's format sets which floor its ratio is to.
        floor_format = _floor_format(execution.mixed_precision)
        best = min(t for name, t in floor_s.items() if name.startswith(floor_format))
        report["matmul_floor_s_per_epoch"] = round(best, 3)
        report["matmul_floor"] = {
            "format": floor_format,
            **{f"s_per_epoch_{name}": round(t, 3) for name, t in floor_s.items()},
            "gflop_per_step": round(floor.gflop_per_step, 3),
            "gflop_per_s": round(
                floor.gflop_per_step * floor.steps_per_epoch / best, 1
            ),
        }
        report["fraction_of_matmul_floor"] = round(
            best / report["seconds_per_epoch"], 3
        )
        train_images = data.load_split(builder, splits.TRAIN_SPLIT)
        step_s = _step_loop_seconds(
            config, execution, info.image_shape, train_images, FLAGS.repeats
        )
        report["step_alone"] = {
            "s_per_epoch": round(step_s, 3),
            "fraction_of_matmul_floor": round(best / step_s, 3),
            "fit_overhead": round(report["seconds_per_epoch"] / step_s, 3),
        }
        if FLAGS.compare_formats:
            # The step in every format, XLA and not: what `auto` chooses from.
            report["step_alone"]["s_per_epoch_by_execution"] = {
                f"{policy}_{'xla' if jit else 'no_xla'}": round(
                    _step_loop_seconds(
                        config,
                        devices.Execution(policy, jit),
                        info.image_shape,
                        train_images,
                        FLAGS.repeats,
                    ),
                    3,
                )
                for policy in ("float32", "mixed_bfloat16")
                for jit in (True, False)
            }
        for peer in ("pyro", "keras"):
            if peer in report:
                report[f"speedup_vs_{peer}"] = round(
                    report["train_examples_per_s"]
                    / report[peer]["train_examples_per_s"],
                    2,
                )
        if FLAGS.compare_float32 and execution != _FLOAT32_XLA:
            baseline = _train(
                config,
                os.path.join(work_dir, "float32"),
                mixed_precision=_FLOAT32_XLA.mixed_precision,
                jit_compile=_FLOAT32_XLA.jit_compile,
            )
            report["float32_xla"] = baseline
            report["speedup_vs_float32_xla"] = round(
                report["train_examples_per_s"] / baseline["train_examples_per_s"], 3
            )
        if FLAGS.compare_xla:
            flipped = _train(
                config,
                os.path.join(work_dir, "flipped"),
                jit_compile=not execution.jit_compile,
            )
            xla, no_xla = (
                (report, flipped) if execution.jit_compile else (flipped, report)
            )
            report["jit_compile_flipped"] = flipped
            report["xla_speedup"] = round(
                xla["train_examples_per_s"] / no_xla["train_examples_per_s"], 3
            )
        if FLAGS.compare_iwae_samples and config.objective == "elbo":
            iwae = _train(
                config,
                os.path.join(work_dir, "iwae"),
                objective="iwae",
                train_samples=FLAGS.compare_iwae_samples,
                kl="monte_carlo",
            )
            report["iwae"] = {"k": FLAGS.compare_iwae_samples, **iwae}
            report["iwae_epoch_cost"] = round(
                iwae["seconds_per_epoch"] / report["seconds_per_epoch"], 3
            )

        if FLAGS.compare_input:
            report["input"] = _compare_input(config, builder, work_dir)

        run_config, _, vae = run_dir.load_run(model_dir)
        test_split = data.split_images(builder, splits.TEST_SPLIT)
        test_ds = data.test_batches(builder, config.batch_size)
        report["eval_examples_per_s"] = _eval_examples_per_s(
            vae, test_ds, info.num_test, FLAGS.repeats
        )
        path = saved_model.export(
            vae,
            os.path.join(work_dir, "export"),
            config=run_config,
            dataset_info=info,
        )
        # Batches of up to 256, whatever the training batch size.
        test_images = next(iter(test_split.batch(max(_LATENCY_BATCH_SIZES))))
        report["serving_latency"] = _serving_latency(
            path, test_images, FLAGS.latency_calls
        )
    report["peak_rss_mb"] = _peak_rss_mb()
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


@errors.reported
def main(argv):
    del argv
    config = fields.from_flags(config_lib.Config)
    if config.network != "mlp":
        raise errors.UsageError(
            f"--network={config.network}: the matrix-product floor counts dense "
            "layers only, so its ratio would be meaningless. Benchmark "
            "--network=mlp."
        )
    if config.epochs < 2:
        raise errors.UsageError(
            "--epochs must be at least 2 to measure a steady state."
        )
    if bool(FLAGS.pyro_python) != bool(FLAGS.pyro_script):
        raise errors.UsageError("--pyro_python and --pyro_script go together.")
    if (FLAGS.pyro_python or FLAGS.keras_script) and _TUTORIAL_MODEL != {
        name: getattr(config, name) for name in _TUTORIAL_MODEL
    }:
        raise errors.UsageError(
            f"The peers are the tutorial's model, {_TUTORIAL_MODEL}: compare "
            "them with the same configuration (--flagfile=mnist.flags)."
        )
    if FLAGS.keras_script and not config.manual_dir:
        raise errors.UsageError(
            "--keras_script reads the original MNIST files: add "
            "--manual_dir=FOLDER (e.g. ../shared/datasets/mnist)."
        )
    # Keras's progress bars print to stdout; the JSON alone goes there.
    with contextlib.redirect_stdout(sys.stderr):
        report = _measure(config)
    sys.stdout.write(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    app.run(main)
