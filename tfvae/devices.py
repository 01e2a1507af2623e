"""The number format and compiler for the device at hand: `--mixed_precision=auto`
and an unset `--jit_compile`.

`candidates` lists the executions a run's flags leave open, and `fastest`
is the rule among them for each kind of device and network, measured with
`scripts/benchmark.py` and `scripts/step_times.py` (the README's
performance section). A run long enough to pay for it times the candidates
on its own model instead (`tfvae.execution_trial`); the rule decides the
rest. A 16-bit format is a candidate only on a device with native 16-bit
products and for a network where it kept float32's test -ELBO (10 epochs,
within 0.3 nats). The
weights, the distributions and the loss stay float32 in every format; only
the networks' products and activations run in 16 bits.
"""

import contextlib
import dataclasses

import keras
import tensorflow as tf
from absl import logging

# Not public API: whether the graph being built (or an enclosing one) is
# compiled by XLA. TensorFlow's own ops use it to pick XLA-only code paths.
from tensorflow.python.ops import control_flow_util

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass(frozen=True)
class Execution:
    """How the training and test steps run: a Keras dtype policy, and XLA or not."""

    mixed_precision: str
    jit_compile: bool

    @property
    def name(self) -> str:
        """The execution's name in logs and metrics.json: "float32_xla", ..."""
        return f"{self.mixed_precision}_{'xla' if self.jit_compile else 'no_xla'}"


# The rule keeps float32 everywhere: whether bfloat16 is faster depends on
# the CPU, not only on its kind (`AUTO_POLICIES`), so only a timed trial
# takes it. XLA speeds dense networks up (it fuses the element-wise work;
# the gated MLP's XLA and plain steps were within the noise of a loaded
# machine) but slows convolutional steps down 1.3-2.8x on a CPU: XLA's CPU
# backend emits convolutions of its own instead of calling oneDNN's. On a
# GPU both paths run convolutions as cuDNN calls, so XLA's fusion is the
# only difference and it stays on (no GPU has been measured here). A table
# model's networks are dense, and its step trains on rows
# (`tfvae.table_rows`: the category lookups and cell checks happen before
# the step), so it compiles with XLA like the MLP, on any device.
CPU_WITHOUT_XLA = ("conv",)
# The `network` a table run passes to `resolve`: its dense bodies.
TABLE = "table"
DEVICE_KINDS = ("cpu_bf16", "cpu", "gpu")
# The number formats `auto` may time on each kind of device: bfloat16 on a
# CPU with native bfloat16 products. Whether it is faster depends on the CPU
# (half float32's rate on one measured here, 1.6x faster on another), so only
# a timed trial picks it.
AUTO_POLICIES = {
    "cpu_bf16": ("float32", "mixed_bfloat16"),
    "cpu": ("float32",),
    "gpu": ("float32",),
}
# The networks a 16-bit format kept float32's test -ELBO for (10 epochs,
# within 0.3 nats; the README's "Number formats"): mnist.flags' MLP.
# keras-io's conv VAE did not, at any of three seeds; no GPU has been
# measured here.
SIXTEEN_BIT_NETWORKS = ("mlp",)


def fastest(kind: str, network: str) -> Execution:
    """Returns the fastest execution measured for a device kind and network.

    Args:
        kind: a `DEVICE_KINDS` entry (`device_kind()`).
        network: a `tfvae.networks.NETWORKS` name, or `TABLE`.

    Returns:
        The `Execution`: float32; XLA unless a convolutional network on a
        CPU.

    Example:
        >>> fastest("cpu", "conv")
        Execution(mixed_precision='float32', jit_compile=False)
    """
    if kind not in DEVICE_KINDS:
        raise ValueError(f"kind must be one of {DEVICE_KINDS}. Received: kind={kind!r}")
    slow = kind != "gpu" and network in CPU_WITHOUT_XLA
    return Execution("float32", jit_compile=not slow)


def candidates(
    mixed_precision: str, jit_compile: bool | None, kind: str, network: str
) -> tuple[Execution, ...]:
    """Returns the executions a run's flags leave open on a device kind.

    Args:
        mixed_precision: `--mixed_precision`: "auto" or a `POLICIES` entry.
        jit_compile: `--jit_compile`: None (auto), True or False.
        kind: a `DEVICE_KINDS` entry (`device_kind()`).
        network: a `tfvae.networks.NETWORKS` name, or `TABLE`.

    Returns:
        Every combination of the formats "auto" may take (`AUTO_POLICIES`,
        for a network of `SIXTEEN_BIT_NETWORKS`; else float32) or the one
        given, with XLA on and off or as given.

    Example:
        >>> candidates("auto", None, "cpu_bf16", "conv")
        (Execution(mixed_precision='float32', jit_compile=True), \
Execution(mixed_precision='float32', jit_compile=False))
    """
    if mixed_precision != "auto":
        policies = (mixed_precision,)
    elif network in SIXTEEN_BIT_NETWORKS:
        policies = AUTO_POLICIES[kind]
    else:
        policies = ("float32",)
    jits = (True, False) if jit_compile is None else (jit_compile,)
    return tuple(Execution(policy, jit) for policy in policies for jit in jits)


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def tracing_for_xla() -> bool:
    """Returns whether the ops being built are traced for XLA (a function
    compiled with `jit_compile=True`, or inside one)."""
    graph = tf.compat.v1.get_default_graph()
    return control_flow_util.GraphOrParentsInXlaContext(graph)


def device_kind() -> str:
    """Returns "gpu" with a visible GPU, else "cpu_bf16" for a CPU with native
    bfloat16 products (AVX512-BF16 or AMX), else "cpu"."""
    if tf.config.list_logical_devices("GPU"):
        return "gpu"
    if _cpu_flags() & {"avx512_bf16", "amx_bf16"}:
        return "cpu_bf16"
    return "cpu"


def resolve(mixed_precision: str, jit_compile: bool | None, network: str) -> Execution:
    """Returns the rule's execution for a run: "auto" and None take the fastest
    for this device and `network` (`fastest`); anything else is kept as
    given. Logs it. (A long run may time the others instead:
    `tfvae.execution_trial`.)"""
    kind = device_kind()
    best = fastest(kind, network)
    chosen = Execution(
        best.mixed_precision if mixed_precision == "auto" else mixed_precision,
        best.jit_compile if jit_compile is None else jit_compile,
    )
    logging.info(
        "The rule's execution for a %s network on this %s: "
        "--mixed_precision=%s%s, XLA %s%s.",
        network,
        kind,
        chosen.mixed_precision,
        " (auto)" if mixed_precision == "auto" else "",
        "on" if chosen.jit_compile else "off",
        " (auto)" if jit_compile is None else "",
    )
    return chosen


@contextlib.contextmanager
def dtype_policy(name: str):
    """Builds Keras layers under dtype policy `name`, then restores the global one.

    Layers keep the policy they were built with, so training runs mixed while
    anything built later (the float32 export) is not affected.
    """
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
