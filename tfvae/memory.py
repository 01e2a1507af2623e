"""What a VAE will take in memory, from its settings alone, before it is built.

`estimate_bytes` says about how much memory the model's parameters (with
Adam's slots) and one training step take, from `sizes.parts`;
`memory_problem` turns that into a refusal naming the figure and the
setting that sizes the largest part, which `builder.checked_settings` raises
for a model whose parameters alone exceed this machine's memory
(`physical_memory`), and the command line for one step of its batch.

Example:

    if (problem := memory_problem((28, 28, 1), 256, latent_dim=16)):
        raise MemoryError(problem)
"""

import os
from collections.abc import Callable

from tfvae import fields, model_settings, sizes
from tfvae.model_settings import ModelSettings
from tfvae.parts import check_image_shape

# Bytes per float32 value; a trained weight also has a gradient and Adam's
# two slots.
_FLOAT = 4
_PER_TRAINED_WEIGHT = 4 * _FLOAT


def physical_memory() -> int:
    """Returns this machine's physical memory, in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _shape_and_parts(image_shape, schema, num_classes, settings: dict):
    """Returns (checked settings, `sizes.parts`) of an image's or a table's VAE."""
    if (image_shape is None) == (schema is None):
        raise ValueError(
            "A VAE is an image's (image_shape) or a table's (schema=...). "
            f"Received: image_shape={image_shape!r} and a schema: {schema is not None}"
        )
    s = model_settings.checked(settings, tabular=schema is not None)
    if schema is None:
        image_shape = check_image_shape(image_shape)
    return s, sizes.parts(image_shape, num_classes, s, schema)


def _bytes(parts, s: ModelSettings, batch_size, training: bool) -> int:
    """Returns `estimate_bytes` of `sizes.parts`."""
    params = sum(count for count, _, _ in parts)
    if not batch_size:
        return _FLOAT * params
    activations = (
        _FLOAT * batch_size * s.train_samples * sum(count for _, count, _ in parts)
    )
    if not training:
        return _FLOAT * params + activations
    return _PER_TRAINED_WEIGHT * params + 2 * activations


def estimate_bytes(
    image_shape: tuple[int, int, int] | None,
    batch_size: int | None = None,
    *,
    num_classes: int | None = None,
    training: bool = True,
    schema: dict | None = None,
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
        image_shape: the raw images' (H, W, C); None for a table.
        batch_size: examples per training step; None counts the parameters
            only.
        num_classes: the classes of a conditional VAE.
        training: a training step (True) or a forward pass only (False).
        schema: a table's schema (`tables.infer_schema`), for a table's VAE
            (`table_model.build_table_vae`), with `image_shape=None`.
        **settings: `ModelSettings` fields by name (defaults for the rest).

    Returns:
        Bytes, an int.

    Example:
        >>> estimate_bytes((28, 28, 1), 256) < 2**30
        True
        >>> estimate_bytes(None, 256, schema=schema, latent_dim=4)  # doctest: +SKIP
    """
    s, parts = _shape_and_parts(image_shape, schema, num_classes, settings)
    return _bytes(parts, s, batch_size, training)


def memory_problem(
    image_shape: tuple[int, int, int] | None,
    batch_size: int | None = None,
    *,
    available: int | None = None,
    name: Callable[..., str] = fields.python_name,
    num_classes: int | None = None,
    schema: dict | None = None,
    **settings,
) -> str | None:
    """Returns why the VAE of `settings` cannot fit in memory, or None.

    Args:
        image_shape, batch_size, num_classes, schema, settings: as
            `estimate_bytes`.
        available: bytes the model may take; default this machine's memory.
        name: how the message names a setting (`fields.python_name` or
            `fields.flag_name`).

    Returns:
        The estimate, the memory, and the setting sizing the largest part.

    Example:
        >>> memory_problem((28, 28, 1), 256) is None
        True
    """
    available = physical_memory() if available is None else available
    s, parts = _shape_and_parts(image_shape, schema, num_classes, settings)
    needed = _bytes(parts, s, batch_size, training=True)
    if needed <= available:
        return None
    largest, _, culprit = max(parts, key=lambda part: part[0])
    weights = _bytes(parts, s, None, training=True)
    if batch_size and needed - 4 * weights > 4 * _FLOAT * largest:
        # The step's activations outweigh the largest part's weights.
        culprit = "train_samples" if s.train_samples > 1 else "batch_size"
    examples = "images" if schema is None else "rows"
    step = f" and one step of {batch_size} {examples}" if batch_size else ""
    if culprit == "image_shape":
        source = f"the image size {'x'.join(map(str, image_shape))}: use smaller images"
    elif culprit == "columns":
        features, params = sizes.table_widths(schema, s)
        source = (
            f"the table's width ({features} encoder inputs, {params} likelihood "
            "parameters): model fewer columns, or categorical columns with fewer "
            "categories"
        )
    else:
        value = {"batch_size": batch_size, **s.model_settings()}[culprit]
        source = f"{name(culprit)}: make it smaller. Received: {name(culprit, value)}"
    return (
        f"The model{step} would need about {needed / 2**30:,.1f} GiB of memory, "
        f"more than the {available / 2**30:,.1f} GiB available; most of it comes "
        f"from {source}"
    )
