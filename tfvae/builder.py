"""Building a VAE from plain settings, and what it will take in memory.

`build_vae(image_shape, **settings)` makes (and creates the weights of) the
VAE that `python -m tfvae.train` trains for the same settings: each setting
is a `model_settings.ModelSettings` field, optional, with its flag's default,
and checked as the flag is. `estimate_bytes` says, from the settings alone
and before anything is built, about how much memory the model's parameters
(with Adam's slots) and one training step take; `memory_problem` turns that
into a refusal naming the figure and the setting, which `build_vae` raises
for a model whose parameters alone exceed this machine's memory.

Example:

    vae = build_vae((28, 28, 1), latent_dim=16)
    vae.compile(optimizer="adam")
"""

import dataclasses
import math
import os
from collections.abc import Callable

from tfvae import errors, fields, likelihoods, networks, posteriors, priors
from tfvae.model import VAE
from tfvae.model_settings import ModelSettings
from tfvae.parts import Decoder, Encoder, check_image_shape

# Bytes per float32 value; a trained weight also has a gradient and Adam's
# two slots.
_FLOAT = 4
_PER_TRAINED_WEIGHT = 4 * _FLOAT


def physical_memory() -> int:
    """Returns this machine's physical memory, in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _settings(settings: dict) -> ModelSettings:
    """Returns the checked settings with defaults, refusing unknown names."""
    valid = [f.name for f in dataclasses.fields(ModelSettings)]
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise errors.UsageError(
            f"Unknown model settings {unknown}. The settings are: {', '.join(valid)}"
        )
    values = ModelSettings(**settings)
    fields.check_applies(
        ModelSettings, settings, dataclasses.asdict(values), fields.python_name
    )
    return values


def _dense(inputs: int, units: int) -> int:
    return inputs * units + units


def _parts(image_shape, num_classes, s: ModelSettings) -> list[tuple[int, int, str]]:
    """Returns [(parameters, activations per example and sample, setting)].

    One entry per large part, each with the setting that sizes it most; the
    activations are the part's float outputs, per example for the encoder
    and per example and latent sample for the rest.
    """
    pixels = math.prod(image_shape)
    classes = num_classes if s.conditional and num_classes else 0
    per_value = likelihoods.LIKELIHOODS[s.likelihood](
        **s.model_settings()
    ).params_per_value
    # What sizes the likelihood's parameters: the pixels, or the mixture.
    values_name = (
        "mixture_components"
        if s.likelihood == "logistic_mixture" and per_value > pixels
        else "image_shape"
    )
    dims, hidden = s.latent_dim, s.hidden_units
    parts = []
    if s.network == "conv":
        height, width, channels = image_shape
        sizes, inputs = [], channels + classes
        for index, filters in enumerate(s.conv_filters):
            area = math.ceil(height / 2 ** (index + 1)) * math.ceil(
                width / 2 ** (index + 1)
            )
            parts.append(
                (9 * inputs * filters + filters, area * filters, "conv_filters")
            )
            sizes.append((area, filters))
            inputs = filters
        flat = sizes[-1][0] * sizes[-1][1]
        # The decoder mirrors them (transposed), and ends in a convolution
        # to the likelihood's parameters.
        inputs = s.conv_filters[-1]
        for (area, _), filters in zip(sizes[::-1], s.conv_filters[::-1], strict=True):
            parts.append(
                (9 * inputs * filters + filters, area * filters, "conv_filters")
            )
            inputs = filters
        outputs = channels * per_value
        parts.append((9 * inputs * outputs + outputs, pixels * per_value, values_name))
    else:
        flat = pixels + classes
    widths = [flat, *hidden]
    for inputs, units in zip(widths, widths[1:], strict=False):
        name = "image_shape" if inputs == flat and inputs > units else "hidden_units"
        parts.append((_dense(inputs, units), units, name))
    features = widths[-1]
    if s.posterior == "full":
        projection = dims[0] + dims[0] * (dims[0] + 1) // 2
    else:
        projection = 2 * dims[0]
    name = "latent_dim" if dims[0] > features else "hidden_units"
    parts.append((_dense(features, projection), projection, name))
    decoder_widths = [dims[0] + classes, *hidden[::-1]]
    for inputs, units in zip(decoder_widths, decoder_widths[1:], strict=False):
        name = "latent_dim" if inputs > units else "hidden_units"
        parts.append((_dense(inputs, units), units, name))
    last = decoder_widths[-1]
    if s.network == "conv":
        last_units = flat
    else:
        last_units = pixels * per_value
    name = (
        (values_name if s.network == "mlp" else "image_shape")
        if last_units > last
        else "latent_dim"
    )
    parts.append((_dense(last, last_units), last_units, name))
    depth = len(hidden) or 1
    for lower, upper in zip(dims, dims[1:], strict=False):
        between = 2 * upper
        for inputs, head in ((lower, 2 * upper), (upper, 2 * lower)):
            params = _dense(inputs, between) + (depth - 1) * _dense(between, between)
            parts.append(
                (params + _dense(between, head), depth * between, "latent_dim")
            )
    if s.prior == "mog":
        parts.append((s.prior_components * (2 * dims[-1] + 1), 0, "prior_components"))
    elif s.prior == "vamp":
        parts.append((s.prior_components * pixels, 0, "prior_components"))
    return parts


def estimate_bytes(
    image_shape: tuple[int, int, int],
    batch_size: int | None = None,
    *,
    num_classes: int | None = None,
    training: bool = True,
    **settings,
) -> int:
    """Returns about how many bytes training the VAE of `settings` takes.

    A lower estimate made before anything is built. Without `batch_size`,
    the float32 parameters alone (4 bytes each); with it, training: the
    parameters with their gradients and Adam's two slots (16 bytes each),
    plus one step's float activations (kept for the backward pass, and their
    gradients) for `train_samples` samples of each example; with
    `training=False`, scoring a batch: the parameters and the activations,
    once each.

    Args:
        image_shape: the raw images' (H, W, C).
        batch_size: examples per training step; None counts the parameters
            only.
        num_classes: the classes of a conditional VAE.
        training: a training step (True) or a forward pass only (False).
        **settings: `ModelSettings` fields by name (defaults for the rest).

    Returns:
        Bytes, an int.

    Example:
        >>> estimate_bytes((28, 28, 1), 256) < 2**30
        True
    """
    s = _settings(settings)
    parts = _parts(check_image_shape(image_shape), num_classes, s)
    params = sum(count for count, _, _ in parts)
    if not batch_size:
        return _FLOAT * params
    activations = (
        _FLOAT * batch_size * s.train_samples * sum(count for _, count, _ in parts)
    )
    if not training:
        return _FLOAT * params + activations
    return _PER_TRAINED_WEIGHT * params + 2 * activations


def memory_problem(
    image_shape: tuple[int, int, int],
    batch_size: int | None = None,
    *,
    available: int | None = None,
    name: Callable[..., str] = fields.python_name,
    num_classes: int | None = None,
    **settings,
) -> str | None:
    """Returns why the VAE of `settings` cannot fit in memory, or None.

    Args:
        image_shape, batch_size, num_classes, settings: as `estimate_bytes`.
        available: bytes the model may take; default this machine's memory.
        name: how the message names a setting (`fields.python_name` or
            `fields.flag_name`).

    Returns:
        The estimate, the memory, and the setting sizing the largest part.
    """
    available = physical_memory() if available is None else available
    needed = estimate_bytes(
        image_shape, batch_size, num_classes=num_classes, **settings
    )
    if needed <= available:
        return None
    s = _settings(settings)
    parts = _parts(tuple(image_shape), num_classes, s)
    largest, _, culprit = max(parts, key=lambda part: part[0])
    weights = estimate_bytes(image_shape, num_classes=num_classes, **settings)
    if batch_size and needed - 4 * weights > 4 * _FLOAT * largest:
        # The step's activations outweigh the largest part's weights.
        culprit = "train_samples" if s.train_samples > 1 else "batch_size"
    step = f" and one step of {batch_size} images" if batch_size else ""
    if culprit == "image_shape":
        source = f"the image size {'x'.join(map(str, image_shape))}: use smaller images"
    else:
        value = {"batch_size": batch_size, **s.model_settings()}[culprit]
        source = f"{name(culprit)}: make it smaller. Received: {name(culprit, value)}"
    return (
        f"The model{step} would need about {needed / 2**30:,.1f} GiB of memory, "
        f"more than the {available / 2**30:,.1f} GiB available; most of it comes "
        f"from {source}"
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
            gradient, beta, free_bits.

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
    s = _settings(settings)
    if s.conditional and not num_classes:
        raise errors.UsageError(
            f"A conditional VAE needs the number of classes. Received: {num_classes=}"
        )
    values = s.model_settings()
    problem = memory_problem(image_shape, num_classes=num_classes, **values)
    if problem:
        raise errors.UsageError(problem)
    image_shape = tuple(image_shape)
    dims = s.latent_dim
    condition = s.conditional or None
    likelihood = likelihoods.LIKELIHOODS[s.likelihood](**values)
    encoder_body, decoder_body = networks.NETWORKS[s.network](
        image_shape, likelihood.params_per_value, **values
    )
    depth = len(s.hidden_units) or 1

    def upper(layer: int, cls, name: str):
        # Between layers `layer` and `layer + 1`, as wide as twice the upper one.
        head_layer = layer + 1 if cls is Encoder else layer
        return cls(
            networks.latent_body(depth, 2 * dims[layer + 1], s.activation),
            posteriors.NormalDiagHead(dims[head_layer], name="posterior"),
            name=f"{name}_{layer + 1}",
        )

    return VAE(
        Encoder(
            encoder_body,
            posteriors.POSTERIORS[s.posterior](**{**values, "latent_dim": dims[0]}),
            condition=condition and networks.CONDITIONING[s.network],
            name="encoder",
        ),
        Decoder(
            decoder_body, likelihood, condition=condition and "vector", name="decoder"
        ),
        priors.PRIORS[s.prior](
            **{**values, "latent_dim": dims[-1], "image_shape": image_shape}
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
        name="vae",
    )
