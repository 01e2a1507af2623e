"""Stateless noise that does not depend on how a batch is split across replicas.

Under `tf.distribute`, every replica sees a slice of the global batch. If each
replica drew its own noise for its slice, N replicas would train on different
random numbers than one replica with the same global batch, and the two runs
could never agree. Instead every replica draws the noise for the whole global
batch from the same stateless seed and keeps the rows of its own slice (the
slices are consecutive, in replica order, as `MirroredStrategy` splits
batches). Drawing noise is cheap next to the matrix products it feeds.

The generator is chosen for speed where the ops run: ThreeFry inside an
XLA-compiled function (XLA's Philox on CPU is 3-4x slower; dynamic
binarization draws one number per pixel, and with Philox it took a quarter of
an XLA training step), Philox elsewhere (TF's own kernels have no ThreeFry).
So one seed gives different, equally valid, noise with and without XLA;
runs with the same flags agree.
"""

import tensorflow as tf

# Not public API: whether the graph being built (or an enclosing one) is
# compiled by XLA. TensorFlow's own ops use it to pick XLA-only code paths.
from tensorflow.python.ops import control_flow_util


def algorithm() -> str:
    """Returns the stateless RNG for ops built here: "threefry" or "philox"."""
    graph = tf.compat.v1.get_default_graph()
    return (
        "threefry" if control_flow_util.GraphOrParentsInXlaContext(graph) else "philox"
    )


def _replica_rows(draw, local_shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Returns this replica's rows of `draw(global_shape, seed, alg=...)`."""
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync if context is not None else 1
    if replicas == 1:
        return draw(local_shape, seed, alg=algorithm())
    local_batch = local_shape[0]
    global_shape = tf.concat([[local_batch * replicas], local_shape[1:]], axis=0)
    start = tf.cast(context.replica_id_in_sync_group, local_batch.dtype) * local_batch
    return draw(global_shape, seed, alg=algorithm())[start : start + local_batch]


def uniform(local_shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Returns U[0, 1) float32 noise of `local_shape` ([batch, ...]) for this replica.

    `seed` is a stateless seed, int `[2]`.
    """
    return _replica_rows(tf.random.stateless_uniform, local_shape, seed)


def normal(local_shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Returns N(0, 1) float32 noise of `local_shape` ([batch, ...]) for this replica.

    `seed` is a stateless seed, int `[2]`.
    """
    return _replica_rows(tf.random.stateless_normal, local_shape, seed)
