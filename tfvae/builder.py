"""Building a VAE from plain settings, and what it will take in memory.

`build_vae(image_shape, **settings)` makes (and creates the weights of) the
VAE that `python -m tfvae.train` trains for the same settings: each setting
is a `model_settings.ModelSettings` field, optional, with its flag's default,
and checked as the flag is. `table_model.build_table_vae` builds the same
family for a table's rows through the same two steps: `checked_settings`
(names, values, combinations, the data's kind, memory) and `assemble` (the
posterior, the layers between stochastic layers, the prior, the
conditioning and the objective around a likelihood and its two bodies).
`checked_settings` refuses a model whose parameters alone exceed this
machine's memory (`tfvae.memory`).

Example:

    vae = build_vae((28, 28, 1), latent_dim=16)
    vae.compile(optimizer="adam")
"""

import keras

from tfvae import (
    errors,
    likelihoods,
    memory,
    model_settings,
    networks,
    posteriors,
    priors,
    rules,
)
from tfvae.model import VAE
from tfvae.model_settings import ModelSettings
from tfvae.parts import Decoder, Encoder, encoder_input_shape


def checked_settings(
    settings: dict,
    *,
    image_shape: tuple[int, int, int] | None = None,
    schema: dict | None = None,
    num_classes: int | None = None,
) -> ModelSettings:
    """Returns the settings of an image's or a table's VAE, checked.

    The first step of `build_vae` and `table_model.build_table_vae`.

    Args:
        settings: `ModelSettings` fields by name, as the user gave them.
        image_shape: the raw images' (H, W, C), for an image's VAE.
        schema: the table's schema, for a table's VAE.
        num_classes: the dataset's number of classes, needed if
            `conditional`.

    Returns:
        The `ModelSettings`, defaults for the settings not given.

    Raises:
        errors.UsageError (a ValueError): an unknown setting (listing the
            valid ones), a bad value or combination, a setting that does not
            apply to the data (`rules.data_problem`), a conditional VAE
            without `num_classes`, or a model whose parameters alone exceed
            this machine's memory; each naming the argument.

    Example:
        >>> checked_settings({"latent_dim": 4}, image_shape=(8, 8, 1)).latent_dim
        (4,)
    """
    s = model_settings.checked(settings, tabular=schema is not None)
    if s.conditional and not num_classes:
        raise errors.UsageError(
            f"A conditional VAE needs the number of classes. Received: {num_classes=}"
        )
    problem = memory.memory_problem(
        image_shape,
        num_classes=num_classes,
        schema=schema,
        **s.model_settings(tabular=schema is not None),
    )
    if problem:
        raise errors.UsageError(problem)
    return s


def assemble(
    s: ModelSettings,
    likelihood,
    encoder_body: keras.Layer,
    decoder_body: keras.Layer,
    *,
    image_shape: tuple[int, int, int] | None,
    num_classes: int | None,
    seed: int,
) -> VAE:
    """Returns the VAE of settings `s` around a likelihood and its two bodies.

    The second step of `build_vae` and `table_model.build_table_vae`: the
    posterior head, the layers between stochastic layers, the prior (a
    VampPrior's pseudo-inputs where the encoder's inputs live: pixels in
    [0, 1], or a table row's unbounded features), the conditioning and the
    objective. The parts are made in one fixed order (the weights' draws
    follow it).

    Args:
        s: the checked settings (`checked_settings`).
        likelihood: the likelihood head (`tfvae.likelihoods`, or a
            `TableHead`).
        encoder_body, decoder_body: the networks between data and heads.
        image_shape: the raw images' (H, W, C); None for a table.
        num_classes: the classes of a conditional VAE.
        seed: seeds the model's noise.

    Returns:
        The built `VAE`.

    Example:
        >>> vae = assemble(s, head, *networks.vector_mlp(head.params_per_value,
        ...     (8,), "relu"), image_shape=None, num_classes=None, seed=0)
        ... # doctest: +SKIP
    """
    values = s.model_settings(tabular=image_shape is None)
    dims = s.latent_dim
    condition = s.conditional or None
    depth = len(s.hidden_units) or 1
    # A gated network's layers between stochastic layers are gated too.
    activation = None if s.network in networks.GATED else s.activation

    top_down = s.hierarchy == rules.TOP_DOWN  # Images only (rules.IMAGE_SETTINGS).

    def upper(layer: int, cls, name: str):
        # Between layers `layer` and `layer + 1`, twice the upper one's width;
        # "vampprior"'s q(z1|x, z2): the network's encoder body on x and z2.
        lower_q = cls is Encoder and top_down
        return cls(
            networks.NETWORKS[s.network](
                image_shape, likelihood.params_per_value, **values
            )[0]
            if lower_q
            else networks.latent_body(depth, 2 * dims[layer + 1], activation),
            posteriors.NormalDiagHead(
                dims[layer + (cls is Encoder and not top_down)], name="posterior"
            ),
            condition=networks.CONDITIONING[s.network] if lower_q else None,
            name=f"{name}_{layer + 1}",
        )

    return VAE(
        Encoder(
            encoder_body,
            # Of z1; of the top layer, z2, with hierarchy="vampprior".
            posteriors.POSTERIORS[s.posterior](
                **{**values, "latent_dim": dims[-1 if top_down else 0]}
            ),
            condition=condition and networks.CONDITIONING[s.network],
            name="encoder",
        ),
        Decoder(
            decoder_body, likelihood, condition=condition and "vector", name="decoder"
        ),
        priors.PRIORS[s.prior](
            **{
                **values,
                "latent_dim": dims[-1],
                "pseudo_shape": encoder_input_shape(likelihood, image_shape),
                # Pixels are in [0, 1]; a table's standardized cells are not.
                "bounded": image_shape is not None,
            }
        ),
        image_shape=image_shape,
        kl=s.kl,
        seed=seed,
        upper_encoders=[upper(i, Encoder, "encoder") for i in range(len(dims) - 1)],
        upper_decoders=[upper(i, Decoder, "decoder") for i in range(len(dims) - 1)],
        objective=s.objective,
        train_samples=s.train_samples,
        gradient=s.gradient,
        beta=s.beta,
        free_bits=s.free_bits,
        num_classes=num_classes if s.conditional else None,
        hierarchy=s.hierarchy,
        name="vae",
    )


def build_vae(
    image_shape: tuple[int, int, int],
    *,
    seed: int = 0,
    num_classes: int | None = None,
    **settings,
) -> VAE:
    """Builds (and creates the weights of) a VAE for raw images `image_shape`.

    Args:
        image_shape: (H, W, C) of the raw `uint8` images.
        seed: seeds the model's noise (binarization, z); the weights are
            initialized from Keras's global seed (`keras.utils.set_random_seed`).
        num_classes: the dataset's number of classes, needed if `conditional`.
        **settings: any `model_settings.ModelSettings` field by name (the
            `python -m tfvae.train` flags of the model), each defaulting to
            its flag's default: likelihood, binarize, gaussian_scale,
            mixture_components, posterior, latent_dim (one size per
            stochastic layer, bottom first; an int is one layer), network,
            hidden_units, conv_filters, activation, kl, prior,
            prior_components, conditional, objective, train_samples,
            gradient, beta, free_bits. A table's `count_likelihood` is
            refused.

    Returns:
        The built `VAE`.

    Raises:
        errors.UsageError (a ValueError): an unknown setting, a bad value or
            combination (naming the argument), or a model whose parameters
            alone exceed this machine's memory.

    Example:
        >>> vae = build_vae((8, 8, 1), latent_dim=4)
        >>> vae.latent_dims
        (4,)
    """
    s = checked_settings(settings, image_shape=image_shape, num_classes=num_classes)
    image_shape = tuple(image_shape)
    values = s.model_settings()
    likelihood = likelihoods.LIKELIHOODS[s.likelihood](**values)
    encoder_body, decoder_body = networks.NETWORKS[s.network](
        image_shape, likelihood.params_per_value, **values
    )
    return assemble(
        s,
        likelihood,
        encoder_body,
        decoder_body,
        image_shape=image_shape,
        num_classes=num_classes,
        seed=seed,
    )
