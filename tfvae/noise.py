"""Every random stream of tfvae, and noise that does not depend on replicas.

All randomness is stateless: a draw is a pure function of a seed `[2]`. The
seeds come from `--seed` (here `s`) and this table, the only place streams are
named:

| stream                      | seed                    | used by                      |
|-----------------------------|-------------------------|------------------------------|
| epoch order                 | (s, epoch), epoch >= 0  | `data.shuffled_batches`      |
| training and test steps     | (s, step), step >= 1    | `VAE.next_seed`: a counter   |
|                             |                         | saved with the weights       |
| pictures' posterior means   | (s, POSTERIOR_MEAN)     | `VAE.posterior_mean`         |
| pictures' prior samples     | (s, PRIOR_SAMPLES)      | `images.prior_samples`       |
|                             | (z), then a table's     | `table_model.sample_rows`    |
|                             | cells: `draw_seed` of it| (table pictures, `sample`)   |
| the export's fixed noise    | (s, EXPORT), then per   | `saved_model`: each image's  |
|                             | image `example_seeds`   | noise from its own pixels    |
| evaluation batch i          | (eval seed, i)          | `iwae.evaluate_batches`      |
| its sample chunk j          | `chunk_seed(seed, j)`   | `adapters`: a Keras VAE's z, |
|                             |                         | or the seed sent to an       |
|                             |                         | export's `log_weights`, which|
|                             |                         | derives each image's seed    |
|                             |                         | from it (`example_seeds`)    |

A seed for one batch is split into observation and z noise by `split_seed`;
the z noise of stochastic layer l > 0 (bottom first) is `layer_seed(z_seed, l)`.
The steps, the epoch order and the fixed streams share `(s, n)` pairs with
different n meanings; they feed different ops, so the numbers do not repeat.

Under `tf.distribute` every replica sees a slice of the global batch. If each
replica drew its own noise for its slice, N replicas would train on different
random numbers than one replica with the same global batch, and the two runs
could never agree. Instead every replica draws the noise for the whole global
batch from the same seed and keeps the rows of its own slice (consecutive, in
replica order, as `MirroredStrategy` splits batches).

The generator is chosen for speed where the ops run: ThreeFry inside an
XLA-compiled function (XLA's Philox on CPU is 3-4x slower; dynamic
binarization draws one number per pixel), Philox elsewhere (TF's own kernels
have no ThreeFry). So one seed gives different, equally valid, noise with and
without XLA; runs with the same flags agree.
"""

import tensorflow as tf

from tfvae import devices

# The second word of the fixed streams' seeds (see the table).
POSTERIOR_MEAN = 0
PRIOR_SAMPLES = 1
EXPORT = -1

# Every use of a run's seed takes [0, 2**32): NumPy's legacy seeding, which
# `keras.utils.set_random_seed` and scikit-learn use, is the narrowest (TF's
# stateless seeds take any int64).
SEED_LIMIT = 2**32


def seed_problem(run_seed: int) -> str | None:
    """Returns what is wrong with a run's seed, or None (a `fields.setting` check)."""
    if isinstance(run_seed, bool) or not isinstance(run_seed, int):
        return "must be an integer"
    if not 0 <= run_seed < SEED_LIMIT:
        return "must be in [0, 2**32), the range NumPy and Keras seed from"
    return None


def seed(run_seed, stream) -> tf.Tensor:
    """Returns the stateless seed `(run_seed, stream)`, int64 `[2]`."""
    return tf.stack(
        [tf.cast(run_seed, tf.int64), tf.cast(stream, tf.int64)], name="seed"
    )


def split_seed(batch_seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Returns (observe_seed, z_seed) from one batch's seed.

    `batch_seed` is int `[2]`, or `[batch, 2]` for one seed per example; each
    result has its shape. The one convention for turning a seed into the
    observation noise and the z noise: training, evaluation and the exported
    signatures share it.
    """
    if batch_seed.shape.rank == 2:
        pairs = tf.map_fn(
            lambda s: tf.random.experimental.stateless_split(s, num=2),
            batch_seed,
            fn_output_signature=tf.TensorSpec([2, 2], batch_seed.dtype),
        )
        return tf.cast(pairs[:, 0], tf.int64), tf.cast(pairs[:, 1], tf.int64)
    seeds = tf.random.experimental.stateless_split(batch_seed, num=2)
    return tf.cast(seeds[0], tf.int64), tf.cast(seeds[1], tf.int64)


def chunk_seed(batch_seed: tf.Tensor, chunk) -> tf.Tensor:
    """Returns the z seed of importance-sample chunk `chunk` of a batch seed `[2]`.

    Split as training splits its seed, so the ELBO and the IWAE bound of one
    batch seed score the same observations x.
    """
    _, z_seed = split_seed(batch_seed)
    return tf.cast(tf.random.experimental.stateless_fold_in(z_seed, chunk), tf.int64)


def draw_seed(seed: tf.Tensor) -> tf.Tensor:
    """Returns the int32 seed of draws from p(x|z) given a sampling seed `[2]`.

    TFP's stateless samplers take int32 seeds: two full-range int32 drawn
    from `seed` folded with 1, so they are apart from the z that `seed`
    itself draws (`VAE.sample_latent`).

    Args:
        seed: int `[2]`, a stateless seed.

    Returns:
        int32 `[2]`.

    Example:
        >>> draw_seed(tf.constant([0, 1], tf.int64)).dtype
        tf.int32
    """
    folded = tf.random.experimental.stateless_fold_in(seed, 1)
    return tf.random.stateless_uniform(
        [2], folded, minval=None, maxval=None, dtype=tf.int32
    )


def layer_seed(z_seed: tf.Tensor, layer: int) -> tf.Tensor:
    """Returns the z seed of stochastic layer `layer` (0 is the bottom, x's).

    `z_seed` is int `[2]` or `[batch, 2]`; the result has its shape. Layer 0
    keeps `z_seed` itself, so a one-layer model draws what it always drew.
    """
    if layer == 0:
        return z_seed

    def fold(s):
        return tf.cast(tf.random.experimental.stateless_fold_in(s, layer), tf.int64)

    if z_seed.shape.rank == 2:
        return tf.map_fn(fold, z_seed, fn_output_signature=tf.TensorSpec([2], tf.int64))
    return fold(z_seed)


def example_seeds(images: tf.Tensor, base_seed: tf.Tensor) -> tf.Tensor:
    """Returns one seed per example, int64 `[batch, 2]`, from its pixels alone.

    `images` are `[batch, ...]`; `base_seed` is int `[2]`. An image gets the
    same seed alone, in any batch and at any row, so its noise (and an
    export's outputs for it) never depend on the rest of the batch.
    """
    flat = tf.reshape(tf.bitcast(images, tf.uint8), [tf.shape(images)[0], -1])
    fingerprint = tf.bitcast(tf.fingerprint(flat), tf.int64)
    return tf.map_fn(
        lambda f: tf.cast(
            tf.random.experimental.stateless_fold_in(base_seed, f), tf.int64
        ),
        fingerprint,
        fn_output_signature=tf.TensorSpec([2], tf.int64),
    )


def export_seeds(images: tf.Tensor, run_seed) -> tf.Tensor:
    """Returns the seeds of an export's image signatures, int64 `[batch, 2]`.

    One per image of `images` (raw uint8 `[batch, H, W, C]`), from its pixels
    and the fixed stream `(run_seed, EXPORT)` alone (`example_seeds`).
    """
    return example_seeds(images, seed(run_seed, EXPORT))


def algorithm() -> str:
    """Returns the stateless RNG for ops built here: "threefry" or "philox"."""
    return "threefry" if devices.tracing_for_xla() else "philox"


def _per_row(draw_row, seed: tf.Tensor, row_shape) -> tf.Tensor:
    """Returns `draw_row(s)` for each row s of `seed` (`[batch, 2]`), stacked.

    An empty batch gets empty noise: map_fn alone cannot stack zero rows of
    a shape it does not know statically.
    """
    return tf.cond(
        tf.shape(seed)[0] > 0,
        lambda: tf.map_fn(draw_row, seed, fn_output_signature=tf.float32),
        lambda: tf.zeros(tf.concat([[0], row_shape], axis=0)),
    )


def _draw(draw, local_shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Returns this replica's rows of `draw(global_shape, seed, alg=...)`.

    A `[batch, 2]` seed draws each row from its own seed instead.
    """
    if seed.shape.rank == 2:
        return _per_row(
            lambda s: draw(local_shape[1:], s, alg=algorithm()),
            seed,
            local_shape[1:],
        )
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync if context is not None else 1
    if replicas == 1:
        return draw(local_shape, seed, alg=algorithm())
    local_batch = local_shape[0]
    global_shape = tf.concat([[local_batch * replicas], local_shape[1:]], axis=0)
    start = tf.cast(context.replica_id_in_sync_group, local_batch.dtype) * local_batch
    return draw(global_shape, seed, alg=algorithm())[start : start + local_batch]


def normal_samples(num_samples, local_shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Returns `num_samples` draws of N(0, 1) noise of `local_shape`, `[K, batch, ...]`.

    Drawn sample-major, so the first k samples are the same whatever K is
    (an IWAE sweep's k=10 is the first 10 of its k=5000), and K=1 draws what
    one draw of `local_shape` with `seed` would. `seed` is int `[2]` (this replica's
    rows of the global batch's draw) or `[batch, 2]` (one per row).
    """
    num_samples = tf.cast(num_samples, tf.int32)
    local_shape = tf.cast(local_shape, tf.int32)
    if seed.shape.rank == 2:
        row_shape = tf.concat([[num_samples], local_shape[1:]], axis=0)
        rows = _per_row(
            lambda s: tf.random.stateless_normal(row_shape, s, alg=algorithm()),
            seed,
            row_shape,
        )  # [batch, K, ...]
        return tf.experimental.numpy.swapaxes(rows, 0, 1)
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync if context is not None else 1
    local_batch = local_shape[0]
    global_shape = tf.concat(
        [[num_samples, local_batch * replicas], local_shape[1:]], axis=0
    )
    draw = tf.random.stateless_normal(global_shape, seed, alg=algorithm())
    if replicas == 1:
        return draw
    start = tf.cast(context.replica_id_in_sync_group, local_batch.dtype) * local_batch
    return draw[:, start : start + local_batch]


def uniform(local_shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Returns U[0, 1) float32 noise of `local_shape` ([batch, ...]) for this replica.

    `seed` is a stateless seed, int `[2]` (or `[batch, 2]`: one per row).
    """
    return _draw(tf.random.stateless_uniform, local_shape, seed)
