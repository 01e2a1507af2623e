"""`tf.distribute` strategies by name (the `--strategy` flag), and their input.

Replica i of the whole cluster (workers in task order, then local replicas)
holds rows [i * b, (i + 1) * b) of every global batch, b = global / replicas:
Keras splits batches that way on one machine, and `distribute_batches` does it
across workers. That is the layout `tfvae.noise` assumes, so any number of
replicas, on one machine or several, makes the updates one replica with the
global batch makes.
"""

import json
import os
from collections.abc import Callable

import tensorflow as tf
from absl import logging

from tfvae import batches as batches_lib
from tfvae import errors

_TF_CONFIG_EXAMPLE = json.dumps(
    {
        "cluster": {"worker": ["host1:12345", "host2:12345"]},
        "task": {"type": "worker", "index": 0},
    }
)


def _auto() -> tf.distribute.Strategy:
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    # A real strategy, not TF's default one: Keras's fit then takes the same
    # path (strategy.run, building the model from a first batch) as under
    # every other strategy, which the 1-vs-N-replica equality tests cover.
    return tf.distribute.OneDeviceStrategy("/cpu:0")


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


def _tf_config_problem(text: str | None) -> str | None:
    """Returns what is wrong with a TF_CONFIG value for a worker, or None."""
    if not text:
        return "is not set"
    try:
        value = json.loads(text)
    except ValueError:
        return f"is not JSON. Received: TF_CONFIG={text!r}"
    cluster = value.get("cluster") if isinstance(value, dict) else None
    task = value.get("task") if isinstance(value, dict) else None
    if not isinstance(cluster, dict) or not cluster or not isinstance(task, dict):
        return f"needs a 'cluster' and this worker's 'task'. Received: {text}"
    hosts = cluster.get(task.get("type"))
    index = task.get("index")
    if not isinstance(hosts, list) or not isinstance(index, int):
        return (
            f"needs a task whose 'type' is a job of the cluster "
            f"({sorted(cluster)}) and an integer 'index'. Received: {text}"
        )
    if not 0 <= index < len(hosts):
        return (
            f"names task {index} of {task['type']!r}, which has {len(hosts)} "
            f"host(s). Received: {text}"
        )
    return None


def _multi_worker() -> tf.distribute.Strategy:
    problem = _tf_config_problem(os.environ.get("TF_CONFIG"))
    if problem:
        raise errors.UsageError(
            "--strategy=multi_worker reads the cluster from the TF_CONFIG "
            f"environment variable, which {problem}. Set it on every worker, "
            f"with its own task index, e.g. TF_CONFIG='{_TF_CONFIG_EXAMPLE}'."
        )
    return tf.distribute.MultiWorkerMirroredStrategy()


STRATEGIES = {
    "auto": _auto,
    "mirrored": _mirrored,
    "one_device": _one_device,
    "multi_worker": _multi_worker,
}


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


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Returns whether this process writes the run's files (checkpoints, logs).

    True everywhere but on the non-chief workers of a multi-worker strategy.
    """
    return strategy.extended.should_checkpoint


def distribute_batches(strategy: tf.distribute.Strategy, batches: tf.data.Dataset):
    """Returns `batches` ready for `fit`/`evaluate` under `strategy`.

    `batches` yields global batches `[global_batch, ...]` of pixels (or
    `(pixels, labels)` pairs), identical on every worker (same seed). On one
    machine it is returned as is: Keras splits each global batch into
    consecutive per-replica blocks. Under
    `MultiWorkerMirroredStrategy` every worker keeps its replicas' blocks
    (see the module docstring) itself, since TF's automatic sharding would
    interleave examples across workers instead; a short last batch gives its
    last replicas fewer rows, possibly none, so all run the same number of
    steps. Pixels come out as int32 there: Keras averages the first batch
    across workers with a collective op, and those cannot reduce uint8.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return batches
    # Read here: inside the input function TF no longer knows it.
    cardinality = int(batches.cardinality())
    return strategy.distribute_datasets_from_function(
        lambda context: worker_blocks(batches, context, cardinality)
    )


def _collective_safe(batch):
    """Returns `batch` (a tensor or a tuple) with uint8 pixels as int32."""
    return tf.nest.map_structure(
        lambda a: (
            tf.cast(a, batches_lib.COLLECTIVE_PIXELS) if a.dtype == tf.uint8 else a
        ),
        batch,
    )


def _local_replicas(context: tf.distribute.InputContext) -> int:
    """Returns the replicas of the worker `context` names."""
    return context.num_replicas_in_sync // context.num_input_pipelines


def worker_blocks(
    batches: tf.data.Dataset,
    context: tf.distribute.InputContext,
    cardinality: int = tf.data.UNKNOWN_CARDINALITY,
) -> tf.data.Dataset:
    """Returns one worker's blocks of every global batch of `batches`.

    `batches` yields global batches (tensors, or `(images, labels)` tuples);
    the worker `context` names gets the consecutive blocks of its local
    replicas, in turn, each `ceil(global / replicas)` rows (the last ones of
    a short batch fewer, possibly none). With a known `cardinality` (batches
    per pass), the result says its own.
    """
    replicas = context.num_replicas_in_sync
    local = _local_replicas(context)
    first = context.input_pipeline_id * local

    def blocks(*batch):
        batch = batch if len(batch) > 1 else batch[0]
        rows = tf.shape(tf.nest.flatten(batch)[0])[0]
        size = (rows + replicas - 1) // replicas

        def block(index):
            start = tf.cast(index, tf.int32) * size
            return _collective_safe(
                tf.nest.map_structure(lambda a: a[start:][:size], batch)
            )

        return tf.data.Dataset.range(first, first + local).map(block)

    # Local replicas take consecutive elements of this dataset in turn.
    per_replica = batches.flat_map(blocks)
    if cardinality < 0:  # Endless (training) or unknown.
        return per_replica
    return per_replica.apply(
        tf.data.experimental.assert_cardinality(cardinality * local)
    )


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Returns the number of worker processes training together (1 but under
    `MultiWorkerMirroredStrategy`)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1
    spec = strategy.cluster_resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in ("chief", "worker") if job in spec.jobs)


def distribute_streams(
    strategy: tf.distribute.Strategy,
    stream: Callable[..., tf.data.Dataset],
):
    """Returns per-worker streams ready for `fit` under `strategy`.

    `stream(shards=, shard_index=, replicas_per_shard=)` returns one worker's
    dataset: its rows of every global batch, one block per local replica in
    turn (`streaming.streamed_batches`). On one machine that is the whole global
    batch, which Keras splits over the replicas; under
    `MultiWorkerMirroredStrategy` each worker makes its own, from its own
    share of the files, so the workers' blocks together are the global batch
    (pixels as int32, as in `distribute_batches`).
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return stream(shards=1, shard_index=0, replicas_per_shard=1)

    def per_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
        worker_stream = stream(
            shards=context.num_input_pipelines,
            shard_index=context.input_pipeline_id,
            replicas_per_shard=_local_replicas(context),
        )
        return worker_stream.map(
            lambda *batch: _collective_safe(batch if len(batch) > 1 else batch[0])
        )

    return strategy.distribute_datasets_from_function(per_worker)
