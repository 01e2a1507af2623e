"""A VAE of a table's rows: building one from a schema, and filling in its gaps.

`build_table_vae(schema, **settings)` makes a `VAE` of the same family and
settings as `builder.build_vae` (`model_settings.ModelSettings`), whose
likelihood is the schema's `table_likelihood.TableHead` and whose encoder
and decoder are `networks.vector_mlp` bodies (categorical inputs one-hot,
plus the presence mask). It trains with `fit` on `tables.table_batches`, and
`tfvae.table_evaluation.evaluate_table` scores it. `impute` fills a batch's
missing cells with the decoder's best values at the posterior mean (the
row's reconstruction: a number column's mean, a binary or categorical
column's most likely value), keeping the present cells as they are;
`frame_batches` feeds a DataFrame and its labels to the VAE.

Example:

    schema, train, test = tables.read_table("wine.csv")
    vae = build_table_vae(schema, latent_dim=4)
    vae.compile(optimizer="adam")
    vae.fit(tables.table_batches(train, schema, 32, shuffle_seed=0), epochs=100)
    filled = impute(vae, next(iter(tables.table_batches(test, schema, 8))))
"""

import numpy as np
import pandas as pd
import tensorflow as tf

from tfvae import builder, networks, noise, tables
from tfvae.model import VAE
from tfvae.table_likelihood import TableHead


def build_table_vae(
    schema: dict, *, seed: int = 0, num_classes: int | None = None, **settings
) -> VAE:
    """Builds (and creates the weights of) a VAE of the rows of `schema`'s table.

    The same family as `builder.build_vae`'s, from the same settings: the
    objectives, posteriors, priors (the VampPrior's pseudo-inputs are rows'
    encoder inputs), stochastic layers and the conditional VAE. The
    likelihood is the schema's (`TableHead`), the bodies `networks.vector_mlp`.

    Args:
        schema: the table's schema (`tables.read_table`, `tables.infer_schema`).
        seed: seeds the model's noise; the weights are initialized from
            Keras's global seed (`keras.utils.set_random_seed`).
        num_classes: the number of classes, needed if `conditional` (the VAE
            then takes `(rows, labels)` batches).
        **settings: any `model_settings.ModelSettings` field by name, each
            defaulting to its flag's default: count_likelihood (one of
            `table_likelihood.COUNT_LIKELIHOODS`), posterior, latent_dim (one
            size per stochastic layer, bottom first), hidden_units,
            activation, kl, prior, prior_components, conditional, objective,
            train_samples, gradient, beta, free_bits. The image-only
            settings (likelihood, binarize, gaussian_scale,
            mixture_components, network other than "mlp", conv_filters) are
            refused.

    Returns:
        The built `VAE` (with `image_shape=None`), taking batches of rows
        (`tables.table_batches`) or cells {column: `[batch]`}
        (`tfvae.table_rows`), or `(batch, labels)` pairs.

    Raises:
        errors.UsageError (a ValueError): an unknown setting (listing the
            valid ones), a bad value or combination, an image-only setting,
            or a model too large for this machine's memory; each naming the
            argument.

    Example:
        >>> schema = {"columns": [{"name": "x", "type": "real", "mean": 0.0,
        ...     "std": 1.0}, {"name": "n", "type": "count", "mean": 1.0,
        ...     "std": 0.5}]}
        >>> build_table_vae(schema, latent_dim=2, hidden_units=(8,)).latent_dim
        2
    """
    s = builder.checked_settings(settings, schema=schema, num_classes=num_classes)
    likelihood = TableHead(schema, s.count_likelihood, name="likelihood")
    encoder_body, decoder_body = networks.vector_mlp(
        likelihood.params_per_value, s.hidden_units, s.activation
    )
    return builder.assemble(
        s,
        likelihood,
        encoder_body,
        decoder_body,
        image_shape=None,
        num_classes=num_classes,
        seed=seed,
    )


def frame_batches(
    vae: VAE, frame: pd.DataFrame, labels, batch_size: int
) -> tf.data.Dataset:
    """Returns a DataFrame's rows, in order, as the batches `vae` takes.

    The one place a frame's labels reach a table VAE: a conditional VAE's
    batches are (cells, labels) pairs, and its labels must be int class
    codes, one per row (`tables.checked_labels`); an unconditional VAE's
    batches are the cells alone, whatever the labels.

    Args:
        vae: a table VAE.
        frame: rows of the schema's columns.
        labels: int `[rows]` class codes for a conditional VAE; else unused.
        batch_size: rows per batch (the last one short).

    Returns:
        A dataset of rows float32 `[batch, columns]`, or (rows, labels) pairs.

    Raises:
        ValueError: a conditional VAE without int labels, or labels not one
            per row.

    Example:
        >>> dataset = frame_batches(vae, test, None, 100)  # doctest: +SKIP
    """
    schema = vae.likelihood.schema
    if not vae.conditional:
        return tables.table_batches(frame, schema, batch_size)
    if labels is None or not np.issubdtype(np.asarray(labels).dtype, np.integer):
        given = None if labels is None else np.asarray(labels)[:5].tolist()
        raise ValueError(
            "A conditional VAE needs each row's class as an int code: pass "
            f"labels=[rows] ints. Received: labels starting {given}"
        )
    return tables.table_batches(frame, schema, batch_size, labels=labels)


def impute(vae: VAE, cells: dict, labels: tf.Tensor | None = None) -> tf.Tensor:
    """Returns the rows of `cells` with every missing cell filled in.

    A missing cell takes its column's `RowDistribution.imputation` under
    p(x|z) at z = the posterior mean given the present cells: a number
    column's mean, a binary or categorical column's most likely value; a
    present cell keeps its value.

    Args:
        vae: a table VAE (`build_table_vae`).
        cells: a batch of cells {column: `[batch]`} (NaN or "" where
            missing), or of rows as `tables.table_batches` makes.
        labels: int `[batch]` classes, for a conditional VAE.

    Returns:
        float32 `[batch, columns]` rows in the data's units, categorical
        columns as their codes (`schema["columns"][i]["categories"]`).

    Example:
        >>> rows = impute(vae, {"x": [1.5, float("nan")]})  # doctest: +SKIP
    """
    # Rows are observed as they are: the seed is not used.
    x, q = vae.observe_and_encode(cells, tf.zeros([2], tf.int64), labels)
    filled = vae.decode(q.mean(), labels).imputation()
    return tf.where(tf.math.is_nan(x), filled, x)


def sample_rows(
    vae: VAE, num_samples, seed: tf.Tensor, labels: tf.Tensor | None = None
) -> tf.Tensor:
    """Returns rows drawn from the model: z from the prior, then x ~ p(x|z).

    A row is drawn from p(x|z), not its mean: synthetic rows keep the data's
    spread, counts stay whole, categories are drawn.

    Args:
        vae: a table VAE (`build_table_vae`).
        num_samples: how many rows, an int or int32 scalar tensor.
        seed: int64 `[2]` stateless seed: the z are the images' own for it
            (`VAE.sample_latent(num_samples, seed)`), the x noise comes
            from `noise.draw_seed(seed)`.
        labels: int `[num_samples]` classes, for a conditional VAE.

    Returns:
        float32 `[num_samples, columns]` in the data's units, categorical
        columns as their codes.

    Example:
        >>> seed = tf.constant([0, 1], tf.int64)
        >>> rows = sample_rows(vae, 100, seed)  # doctest: +SKIP
    """
    z = vae.sample_latent(num_samples, seed)
    return vae.decode(z, labels).sample(seed=noise.draw_seed(seed))
