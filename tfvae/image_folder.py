"""A user's folder of images as a TFDS dataset (`--image_folder`).

`ImageFolder(path, size, channels).builder(data_dir)` returns a small TFDS
builder that reads the folder once into the TFDS data dir: every image
center-cropped to the aspect ratio of `size`, resized to it and given one
channel count; class subfolders become labels. From then on `tfvae.data`
treats it as any TFDS dataset. Everything wrong with a folder (no train/ or
test/, an unreadable file, mixed channel counts, ...) is refused with a
`UsageError` naming the file and the fix, before anything is written.
"""

import contextlib
import dataclasses
import hashlib
import os
import re

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageOps

from tfvae import errors
from tfvae.splits import TEST_SPLIT, TRAIN_SPLIT

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

    def __post_init__(self):
        if len(self.size) != 2 or any(
            not isinstance(n, int) or n < 1 for n in self.size
        ):
            raise ValueError(
                f"size must be two positive sizes, (H, W). Received: size={self.size}"
            )
        if self.channels not in (None, 1, 3):
            raise ValueError(
                f"channels must be 1, 3 or None. Received: channels={self.channels}"
            )

    @property
    def name(self) -> str:
        """The folder's own name: the dataset's name in metrics and exports."""
        return os.path.basename(os.path.normpath(self.path))

    def builder(self, data_dir: str | None) -> tfds.core.DatasetBuilder:
        """Returns the TFDS builder of this folder, after checking its layout.

        Reads the folder's listing and one image's header only; the images
        are read when the builder prepares the dataset.
        """
        return _folder_builder(self, data_dir)


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
