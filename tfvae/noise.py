"""Stateless noise that does not depend on how a batch is split across replicas.

Under `tf.distribute`, every replica sees a slice of the global batch. If each
replica drew its own noise for its slice, N replicas would train on different
random numbers than one replica with the same global batch, and the two runs
could never agree. Instead every replica draws the noise for the whole global
batch from the same stateless seed and keeps the rows of its own slice (the
slices are consecutive, in replica order, as `MirroredStrategy` splits
batches). Drawing noise is cheap next to the matrix products it feeds.
"""

import tensorflow as tf


def _replica_rows(sample, local_shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync if context is not None else 1
    if replicas == 1:
        return sample(local_shape, seed)
    local_batch = local_shape[0]
    global_shape = tf.concat([[local_batch * replicas], local_shape[1:]], axis=0)
    start = tf.cast(context.replica_id_in_sync_group, local_batch.dtype) * local_batch
    return sample(global_shape, seed)[start : start + local_batch]


def uniform(local_shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Returns U[0, 1) float32 noise of `local_shape` ([batch, ...]) for this replica.

    `seed` is a stateless seed, int `[2]`.
    """
    return _replica_rows(
        lambda shape, s: tf.random.stateless_uniform(shape, s), local_shape, seed
    )


def normal(local_shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Returns N(0, 1) float32 noise of `local_shape` ([batch, ...]) for this replica.

    `seed` is a stateless seed, int `[2]`.
    """
    return _replica_rows(
        lambda shape, s: tf.random.stateless_normal(shape, s), local_shape, seed
    )
