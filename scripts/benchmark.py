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
  (it pays for tracing and compilation), in the execution the run settles
  (`mixed_precision`, `jit_compile`, and in `execution` how they were
  chosen, with a timed trial's figures: `tfvae/execution_trial.py`); then in float32
  with XLA, tfvae's default before `--mixed_precision=auto`
  (`speedup_vs_float32_xla`), unless --nocompare_float32 or the run is that
  already; then once more with --jit_compile flipped (`xla_speedup`), unless
  --nocompare_xla; then on the IWAE bound
  with k = --compare_iwae_samples samples per example (`iwae_epoch_cost`:
  its seconds per epoch over the ELBO's; the decoder runs once on all
  k * batch samples, so the ratio stays near the k-fold products' cost).
- the product floor: the time of the model's products alone for one epoch,
  in a compiled loop, with and without XLA (without only for a convolutional
  model: XLA's CPU convolutions are far slower), in float32 and in bfloat16,
  measured before and after training (the best time counts). Every Dense
  layer's matrix products and every Conv2D and Conv2DTranspose layer's
  convolutions, each forward, for its kernel's gradient and for its input's
  gradient (but the encoder's first layer's, whose input is data).
  `fraction_of_product_floor` = the floor in the training run's format /
  training time per epoch: a ratio to what the CPU can do, which a busy
  machine disturbs less than it does absolute times.
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
  its own `train_step`, no TFP), and `speedup_vs_keras`; with --network=conv,
  keras-io's own convolutional VAE (`keras_vae.py --conv`), which tfvae
  matches with `--network=conv --conv_filters=32,64 --hidden_units=16
  --latent_dim=2 --activation=relu --batch_size=128`.

With --generated_shape=H,W,C (e.g. 32,32,3 with configs/cifar10.flags, whose
dataset need not be on the machine), it trains on generated uint8 images
instead (`--generated_examples` per epoch, Keras's `fit` compiled as training
compiles it, in the execution a long run would settle: the timed trial
runs however few the epochs) and measures the floor,
training, with --jit_compile flipped
unless --nocompare_xla, and the step alone: the step does not depend on the
pixels' values.

Timings on a shared machine are noisy: check the load first (the JSON records
the load average at the start and the end) and compare the ratios of one run,
not absolute figures across runs.
"""

import contextlib
import dataclasses
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import typing

import keras
import numpy as np
import table_benchmark
import tensorflow as tf
from absl import app, flags, logging

from tfvae import builder as model_builder
from tfvae import config as config_lib
from tfvae import (
    data,
    devices,
    errors,
    execution_trial,
    fields,
    fitting,
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
flags.DEFINE_list(
    "generated_shape",
    None,
    "H,W,C: train on generated uint8 images of this shape instead of the "
    "dataset (e.g. 32,32,3 for configs/cifar10.flags): the floor, training "
    "with --jit_compile as resolved and flipped, and the step alone.",
)
flags.DEFINE_integer(
    "generated_examples",
    6144,
    "Training examples per epoch with --generated_shape.",
    lower_bound=1,
)

flags.DEFINE_enum(
    "model",
    "image",
    ["image", "table"],
    "image: the flags' image model; table: a table VAE of the flags' sizes "
    "on generated tables (scripts/table_benchmark.py).",
)

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
# What keras_vae.py trains, by --network: the tutorial's model, and with
# --conv keras-io's convolutional VAE (its vae.py).
_KERAS_PEER_MODELS = {
    "mlp": _TUTORIAL_MODEL,
    "conv": {
        "dataset": "mnist",
        "network": "conv",
        "conv_filters": (32, 64),
        "hidden_units": (16,),
        "latent_dim": (2,),
        "activation": "relu",
        "posterior": "diag",
        "likelihood": "bernoulli",
        "batch_size": 128,
    },
}
_TRAIN_KEYS = (
    "train_examples_per_s",
    "seconds_per_epoch",
    "first_epoch_s",
    "mixed_precision",
    "jit_compile",
    "execution",
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


# The layers whose products the floor counts: what a training step spends
# its arithmetic on.
_PRODUCT_LAYERS = (
    keras.layers.Dense,
    keras.layers.Conv2D,
    keras.layers.Conv2DTranspose,
)


class _Product(typing.NamedTuple):
    """One product of a training step: a matrix product or a convolution.

    `compute(operands)` runs it on operands of `shapes` (the first one is
    scaled by the loop, so each step depends on the one before).
    """

    shapes: tuple[tuple[int, ...], ...]
    compute: typing.Callable[[list[tf.Tensor]], tf.Tensor]
    flops: int
    convolution: bool = False


def _dense_products(rows: int, n: int, m: int, input_gradient: bool) -> list[_Product]:
    """x[rows, n] @ W[n, m]: forward, weight gradient x^T @ dy, input gradient
    dy @ W^T."""
    flops = 2 * rows * n * m
    products = [
        _Product(((rows, n), (n, m)), lambda o: tf.matmul(o[0], o[1]), flops),
        _Product(
            ((rows, n), (rows, m)),
            lambda o: tf.matmul(o[0], o[1], transpose_a=True),
            flops,
        ),
    ]
    if input_gradient:
        products.append(
            _Product(
                ((rows, m), (n, m)),
                lambda o: tf.matmul(o[0], o[1], transpose_b=True),
                flops,
            )
        )
    return products


def _conv_products(
    small: tuple[int, ...],
    large: tuple[int, ...],
    kernel: tuple[int, ...],
    strides: tuple[int, int],
    padding: str,
) -> list[_Product]:
    """The three convolutions between a large and a small feature map.

    A convolution maps `large` [B, H, W, C] to `small` [B, h, w, c] with
    `kernel` [kh, kw, C, c] (Keras's Conv2D layout); a transposed convolution
    maps small to large with the same kernel (Keras's Conv2DTranspose stores
    [kh, kw, C, c] too, as [kh, kw, out, in]). Either way a training step runs
    large -> small (conv2d), small -> large (conv2d_backprop_input) and the
    kernel's gradient from both (conv2d_backprop_filter), each
    2 B h w kh kw C c FLOPs.
    """
    batch, height, width, _ = small
    flops = 2 * batch * height * width * math.prod(kernel)
    strides = [1, *strides, 1]
    padding = padding.upper()
    return [
        _Product(
            (large, kernel),
            lambda o: tf.nn.conv2d(o[0], o[1], strides, padding),
            flops,
            convolution=True,
        ),
        _Product(
            (small, kernel),
            lambda o: tf.nn.conv2d_transpose(o[0], o[1], large, strides, padding),
            flops,
            convolution=True,
        ),
        _Product(
            (large, small),
            lambda o: tf.raw_ops.Conv2DBackpropFilter(
                input=o[0],
                filter_sizes=kernel,
                out_backprop=o[1],
                strides=strides,
                padding=padding,
            ),
            flops,
            convolution=True,
        ),
    ]


def _step_products(vae: model.VAE, batch_size: int) -> list[_Product]:
    """Returns the products of one training step of `vae`'s layers.

    Every Dense, Conv2D and Conv2DTranspose layer at `batch_size` rows, each
    with its forward product, its kernel's gradient and its input's gradient,
    but for the input gradient of the encoder's first layer (its input is
    data). A convolution's input gradient is the transposed convolution of
    its output gradient, and the other way round, so both kinds count the
    same three products (`_conv_products`).
    """
    body = vae.encoder.body
    data_layer = next(
        (
            layer
            for layer in getattr(body, "layers", ())
            if isinstance(layer, _PRODUCT_LAYERS)
        ),
        None,
    )
    products = []
    for layer in vae._flatten_layers(include_self=False):
        if not isinstance(layer, _PRODUCT_LAYERS):
            continue
        # What the layer was built on, batch 1 (the VAE builds on one example).
        shape = (batch_size, *layer._build_shapes_dict["input_shape"][1:])
        output = (batch_size, *layer.compute_output_shape(shape)[1:])
        kernel = tuple(layer.kernel.shape)
        if isinstance(layer, keras.layers.Dense):
            rows = math.prod(shape[:-1])
            products += _dense_products(
                rows, kernel[0], kernel[1], layer is not data_layer
            )
            continue
        if tuple(layer.dilation_rate) != (1, 1) or getattr(layer, "groups", 1) != 1:
            raise ValueError(
                f"The floor counts plain convolutions; layer {layer.name} has "
                f"dilation_rate={layer.dilation_rate} or groups."
            )
        transposed = isinstance(layer, keras.layers.Conv2DTranspose)
        small, large = (shape, output) if transposed else (output, shape)
        convs = _conv_products(small, large, kernel, layer.strides, layer.padding)
        # The data layer's input gradient: small -> large for a convolution.
        products += convs if layer is not data_layer else [convs[0], convs[2]]
    return products


# The number formats of the floor, and the training policies computing in each.
_FLOOR_FORMATS = {"float32": tf.float32, "bfloat16": tf.bfloat16}


def _floor_format(policy: str) -> str:
    """Returns the format of `_FLOOR_FORMATS` a dtype policy's products run in."""
    return "bfloat16" if policy == "mixed_bfloat16" else "float32"


class _ProductFloor:
    """A model's products alone (matrix products and convolutions), in
    compiled loops, XLA (for dense layers only) and not, in float32 and in
    bfloat16.

    The time of one epoch of them is what the CPU needs for the model's
    products in that format; nothing that trains the model in that format
    can be faster.
    """

    def __init__(self, vae: model.VAE, batch_size: int, steps_per_epoch: int):
        self.products = _step_products(vae, batch_size)
        self.steps_per_epoch = steps_per_epoch
        # XLA's CPU convolutions are no floor: its own kernels, not oneDNN's,
        # took minutes per step of configs/cifar10.flags' gradients (measured).
        compilers = (("no_xla", False),)
        if not any(p.convolution for p in self.products):
            compilers = (("xla", True), *compilers)
        self.loops = {
            f"{name}_{xla}": self._loop(jit_compile, dtype)
            for name, dtype in _FLOOR_FORMATS.items()
            for xla, jit_compile in compilers
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
            [tf.Variable(tf.random.normal(shape, dtype=dtype)) for shape in p.shapes]
            for p in self.products
        ]

        @tf.function(jit_compile=jit_compile, autograph=False)
        def loop(steps):
            def body(step, total):
                # Scaling by the running total makes every step depend on the
                # one before, so no compiler can hoist the products out of the
                # loop or drop them; the sums cost one pass over each output.
                # (One sum of the stacked sums: grappler rewrites a chain of
                # many scalar additions inside a loop into an op that fails on
                # the loop's second step.)
                scale = tf.cast(1.0 + total * 1e-30, dtype)
                sums = [
                    tf.cast(
                        tf.reduce_sum(product.compute([first * scale, *rest])),
                        tf.float32,
                    )
                    for (first, *rest), product in zip(
                        operands, self.products, strict=True
                    )
                ]
                return step + 1, total + tf.reduce_sum(tf.stack(sums)) * 1e-30

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
    command = [sys.executable, script, f"--data={config.manual_dir}"]
    conv = ["--conv"] if config.network == "conv" else []
    return _peer([*command, f"--epochs={epochs}", *conv])


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


def _report_header(config) -> dict:
    """Returns what the report says of the model and the machine."""
    return {
        "dataset": config.dataset_name,
        "network": config.network,
        "conv_filters": list(config.conv_filters),
        "hidden_units": list(config.hidden_units),
        "latent_dim": config.latent_dim,
        "likelihood": config.likelihood,
        "batch_size": config.batch_size,
        "epochs": config.epochs,
        "steps_per_execution": config.steps_per_execution,
        "cpus": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }


def _floor_figures(
    report: dict, floor: _ProductFloor, before: dict, execution: devices.Execution
) -> float:
    """Adds the floor's figures to `report`; returns the floor in s/epoch.

    The floor is a floor: the best of `before` and a measurement now. The
    training run's format sets which floor its ratio is to.
    """
    after = floor.seconds_per_epoch(FLAGS.repeats)
    floor_s = {name: min(t, after[name]) for name, t in before.items()}
    floor_format = _floor_format(execution.mixed_precision)
    best = min(t for name, t in floor_s.items() if name.startswith(floor_format))
    report["product_floor_s_per_epoch"] = round(best, 3)
    report["product_floor"] = {
        "format": floor_format,
        **{f"s_per_epoch_{name}": round(t, 3) for name, t in floor_s.items()},
        "gflop_per_step": round(floor.gflop_per_step, 3),
        "gflop_per_s": round(floor.gflop_per_step * floor.steps_per_epoch / best, 1),
    }
    report["fraction_of_product_floor"] = round(best / report["seconds_per_epoch"], 3)
    return best


def _step_alone_figures(step_s: float, floor_s: float, seconds_per_epoch: float):
    """Returns the step alone's figures: its epoch, its floor fraction, `fit`'s cost."""
    return {
        "s_per_epoch": round(step_s, 3),
        "fraction_of_product_floor": round(floor_s / step_s, 3),
        "fit_overhead": round(seconds_per_epoch / step_s, 3),
    }


class _EpochTimer(keras.callbacks.Callback):
    """Records each epoch's seconds."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def _compiled_generated(config, execution: devices.Execution, shape, steps: int):
    """Returns the VAE for images of `shape`, built and compiled in `execution`
    as training compiles it."""
    keras.utils.set_random_seed(config.seed)
    with devices.dtype_policy(execution.mixed_precision):
        vae = model_builder.build_vae(
            shape, seed=config.seed, **config.model_settings()
        )
    vae.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        jit_compile=execution.jit_compile,
        steps_per_execution=fitting.steps_per_execution(
            config.steps_per_execution, steps
        ),
    )
    return vae


def _generated_batches(config, images: np.ndarray) -> tf.data.Dataset:
    """Returns the endless stream of `images`' batches, in order, from memory."""
    return (
        tf.data.Dataset.from_tensor_slices(images)
        .batch(config.batch_size, drop_remainder=True)
        .repeat()
    )


def _generated_choice(config, images: np.ndarray) -> execution_trial.Choice:
    """Returns the execution a long run on `images` takes, as `fit_run` settles
    it: by the flags, or by a timed trial (however few the epochs here)."""
    steps = len(images) // config.batch_size
    calls = fitting.steps_per_execution(config.steps_per_execution, steps)
    shape = images.shape[1:]
    return execution_trial.choose(
        config,
        devices.resolve(config.mixed_precision, config.jit_compile, config.network),
        recorded=None,
        network=config.network,
        replicas=1,
        run_steps=math.inf,
        steps_per_execution=calls,
        measure=lambda execution: execution_trial.seconds_per_step(
            _compiled_generated(config, execution, shape, steps),
            _generated_batches(config, images),
            calls,
        ),
    )


def _fit_generated(config, execution: devices.Execution, images: np.ndarray) -> dict:
    """Trains on `images` with Keras's `fit` as training compiles the VAE;
    returns the figures of `_TRAIN_KEYS`.

    No TFDS, no validation, no callbacks but a timer: batches of the
    generated images, in order, from memory.
    """
    steps = len(images) // config.batch_size
    vae = _compiled_generated(config, execution, images.shape[1:], steps)
    timer = _EpochTimer()
    vae.fit(
        _generated_batches(config, images),
        epochs=config.epochs,
        steps_per_epoch=steps,
        verbose=0,
        callbacks=[timer],
    )
    steady = sum(timer.seconds[1:]) / len(timer.seconds[1:])
    return {
        "train_examples_per_s": round(steps * config.batch_size / steady, 1),
        "seconds_per_epoch": round(steady, 3),
        "first_epoch_s": round(timer.seconds[0], 3),
        "mixed_precision": execution.mixed_precision,
        "jit_compile": execution.jit_compile,
    }


def _measure_generated(config, shape: tuple[int, ...]) -> dict:
    """The floor, training and the step alone on generated images of `shape`.

    For models whose dataset is not on this machine (configs/cifar10.flags):
    the step does not depend on the pixels' values.
    """
    report = _report_header(config) | {
        "generated_shape": list(shape),
        "generated_examples": FLAGS.generated_examples,
    }
    images = np.random.default_rng(config.seed).integers(
        0, 256, (FLAGS.generated_examples, *shape), np.uint8
    )
    floor = _ProductFloor(
        model_builder.build_vae(shape, seed=config.seed, **config.model_settings()),
        config.batch_size,
        len(images) // config.batch_size,
    )
    floor_before = floor.seconds_per_epoch(FLAGS.repeats)
    choice = _generated_choice(config, images)
    execution = choice.execution
    report.update(_fit_generated(config, execution, images))
    report["execution"] = choice.record()
    best = _floor_figures(report, floor, floor_before, execution)
    step_s = _step_loop_seconds(config, execution, shape, images, FLAGS.repeats)
    report["step_alone"] = _step_alone_figures(
        step_s, best, report["seconds_per_epoch"]
    )
    if FLAGS.compare_xla:
        flipped = _fit_generated(
            config,
            devices.Execution(execution.mixed_precision, not execution.jit_compile),
            images,
        )
        xla, no_xla = (report, flipped) if execution.jit_compile else (flipped, report)
        report["jit_compile_flipped"] = flipped
        report["xla_speedup"] = round(
            xla["train_examples_per_s"] / no_xla["train_examples_per_s"], 3
        )
    report["peak_rss_mb"] = _peak_rss_mb()
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def _measure(config) -> dict:
    """Runs every measurement; returns the report."""
    report = _report_header(config)
    if FLAGS.pyro_python:
        report["pyro"] = _pyro(
            config, FLAGS.pyro_python, FLAGS.pyro_script, FLAGS.pyro_epochs
        )
    if FLAGS.keras_script:
        report["keras"] = _keras(config, FLAGS.keras_script, FLAGS.keras_epochs)
    builder, info = data.prepare(
        config.dataset, config.data_dir, config.manual_dir, config.image_source
    )
    floor = _ProductFloor(
        model_builder.build_vae(
            info.image_shape, seed=config.seed, **config.model_settings()
        ),
        config.batch_size,
        info.num_train // config.batch_size,
    )
    floor_before = floor.seconds_per_epoch(FLAGS.repeats)
    with tempfile.TemporaryDirectory() as work_dir:
        model_dir = os.path.join(work_dir, "run")
        report.update(_train(config, model_dir))
        # As the run settled it: by the flags, the rule or a timed trial.
        execution = devices.Execution(report["mixed_precision"], report["jit_compile"])
        report["peak_rss_mb_training"] = _peak_rss_mb()
        best = _floor_figures(report, floor, floor_before, execution)
        train_images = data.load_split(builder, splits.TRAIN_SPLIT)
        step_s = _step_loop_seconds(
            config, execution, info.image_shape, train_images, FLAGS.repeats
        )
        report["step_alone"] = _step_alone_figures(
            step_s, best, report["seconds_per_epoch"]
        )
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
                mixed_precision=execution.mixed_precision,
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
    if FLAGS.model == "table":
        table_benchmark.check_flags()
    if config.epochs < 2:
        raise errors.UsageError(
            "--epochs must be at least 2 to measure a steady state."
        )
    if bool(FLAGS.pyro_python) != bool(FLAGS.pyro_script):
        raise errors.UsageError("--pyro_python and --pyro_script go together.")
    shape = tuple(FLAGS.generated_shape or ())
    if FLAGS.generated_shape and (
        len(shape) != 3 or any(not d.isdigit() or int(d) < 1 for d in shape)
    ):
        raise errors.UsageError(
            f"--generated_shape must be H,W,C, three positive integers (e.g. "
            f"32,32,3). Received: --generated_shape={','.join(shape)}"
        )
    shape = tuple(int(d) for d in shape)
    if shape and (FLAGS.pyro_python or FLAGS.keras_script):
        raise errors.UsageError(
            "--generated_shape trains on generated images; the peers train on "
            "MNIST. Run the peers without --generated_shape."
        )
    _check_peers(config)
    # Keras's progress bars print to stdout; the JSON alone goes there.
    with contextlib.redirect_stdout(sys.stderr):
        if FLAGS.model == "table":
            report = table_benchmark.measure(config, sys.modules[__name__])
        else:
            report = _measure_generated(config, shape) if shape else _measure(config)
    sys.stdout.write(json.dumps(report, indent=2) + "\n")


def _check_peers(config) -> None:
    """Refuses a peer whose model is not the one the flags configure."""
    model_of = {name: getattr(config, name) for name in _TUTORIAL_MODEL}
    if FLAGS.pyro_python and model_of != _TUTORIAL_MODEL:
        raise errors.UsageError(
            f"The Pyro peer is the tutorial's model, {_TUTORIAL_MODEL}: compare "
            "it with the same configuration (--flagfile=mnist.flags)."
        )
    if not FLAGS.keras_script:
        return
    peer_model = _KERAS_PEER_MODELS.get(config.network, {})
    if peer_model != {name: getattr(config, name) for name in peer_model}:
        raise errors.UsageError(
            f"The Keras peer's models are {_KERAS_PEER_MODELS}, by --network: "
            "compare one with the same configuration (--flagfile=mnist.flags, "
            "or the keras-io flags of the README's performance section)."
        )
    if not config.manual_dir:
        raise errors.UsageError(
            "--keras_script reads the original MNIST files: add "
            "--manual_dir=FOLDER (e.g. ../shared/datasets/mnist)."
        )


if __name__ == "__main__":
    app.run(main)
