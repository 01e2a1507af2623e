"""A VAE of a table's rows: building one from a schema, and filling in its gaps.

`build_table_vae(schema, ...)` makes a `VAE` whose likelihood is the
schema's `table_likelihood.TableHead` and whose encoder and decoder are
`networks.vector_mlp` bodies (categorical inputs one-hot, plus the presence
mask). It trains with `fit` on `tables.table_batches`, and
`tfvae.table_evaluation.evaluate_table` scores it. `impute` fills a batch's
missing cells with the decoder's mean at the posterior mean (the row's
reconstruction), keeping the present cells as they are.

Example:

    schema, train, test = tables.read_table("wine.csv")
    vae = build_table_vae(schema, latent_dim=4)
    vae.compile(optimizer="adam")
    vae.fit(tables.table_batches(train, schema, 32, shuffle_seed=0), epochs=100)
    filled = impute(vae, next(iter(tables.table_batches(test, schema, 8))))
"""

import tensorflow as tf

from tfvae import networks, posteriors, priors
from tfvae.model import VAE
from tfvae.parts import Decoder, Encoder
from tfvae.table_likelihood import TableHead

# The defaults of `build_table_vae`: small networks for tables of tens of
# columns.
LATENT_DIM = 8
HIDDEN_UNITS = (128, 128)
ACTIVATION = "relu"


def build_table_vae(
    schema: dict,
    *,
    latent_dim: int = LATENT_DIM,
    hidden_units: tuple[int, ...] = HIDDEN_UNITS,
    activation: str = ACTIVATION,
    count_likelihood: str = "negative_binomial",
    posterior: str = "diag",
    kl: str = "analytic",
    objective: str = "elbo",
    train_samples: int = 1,
    seed: int = 0,
) -> VAE:
    """Builds (and creates the weights of) a VAE of the rows of `schema`'s table.

    Args:
        schema: the table's schema (`tables.read_table`, `tables.infer_schema`).
        latent_dim: the size of z.
        hidden_units: the encoder's dense layers (the decoder mirrors them).
        activation: the hidden layers' Keras activation.
        count_likelihood: the likelihood of count columns, one of
            `table_likelihood.COUNT_LIKELIHOODS`.
        posterior: "diag" or "full" (`posteriors.POSTERIORS`).
        kl, objective, train_samples: as `VAE`'s.
        seed: seeds the model's noise; the weights are initialized from
            Keras's global seed (`keras.utils.set_random_seed`).

    Returns:
        The built `VAE` (with `image_shape=None`), taking batches {column:
        `[batch]` cells} (`tables.table_batches`).

    Raises:
        ValueError: a bad setting, naming it.

    Example:
        >>> schema = {"columns": [{"name": "x", "type": "real", "mean": 0.0,
        ...     "std": 1.0}, {"name": "n", "type": "count", "mean": 1.0,
        ...     "std": 0.5}]}
        >>> build_table_vae(schema, latent_dim=2, hidden_units=(8,)).latent_dim
        2
    """
    if (
        isinstance(latent_dim, bool)
        or not isinstance(latent_dim, int)
        or latent_dim < 1
    ):
        raise ValueError(
            f"latent_dim must be a positive integer. Received: {latent_dim=}"
        )
    if posterior not in posteriors.POSTERIORS:
        raise ValueError(
            f"posterior must be one of {', '.join(posteriors.POSTERIORS)}. "
            f"Received: {posterior=}"
        )
    hidden_units = tuple(hidden_units)
    likelihood = TableHead(schema, count_likelihood, name="likelihood")
    encoder_body, decoder_body = networks.vector_mlp(
        likelihood.params_per_value, hidden_units, activation
    )
    return VAE(
        Encoder(
            encoder_body,
            posteriors.POSTERIORS[posterior](latent_dim=latent_dim),
            name="encoder",
        ),
        Decoder(decoder_body, likelihood, name="decoder"),
        priors.StandardNormal(latent_dim, name="prior"),
        image_shape=None,
        kl=kl,
        seed=seed,
        objective=objective,
        train_samples=train_samples,
        name="vae",
    )


def impute(vae: VAE, cells: dict, labels: tf.Tensor | None = None) -> tf.Tensor:
    """Returns the rows of `cells` with every missing cell filled in.

    A missing cell takes its column's mean under p(x|z) at z = the posterior
    mean given the present cells (a categorical column's most likely
    category); a present cell keeps its value.

    Args:
        vae: a table VAE (`build_table_vae`).
        cells: a batch {column: `[batch]` cells}, as `tables.table_batches`
            makes (NaN or "" where missing).
        labels: int `[batch]` classes, for a conditional VAE.

    Returns:
        float32 `[batch, columns]` rows in the data's units, categorical
        columns as their codes (`schema["columns"][i]["categories"]`).

    Example:
        >>> rows = impute(vae, {"x": [1.5, float("nan")]})  # doctest: +SKIP
    """
    # Rows are observed as they are: the seed is not used.
    x, q = vae.observe_and_encode(cells, tf.zeros([2], tf.int64), labels)
    filled = vae.decode_mean(q.mean(), labels)
    return tf.where(tf.math.is_nan(x), filled, x)
