"""`tf.distribute` strategies by name (the `--strategy` flag)."""

import tensorflow as tf
from absl import logging


def _auto() -> tf.distribute.Strategy:
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    return tf.distribute.get_strategy()


def _mirrored() -> tf.distribute.Strategy:
    # Mirror over every GPU; without GPUs, over every logical CPU device (one
    # by default, several if the process configured them, as tests do).
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices(
        "CPU"
    )
    return tf.distribute.MirroredStrategy([d.name for d in devices])


def _one_device() -> tf.distribute.Strategy:
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


STRATEGIES = {"auto": _auto, "mirrored": _mirrored, "one_device": _one_device}


def make_strategy(name: str) -> tf.distribute.Strategy:
    """Returns the strategy `name` names (a key of `STRATEGIES`)."""
    if name not in STRATEGIES:
        raise ValueError(
            f"Unknown strategy. Expected one of {sorted(STRATEGIES)}. "
            f"Received: strategy={name!r}"
        )
    strategy = STRATEGIES[name]()
    logging.info(
        "Strategy %s: %d replica(s) in sync.",
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
    )
    return strategy
