"""Input pipeline: TFDS image datasets, or a user's images, as batches of raw pixels.

Every split comes out as `uint8` images `[batch, H, W, C]`, exactly as TFDS
stores them. Turning pixels into observations (binarizing, scaling, keeping
integers) belongs to the likelihood and happens inside the model's compiled
step (`tfvae.heads`), so training, evaluation and the exported SavedModel all
start from the same raw pixels, and the pipeline stays cheap:

- training: the whole split in memory as one `uint8` tensor (47 MB for
  MNIST); each epoch draws one permutation and gathers batches by index, so
  there is no per-example work, no shuffle buffer to refill, and one iterator
  serves every epoch;
- evaluation: cache -> batch -> prefetch, in TFDS's order.

A user's folder of images (`ImageFolder`, `--image_folder`) is built once
into the TFDS data dir by a small TFDS builder, center-cropped and resized to
one shape, and from then on is a TFDS dataset like any other.
"""

import contextlib
import dataclasses
import hashlib
import os
import re

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image, ImageOps

from tfvae import errors

TRAIN_SPLIT = "train"
TEST_SPLIT = "test"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the model needs to know about a dataset."""

    name: str
    image_shape: tuple[int, int, int]  # (H, W, C)
    num_train: int
    num_test: int
    num_classes: int | None


def expected_manual_files(builder: tfds.core.DatasetBuilder) -> list[str]:
    """Returns the file names TFDS looks for in a manual dir for `builder`."""
    return sorted(
        info.filename or os.path.basename(url)
        for url, info in (builder.url_infos or {}).items()
    )


def _check_manual_dir(builder: tfds.core.DatasetBuilder, manual_dir: str) -> None:
    expected = expected_manual_files(builder)
    listing = (
        "\nIt must hold the dataset's original downloaded files: "
        + (", ".join(expected) if expected else "see the dataset's TFDS page")
        + "."
    )
    if not os.path.isdir(manual_dir):
        raise errors.UsageError(f"--manual_dir={manual_dir} is not a folder.{listing}")
    present = set(os.listdir(manual_dir))
    if not present:
        raise errors.UsageError(f"--manual_dir={manual_dir} is empty.{listing}")
    missing = [name for name in expected if name not in present]
    if missing:
        raise errors.UsageError(
            f"--manual_dir={manual_dir} lacks {', '.join(missing)}.{listing}"
        )


# --- A user's own images ------------------------------------------------------

# What Pillow raises for a file it cannot read as an image (PNG's decoder
# raises SyntaxError for a broken chunk, a cut GIF EOFError).
_UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """A folder of a user's images, and the fixed shape they are read at.

    The layout is TFDS's `ImageFolder`'s: `path/train/` and `path/test/` hold
    the images, either directly or in one subfolder per class, whose names are
    the labels. Any format Pillow reads (PNG, JPEG, BMP, GIF, TIFF, WebP, ...).
    Each image is center-cropped to the aspect ratio of `size` (H, W), then
    resized to it (bicubic); `channels` is 1 (grayscale) or 3 (RGB) to convert
    every image, or None to keep the files' own, which must then agree.
    """

    path: str
    size: tuple[int, int]
    channels: int | None = None

    @property
    def name(self) -> str:
        """The folder's own name: the dataset's name in metrics and exports."""
        return os.path.basename(os.path.normpath(self.path))


@dataclasses.dataclass(frozen=True)
class _Listing:
    """The image files of an `ImageFolder`, in a fixed order.

    `files[split]` lists (path, label index or None); `classes` are the class
    subfolders' names, sorted (empty without class subfolders).
    """

    files: dict[str, list[tuple[str, int | None]]]
    classes: tuple[str, ...]


def _visible(folder: str) -> list[str]:
    """Returns the names in `folder`, sorted, without hidden ones (.DS_Store)."""
    return sorted(name for name in os.listdir(folder) if not name.startswith("."))


def _list_folder(folder: ImageFolder) -> _Listing:
    """Returns the files of `folder`, refusing a layout tfvae cannot use."""
    layout = (
        f"It must hold {TRAIN_SPLIT}/ and {TEST_SPLIT}/, each with images, or "
        "with one subfolder of images per class."
    )
    if not os.path.isdir(folder.path):
        raise errors.UsageError(
            f"--image_folder={folder.path} is not a folder. {layout}"
        )
    by_class = {}
    for split in (TRAIN_SPLIT, TEST_SPLIT):
        split_dir = os.path.join(folder.path, split)
        if not os.path.isdir(split_dir):
            raise errors.UsageError(
                f"--image_folder={folder.path} has no {split}/ folder. {layout}"
            )
        names = _visible(split_dir)
        subfolders = [n for n in names if os.path.isdir(os.path.join(split_dir, n))]
        if subfolders and len(subfolders) < len(names):
            raise errors.UsageError(
                f"{split_dir} holds both images and subfolders: put every image "
                "in a class subfolder, or none."
            )
        by_class[split] = (
            {c: _class_files(os.path.join(split_dir, c)) for c in subfolders}
            if subfolders
            else {None: [os.path.join(split_dir, n) for n in names]}
        )
        if not any(by_class[split].values()):
            raise errors.UsageError(f"{split_dir} holds no images. {layout}")
    if (None in by_class[TRAIN_SPLIT]) != (None in by_class[TEST_SPLIT]):
        raise errors.UsageError(
            f"--image_folder={folder.path}: one of {TRAIN_SPLIT}/ and "
            f"{TEST_SPLIT}/ has class subfolders and the other does not; give "
            "both the same layout."
        )
    classes = tuple(sorted({c for s in by_class.values() for c in s} - {None}))
    return _Listing(
        files={
            split: [
                (path, None if c is None else classes.index(c))
                for c, paths in files.items()
                for path in paths
            ]
            for split, files in by_class.items()
        },
        classes=classes,
    )


def _class_files(class_dir: str) -> list[str]:
    paths = [os.path.join(class_dir, name) for name in _visible(class_dir)]
    for path in paths:
        if os.path.isdir(path):
            raise errors.UsageError(
                f"{path} is a folder inside a class folder: class subfolders "
                "hold images only (one level of classes)."
            )
    return paths


@contextlib.contextmanager
def _image_file(path: str):
    """Opens the image at `path` with Pillow; refuses an unreadable one by name."""
    try:
        with Image.open(path) as image:
            yield image
    except _UNREADABLE as e:
        raise errors.UsageError(
            f"Cannot read the image {path} ({type(e).__name__}: {e}). Remove it "
            "from the folder, or replace it with a readable image."
        ) from e


def _channels(image: Image.Image) -> int:
    # Pillow's base mode is "L" for every grayscale mode (1, L, LA, I;16, F);
    # palette, RGBA, CMYK, ... images count as RGB.
    return 1 if Image.getmodebase(image.mode) == "L" else 3


def _read_image(path: str, size: tuple[int, int], channels: int) -> np.ndarray:
    """Returns the image at `path` center-cropped and resized, `uint8 [H, W, C]`."""
    height, width = size
    with _image_file(path) as image:
        mode = "L" if channels == 1 else "RGB"
        # JPEG only: decode at the smallest scale still at least `size`.
        image.draft(mode, (width, height))
        fitted = ImageOps.fit(image.convert(mode), (width, height))
    return np.asarray(fitted, np.uint8).reshape(height, width, channels)


class _FolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """An `ImageFolder` built once into TFDS files in the data dir.

    The builder config's name holds the folder's name, the image shape and a
    hash of the folder's path, the shape and its listing (paths, labels, file
    sizes and times): a changed folder, or another shape, is built anew beside
    the old one. Every file's header is read before anything is written, so a
    file Pillow cannot open, or mixed channel counts, fail the build at once.
    """

    name = "tfvae_image_folder"
    VERSION = tfds.core.Version("1.0.0")

    def __init__(
        self,
        folder: ImageFolder,
        listing: _Listing,
        channels: int,
        data_dir: str | None,
    ):
        self._folder, self._listing, self._channels = folder, listing, channels
        digest = hashlib.sha256(
            repr((os.path.abspath(folder.path), folder.size, channels)).encode()
        )
        for split, files in listing.files.items():
            for path, label in files:
                stat = os.stat(path)
                digest.update(
                    repr((split, path, label, stat.st_size, stat.st_mtime_ns)).encode()
                )
        height, width = folder.size
        config_name = "{}_{}x{}x{}_{}".format(
            re.sub(r"[^A-Za-z0-9]+", "_", folder.name)[:40],
            height,
            width,
            channels,
            digest.hexdigest()[:12],
        )
        super().__init__(
            data_dir=data_dir, config=tfds.core.BuilderConfig(name=config_name)
        )

    def _info(self):
        features = {
            "image": tfds.features.Image(shape=(*self._folder.size, self._channels))
        }
        if self._listing.classes:
            features["label"] = tfds.features.ClassLabel(names=self._listing.classes)
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"The images of {os.path.abspath(self._folder.path)}.",
            features=tfds.features.FeaturesDict(features),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        self._check_headers()
        return {
            split: self._generate_examples(files)
            for split, files in self._listing.files.items()
        }

    def _check_headers(self) -> None:
        first = self._listing.files[TRAIN_SPLIT][0][0]
        names = {1: "grayscale", 3: "RGB"}
        for files in self._listing.files.values():
            for path, _ in files:
                with _image_file(path) as image:
                    channels = _channels(image)
                if self._folder.channels is None and channels != self._channels:
                    raise errors.UsageError(
                        f"--image_folder={self._folder.path} mixes channel counts: "
                        f"{first} is {names[self._channels]}, {path} is "
                        f"{names[channels]}. Pass --image_channels=1 (grayscale) "
                        "or --image_channels=3 (RGB) to convert every image."
                    )

    def _generate_examples(self, files):
        for path, label in files:
            example = {"image": _read_image(path, self._folder.size, self._channels)}
            if label is not None:
                example["label"] = label
            yield os.path.relpath(path, self._folder.path), example


def _folder_builder(folder: ImageFolder, data_dir: str | None) -> _FolderBuilder:
    """Returns the builder of `folder`, after checking its layout."""
    listing = _list_folder(folder)
    channels = folder.channels
    if channels is None:
        # The first training image's; the build checks that the others agree.
        with _image_file(listing.files[TRAIN_SPLIT][0][0]) as image:
            channels = _channels(image)
    return _FolderBuilder(folder, listing, channels, data_dir)


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
    if image_folder is not None:
        return _folder_builder(image_folder, data_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise errors.UsageError(
            f"Unknown dataset: --dataset={name}. Use a TFDS image dataset name "
            "such as mnist, fashion_mnist, kmnist, emnist or cifar10."
        ) from e
    features = dict(builder.info.features or {})
    image = features.get("image")
    if not isinstance(image, tfds.features.Image):
        raise errors.UsageError(
            f"--dataset={name} has no 'image' feature (features: "
            f"{sorted(features)}); tfvae models image datasets."
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
    everything `load_builder` refuses, a dataset without train/test splits, a
    missing, empty or incomplete manual dir, and a folder's unreadable image
    or mixed channel counts.
    """
    builder = load_builder(name, data_dir, image_folder)
    if image_folder is not None:
        name = image_folder.name
    if not builder.is_prepared():
        if manual_dir:
            _check_manual_dir(builder, manual_dir)
        logging.info(
            "Preparing TFDS dataset %s in %s%s.",
            name,
            builder.data_dir,
            f" from --manual_dir={manual_dir}" if manual_dir else "",
        )
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
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


def _fixed_buffers(ds: tf.data.Dataset) -> tf.data.Dataset:
    # tf.data's autotuner keeps a background thread that, on 2 CPU cores,
    # made every other training epoch twice as slow (measured: 1.1 s or
    # 2.5 s per MNIST epoch); this pipeline needs no tuning.
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(2).with_options(options)


def batches(images: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    """Caches, batches and prefetches a dataset of images, in order.

    `images` yields `uint8 [H, W, C]`; the result yields `uint8 [batch, H, W, C]`,
    every example once (the last batch may be short).
    """
    return _fixed_buffers(images.cache().batch(batch_size))


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
    return _fixed_buffers(
        stream.apply(
            tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY)
        )
    )


def load_split(
    builder: tfds.core.DatasetBuilder, split: str, with_labels: bool = False
):
    """Returns all images of `split` in one array, `uint8 [N, H, W, C]`.

    With `with_labels`, returns `(images, labels)`, labels `int64 [N]`.
    """
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


def train_and_test(
    builder: tfds.core.DatasetBuilder,
    batch_size: int,
    seed: int,
    first_epoch: int = 0,
    with_labels: bool = False,
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Returns the training and test pipelines, each `uint8 [batch, H, W, C]`.

    With `with_labels` (a conditional VAE), each yields `(images, labels
    [batch])` instead. Training batches are shuffled with `seed`, all full
    (every step averages over the same global batch size) and endless (see
    `shuffled_batches`); test batches keep every example, in order.
    """
    train = shuffled_batches(
        load_split(builder, TRAIN_SPLIT, with_labels), batch_size, seed, first_epoch
    )
    test = (split_images_and_labels if with_labels else split_images)(
        builder, TEST_SPLIT
    )
    return train, batches(test, batch_size)
