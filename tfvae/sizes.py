"""The size of each large part of a VAE, from its settings alone.

`parts(image_shape, num_classes, settings)` lists the parameters and the
activations of each dense layer, convolution, head and learned prior that a
VAE of those settings will have, each with the setting that sizes it most,
before anything is built: `memory.estimate_bytes` and
`memory.memory_problem` turn them into bytes and a refusal naming the
setting. A table's VAE (`schema`) has the mlp's parts, from its encoder
input's features to its likelihood's parameters (`table_widths`).

Example:

    count = sum(params for params, _, _ in parts((28, 28, 1), None, settings))
"""

import math

from tfvae import likelihoods, networks, rules
from tfvae.model_settings import ModelSettings
from tfvae.parts import encoder_input_shape
from tfvae.table_likelihood import TableHead


def _dense(inputs: int, units: int) -> int:
    return inputs * units + units


def table_widths(schema: dict, s: ModelSettings) -> tuple[int, int]:
    """Returns a table's (encoder input features, likelihood parameters).

    Args:
        schema: the table's schema (`tables.infer_schema`).
        s: the model's settings (their `count_likelihood`).

    Returns:
        (features, parameters): the widths of the encoder's input and of the
        decoder's output.

    Example:
        >>> table_widths({"columns": [{"name": "x", "type": "real", "mean": 0.0,
        ...     "std": 1.0}]}, ModelSettings())
        (2, 2)
    """
    head = TableHead(schema, s.count_likelihood)
    (features,) = encoder_input_shape(head, None)
    return features, head.params_per_value


def parts(
    image_shape, num_classes, s: ModelSettings, schema: dict | None = None
) -> list[tuple[int, int, str]]:
    """Returns [(parameters, activations per example and sample, setting)].

    One entry per large part, each with the setting that sizes it most
    ("columns" for a table's width); the activations are the part's float
    outputs, per example for the encoder and per example and latent sample
    for the rest. A table (`schema`) has the mlp's parts, between its
    encoder input's features and its likelihood's parameters.

    Args:
        image_shape: the raw images' (H, W, C); None for a table.
        num_classes: the classes of a conditional VAE.
        s: the model's (checked) settings.
        schema: a table's schema, for a table's VAE.

    Returns:
        The parts, in no particular order.

    Example:
        >>> sum(p for p, _, _ in parts((8, 8, 1), None, ModelSettings()))
        112164
    """
    classes = num_classes if s.conditional and num_classes else 0
    if schema is not None:
        inputs, outputs = table_widths(schema, s)
        inputs_name = values_name = "columns"
    else:
        pixels = math.prod(image_shape)
        per_value = likelihoods.LIKELIHOODS[s.likelihood](
            **s.model_settings()
        ).params_per_value
        inputs, outputs, inputs_name = pixels, pixels * per_value, "image_shape"
        # What sizes the likelihood's parameters: the pixels, or the mixture.
        values_name = (
            "mixture_components"
            if s.likelihood == "logistic_mixture" and per_value > pixels
            else "image_shape"
        )
    dims, hidden = s.latent_dim, s.hidden_units
    # A gated hidden layer is two dense layers' weights and outputs (`GatedDense`).
    gates = 2 if s.network in networks.GATED else 1
    # "vampprior": the encoder gives the top layer, q(z1|x, z2) is a second
    # encoder body on x joined with z2, and the decoder takes [z1, z2].
    top_down = s.hierarchy == rules.TOP_DOWN
    encoder_parts, sizes, features = _encoder_body(
        s, image_shape, inputs + classes, inputs_name, classes
    )
    parts = list(encoder_parts)
    if s.network == "conv":
        channels = image_shape[2]
        flat = sizes[-1][0] * sizes[-1][1]
        # The decoder mirrors them (transposed), and ends in a convolution
        # to the likelihood's parameters.
        fan_in = s.conv_filters[-1]
        for (area, _), filters in zip(sizes[::-1], s.conv_filters[::-1], strict=True):
            parts.append(
                (9 * fan_in * filters + filters, area * filters, "conv_filters")
            )
            fan_in = filters
        last_filters = channels * per_value
        parts.append((9 * fan_in * last_filters + last_filters, outputs, values_name))
    else:
        flat = inputs + classes
    encoded = dims[-1] if top_down else dims[0]
    if s.posterior == "full":
        projection = encoded + encoded * (encoded + 1) // 2
    else:
        projection = 2 * encoded
    name = "latent_dim" if encoded > features else "hidden_units"
    parts.append((_dense(features, projection), projection, name))
    decoder_widths = [sum(dims) if top_down else dims[0] + classes, *hidden[::-1]]
    for width, units in zip(decoder_widths, decoder_widths[1:], strict=False):
        name = "latent_dim" if width > units else "hidden_units"
        parts.append((gates * _dense(width, units), gates * units, name))
    last = decoder_widths[-1]
    last_units = flat if s.network == "conv" else outputs
    name = (
        (values_name if s.network != "conv" else "image_shape")
        if last_units > last
        else "latent_dim"
    )
    parts.append((_dense(last, last_units), last_units, name))
    depth = len(hidden) or 1
    for lower, upper in zip(dims, dims[1:], strict=False):
        between = 2 * upper
        latent_bodies = [(upper, 2 * lower)]
        if top_down:
            lower_parts, _, lower_features = _encoder_body(
                s, image_shape, inputs + upper, inputs_name, upper
            )
            parts += lower_parts
            parts.append((_dense(lower_features, 2 * lower), 2 * lower, "latent_dim"))
        else:
            latent_bodies.append((lower, 2 * upper))
        for width, head in latent_bodies:
            params = gates * (
                _dense(width, between) + (depth - 1) * _dense(between, between)
            )
            parts.append(
                (params + _dense(between, head), gates * depth * between, "latent_dim")
            )
    if s.prior == "mog":
        parts.append((s.prior_components * (2 * dims[-1] + 1), 0, "prior_components"))
    elif s.prior == "vamp":
        parts.append((s.prior_components * inputs, 0, "prior_components"))
    return parts


def _encoder_body(s: ModelSettings, image_shape, flat: int, inputs_name: str, extra):
    """Returns (parts, conv sizes [(area, filters)], features) of an encoder body.

    On `flat` inputs for dense networks, or on the image with `extra` more
    channels for conv (a class or z2 joined as channels).
    """
    gates = 2 if s.network in networks.GATED else 1
    parts, sizes = [], []
    if s.network == "conv":
        height, width, channels = image_shape
        fan_in = channels + extra
        for index, filters in enumerate(s.conv_filters):
            area = math.ceil(height / 2 ** (index + 1)) * math.ceil(
                width / 2 ** (index + 1)
            )
            parts.append(
                (9 * fan_in * filters + filters, area * filters, "conv_filters")
            )
            sizes.append((area, filters))
            fan_in = filters
        flat = sizes[-1][0] * sizes[-1][1]
    widths = [flat, *s.hidden_units]
    for width, units in zip(widths, widths[1:], strict=False):
        name = inputs_name if width == flat and width > units else "hidden_units"
        parts.append((gates * _dense(width, units), gates * units, name))
    return parts, sizes, widths[-1]
