"""The forms a batch comes in, and the one check of its images.

A table VAE's batches are rows or cells (`tfvae.table_rows`), read by the
same function.

`fit`, `evaluate`, `VAE.call` and the evaluation hand a VAE batches in the
forms TFDS and users make: images; `(images, labels)` pairs; TFDS's dicts
`{"image": ..., "label": ...}`. `unpack_batch` reads them all, and refuses
what the VAE cannot score (a conditional VAE without labels; images of
another dtype than its likelihood's `image_dtype`), at trace time, naming the
fix: nothing is rescaled silently.

Example:

    images, labels = unpack_batch(vae, {"image": images, "label": labels})
"""

import tensorflow as tf

# The dtype a multi-worker input pipeline carries uint8 pixels in: Keras
# reduces the first batch across workers with a collective op, and those
# cannot reduce uint8 (`distribute.distribute_batches`). Under a
# MultiWorkerMirroredStrategy, and only there, such images are pixels.
COLLECTIVE_PIXELS = tf.int32


def unpack_batch(vae, data) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Returns (images, labels) of one batch, in any form `fit` is handed.

    Args:
        vae: the `VAE` the batch is for.
        data: images `[batch, H, W, C]`; an `(images, labels)` pair (or
            `(images,)`); or a TFDS dict `{"image": ..., "label": ...}`. For
            a table VAE: rows float32 `[batch, columns]` or cells
            {column: `[batch]`}, alone, as `(batch,)` or `(batch, labels)`.

    Returns:
        The images (a table's rows or cells), and the int labels
        `[batch]` for a conditional VAE (None for an unconditional one,
        which ignores any labels it is given).

    Raises:
        ValueError: a conditional VAE given no labels; images of another
            dtype than the likelihood's `image_dtype` (uint8 pixels 0..255),
            naming the fix, or of another shape than the VAE's. All at trace
            time, before any step runs.
    """
    if vae.likelihood.tabular:
        return _unpack_rows(vae, data)
    images, labels = split_form(data)
    if vae.conditional and labels is None:
        raise ValueError(
            "This conditional VAE needs each image's class: pass (images, labels) "
            "batches or TFDS dicts {'image': ..., 'label': ...}. Received: images "
            "without labels"
        )
    images = tf.convert_to_tensor(images)
    if images.dtype == COLLECTIVE_PIXELS and isinstance(
        tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy
    ):
        images = tf.cast(images, vae.likelihood.image_dtype)
    check_images(images.dtype, images.shape, vae.likelihood, vae.image_shape)
    # Keras relaxes a step's traced shape to [None] * rank once it has seen
    # two: the check at run time then says what the static one would have.
    batch = [None] if images.shape.rank == len(vae.image_shape) + 1 else []
    images = tf.ensure_shape(images, [*batch, *vae.image_shape], name="images")
    return images, labels if vae.conditional else None


def split_form(data) -> tuple:
    """Returns (images, labels or None) of a batch in any form, or of its spec.

    Reads images, `(images,)`, `(images, labels)` and TFDS dicts
    `{"image": ..., "label": ...}`, whether of tensors or of `tf.TensorSpec`s
    (a dataset's `element_spec`, read before any map).

    Raises:
        ValueError: a dict without "image", or a tuple of another length.
    """
    if isinstance(data, dict):
        if "image" not in data:
            raise ValueError(
                "A dict batch holds its images under 'image', as TFDS's do. "
                f"Received: keys {sorted(data)}"
            )
        return data["image"], data.get("label")
    return _pair(data, "images")


def check_images(dtype, shape, likelihood, image_shape) -> None:
    """Raises ValueError unless images of `dtype` and `shape` fit the model.

    Args:
        dtype: the images' dtype; it must be `likelihood.image_dtype`.
        shape: the images' (static) shape: `[H, W, C]` one image, or
            `[batch, H, W, C]`, with (H, W, C) compatible with `image_shape`.
        likelihood: the model's likelihood head (or what stands for it).
        image_shape: the model's `(H, W, C)`.

    Raises:
        ValueError: naming what was received, what is expected and the fix.
    """
    expected = tf.as_dtype(likelihood.image_dtype)
    if dtype != expected:
        fix = (
            "tf.cast(tf.round(images * 255), tf.uint8) for pixels in [0, 1]"
            if dtype.is_floating
            else "tf.cast(images, tf.uint8) for values 0..255"
        )
        raise ValueError(
            f"{type(likelihood).__name__} takes {expected.name} images (pixels "
            f"0..255); convert them first, e.g. {fix}. Received: images of dtype "
            f"{dtype.name}"
        )
    shape, rank = tf.TensorShape(shape), len(image_shape)
    if shape.rank is not None and (
        shape.rank not in (rank, rank + 1)
        or not shape[-rank:].is_compatible_with(image_shape)
    ):
        raise ValueError(
            f"The images must be [H, W, C] each or [batch, H, W, C], with "
            f"(H, W, C) = {tuple(image_shape)}. Received: images of shape "
            f"{shape.as_list()}"
        )


def _unpack_rows(vae, data) -> tuple[dict, tf.Tensor | None]:
    """Returns (rows or cells, labels) of a table VAE's batch, checked by its head."""
    data, labels = _pair(data, "rows")
    if vae.conditional and labels is None:
        raise ValueError(
            "This conditional VAE needs each row's class: pass (rows, labels) "
            "batches. Received: rows without labels"
        )
    return vae.likelihood.check_batch(data), labels if vae.conditional else None


def _pair(data, what: str) -> tuple:
    """Returns (data, labels or None) of `data`, `(data,)` or `(data, labels)`."""
    if not isinstance(data, tuple | list):
        return data, None
    if len(data) not in (1, 2):
        raise ValueError(
            f"A batch is {what}, ({what},) or ({what}, labels). Received: a "
            f"{type(data).__name__} of {len(data)}"
        )
    return data[0], (data[1] if len(data) == 2 else None)
