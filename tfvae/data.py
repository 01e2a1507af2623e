"""Input pipeline: TFDS image datasets, or a user's images, as batches of raw pixels.

Every split comes out as `uint8` images `[batch, H, W, C]`, exactly as TFDS
stores them. Turning pixels into observations (binarizing, scaling, keeping
integers) belongs to the likelihood and happens inside the model's compiled
step (`tfvae.likelihoods`), so training, evaluation and the exported SavedModel all
start from the same raw pixels, and the pipeline stays cheap:

- training, while the split fits `--memory_budget`: the whole split in
  memory as one `uint8` tensor (47 MB for MNIST); each epoch draws one
  permutation and gathers batches by index, so there is no per-example work,
  no shuffle buffer to refill, and one iterator serves every epoch;
- training, for a larger split: streamed from record files
  (`tfvae.streaming`);
- evaluation during training (validation, the IWAE callback, the final
  figures): the test split in memory as one tensor, batched in TFDS's order;
- a one-pass evaluation (`tfvae.evaluate`): read -> batch -> prefetch.

A user's folder of images (`tfvae.image_folder`, `--image_folder`) is built
once into the TFDS data dir, and from then on is a TFDS dataset like any other.
"""

import contextlib
import dataclasses

import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging
from tensorflow_datasets.core.download import download_manager

from tfvae import errors, folders, tfds_sources
from tfvae.image_folder import ImageFolder
from tfvae.splits import TEST_SPLIT, TRAIN_SPLIT


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the model needs to know about a dataset."""

    name: str
    image_shape: tuple[int, int, int]  # (H, W, C)
    num_train: int
    num_test: int
    num_classes: int | None


def load_builder(
    name: str, data_dir: str | None, image_folder: ImageFolder | None = None
) -> tfds.core.DatasetBuilder:
    """Returns TFDS's builder for `name`, checked to hold fixed-shape uint8 images.

    With `image_folder`, returns the builder of that folder instead (`name` is
    then unused). Reads only metadata (no download; of a folder, its listing
    and one image's header), so bad input fails before any data work. Raises
    `UsageError` naming the fix for an unknown dataset, one without a
    fixed-shape uint8 `image` feature, and a folder without train/ and test/
    images.
    """
    if data_dir:
        folders.check_not_file(data_dir, f"--data_dir={data_dir}")
    if image_folder is not None:
        return image_folder.builder(data_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise errors.UsageError(
            f"Unknown dataset: --dataset={name}. Use a TFDS image dataset name "
            "such as mnist, fashion_mnist, kmnist, emnist or cifar10, or a table "
            "of scalar features such as wine_quality/red."
        ) from e
    features = dict(builder.info.features or {})
    image = features.get("image")
    if not isinstance(image, tfds.features.Image):
        raise errors.UsageError(
            f"--dataset={name} has no 'image' feature (features: "
            f"{sorted(features)}): this path takes image datasets. One of scalar "
            "features trains as a table (`tfvae.table_datasets`), which "
            "`python -m tfvae.train --dataset=NAME` chooses by itself."
        )
    if None in image.shape or image.dtype != tf.uint8:
        raise errors.UsageError(
            f"--dataset={name} has images of shape {image.shape} and dtype "
            f"{image.dtype.name}; tfvae needs a fixed shape and uint8 pixels."
        )
    return builder


def image_shape(builder: tfds.core.DatasetBuilder) -> tuple[int, int, int]:
    """Returns the (H, W, C) of the builder's `image` feature."""
    return tuple(builder.info.features["image"].shape)


def num_classes(builder: tfds.core.DatasetBuilder) -> int | None:
    """Returns the number of classes of the `label` feature, or None without one."""
    features = builder.info.features
    label = features["label"] if "label" in features else None
    return label.num_classes if isinstance(label, tfds.features.ClassLabel) else None


def prepare_builder(
    builder: tfds.core.DatasetBuilder,
    name: str,
    data_dir: str | None,
    manual_dir: str | None,
) -> None:
    """Builds `builder`'s dataset unless it is built: offline from `manual_dir`
    if given, else downloaded once its hosts answer (the image and the table
    datasets' one preparation). `name` names it in messages (`--dataset`, or
    a folder's name). Raises `UsageError`, naming the fix, for a data dir that
    cannot be written, a missing, empty or incomplete manual dir, an
    unreachable download and a file that is not the one TFDS expects.

    Example:
        >>> prepare_builder(tfds.builder("mnist"), "mnist", None, "mnist_files")
    """
    if builder.is_prepared():
        return
    folders.check_writable(
        builder.data_dir,
        f"--data_dir={data_dir}"
        if data_dir
        else f"TFDS's data dir {builder.data_dir} (set --data_dir)",
    )
    if manual_dir:
        tfds_sources.check_manual_dir(builder, manual_dir)
    else:
        tfds_sources.check_download_hosts(builder, name)
    logging.info(
        "Preparing TFDS dataset %s in %s%s.",
        name,
        builder.data_dir,
        f" from --manual_dir={manual_dir}" if manual_dir else "",
    )
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
    except download_manager.NonMatchingChecksumError as e:
        raise errors.UsageError(
            f"A file of --dataset={name} is not the one TFDS expects (a "
            "damaged or cut download, or another version): "
            f"{str(e).strip()}\nReplace it with the original file"
            + (f" in --manual_dir={manual_dir}." if manual_dir else ".")
        ) from None


def prepare(
    name: str,
    data_dir: str | None,
    manual_dir: str | None,
    image_folder: ImageFolder | None = None,
) -> tuple[tfds.core.DatasetBuilder, DatasetInfo]:
    """Builds TFDS dataset `name` if needed (offline from `manual_dir` if given).

    With `image_folder`, builds that folder into `data_dir` instead, once; its
    `DatasetInfo` is named after the folder. Returns the prepared builder and
    the dataset's `DatasetInfo`. Raises `UsageError`, naming the fix, for
    what `load_builder` and `prepare_builder` refuse, a dataset without
    train/test splits, and a folder's unreadable image or mixed channels.
    """
    builder = load_builder(name, data_dir, image_folder)
    if image_folder is not None:
        name = image_folder.name
    prepare_builder(builder, name, data_dir, manual_dir)
    splits = builder.info.splits
    for split in (TRAIN_SPLIT, TEST_SPLIT):
        if split not in splits:
            raise errors.UsageError(
                f"--dataset={name} has no {split!r} split (it has "
                f"{sorted(splits)}); tfvae trains on 'train' and tests on 'test'."
            )
    info = DatasetInfo(
        name=name,
        image_shape=image_shape(builder),
        num_train=splits[TRAIN_SPLIT].num_examples,
        num_test=splits[TEST_SPLIT].num_examples,
        num_classes=num_classes(builder),
    )
    return builder, info


def prefetched(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Returns `ds` prefetching two elements, with tf.data's autotuning off."""
    # tf.data's autotuner keeps a background thread that, on 2 CPU cores,
    # made every other training epoch twice as slow (measured: 1.1 s or
    # 2.5 s per MNIST epoch); this pipeline needs no tuning.
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(2).with_options(options)


def batches(images: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    """Batches and prefetches a dataset of images, in order, for one pass.

    `images` yields `uint8 [H, W, C]` (or `(image, label)` pairs); the result
    yields `uint8 [batch, H, W, C]`, every example once (the last batch may be
    short).
    """
    return prefetched(images.batch(batch_size))


def shuffled_batches(
    images, batch_size: int, seed: int, first_epoch: int = 0
) -> tf.data.Dataset:
    """Returns an endless stream of epochs of full, shuffled batches of `images`.

    `images` is a whole split, `uint8 [N, H, W, C]` (numpy or tensor), or a
    tuple `(images, labels [N])`; the result yields `uint8 [batch, H, W, C]`
    (or `(images, labels [batch])` batches), starting at epoch `first_epoch`
    (0-based; a resumed run passes the epoch it resumes at). Epoch e is
    `N // batch_size` batches in the order of the permutation seeded by
    (`seed`, e), so it does not depend on how many iterators were made (Keras
    makes an extra one under a distribution strategy): train with
    `steps_per_epoch`. The `N % batch_size` examples left out change every
    epoch.
    """
    images = tf.nest.map_structure(tf.convert_to_tensor, images)
    num_images = tf.nest.flatten(images)[0].shape[0]
    steps = num_images // batch_size
    if steps == 0:
        raise errors.UsageError(
            f"--batch_size={batch_size} is larger than the {num_images} training "
            "images; use a smaller batch."
        )

    def epoch_batches(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(num_images), tf.stack([tf.constant(seed, tf.int64), epoch])
        )
        return tf.data.Dataset.from_tensor_slices(
            tf.reshape(order[: steps * batch_size], [steps, batch_size])
        )

    epochs = tf.data.Dataset.range(first_epoch, tf.int64.max)
    stream = epochs.flat_map(epoch_batches).map(
        lambda rows: tf.nest.map_structure(lambda a: tf.gather(a, rows), images)
    )
    # flat_map hides that the stream is endless; say it, for tf.distribute.
    return prefetched(
        stream.apply(
            tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY)
        )
    )


@contextlib.contextmanager
def reading(builder: tfds.core.DatasetBuilder, split: str):
    """Reports damaged TFDS files met while reading `split` as a `UsageError`
    naming the folder and the fix (TF raises DataLossError for a corrupted
    record, FailedPreconditionError for a cut file)."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.FailedPreconditionError) as e:
        raise errors.UsageError(
            f"The {split} split of {builder.name} in {builder.data_dir} is "
            f"damaged: {e.message.split(' [Op:')[0].split('}} ')[-1]}. Delete "
            f"{builder.data_dir} and run again: TFDS builds it anew."
        ) from None


def load_split(
    builder: tfds.core.DatasetBuilder, split: str, with_labels: bool = False
):
    """Returns all images of `split` in one array, `uint8 [N, H, W, C]`.

    With `with_labels`, returns `(images, labels)`, labels `int64 [N]`.
    Raises `UsageError` if TFDS's files of the split are damaged.
    """
    with reading(builder, split):
        whole = tfds.as_numpy(
            builder.as_dataset(split=split, batch_size=-1, shuffle_files=False)
        )
    return (whole["image"], whole["label"]) if with_labels else whole["image"]


def split_images(builder: tfds.core.DatasetBuilder, split: str) -> tf.data.Dataset:
    """Returns the `uint8 [H, W, C]` images of `split`, in TFDS's order."""
    return builder.as_dataset(split=split, shuffle_files=False).map(
        lambda example: example["image"], num_parallel_calls=tf.data.AUTOTUNE
    )


def split_images_and_labels(
    builder: tfds.core.DatasetBuilder, split: str
) -> tf.data.Dataset:
    """Returns `(uint8 [H, W, C] image, int64 label)` pairs of `split`."""
    return builder.as_dataset(split=split, shuffle_files=False).map(
        lambda example: (example["image"], example["label"]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def test_batches(
    builder: tfds.core.DatasetBuilder, batch_size: int, with_labels: bool = False
) -> tf.data.Dataset:
    """Returns the test split as `uint8 [batch, H, W, C]` batches, in order.

    With `with_labels` (a conditional VAE), `(images, labels [batch])` pairs.
    Every example is kept (the last batch may be short). The split is held in
    memory as one tensor, so every pass (Keras's validation, the IWAE
    callback, the final evaluation) reads the same examples in the same
    order. Not `Dataset.cache()`: its cache is shared by all iterators of the
    dataset, and with several of them alive, runs of one seed did not always
    see the test batches in the same order.
    """
    test = load_split(builder, TEST_SPLIT, with_labels)
    return batches(tf.data.Dataset.from_tensor_slices(test), batch_size)
