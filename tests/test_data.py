"""Tests for tfvae.data: preparing datasets, manual dirs, the pipeline."""

import os
import pathlib
import socket
import time
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from tests.conftest import (
    MNIST_FILES,
    MNIST_MANUAL_DIR,
    TINY_SHAPE,
    requires_mnist,
    tiny_config,
)
from tfvae import (
    data,
    errors,
    image_folder,
    run_dir,
    run_eval,
    splits,
    tfds_sources,
    training,
)


def test_prepare_tiny_dataset(tmp_path):
    builder, info = data.prepare("tiny_images", str(tmp_path), None)
    assert info == data.DatasetInfo("tiny_images", TINY_SHAPE, 96, 40, 16)
    train = data.shuffled_batches(data.load_split(builder, "train"), 16, seed=0)
    test = data.test_batches(builder, batch_size=16)
    train_batches = list(train.take(96 // 16))
    assert all(
        b.shape == (16, *TINY_SHAPE) and b.dtype == tf.uint8 for b in train_batches
    )
    test_batches = list(test)
    assert sum(b.shape[0] for b in test_batches) == 40  # Nothing dropped.
    run_dir.save_info(info, str(tmp_path))
    assert run_dir.load_info(str(tmp_path)) == info


def test_test_batches_give_the_split_in_order_to_every_iterator(tmp_path):
    # Keras's validation, the IWAE callback and the final evaluation each
    # iterate the test batches, some while another iterator is alive.
    builder, _ = data.prepare("tiny_images", str(tmp_path), None)
    expected = data.load_split(builder, splits.TEST_SPLIT)
    test = data.test_batches(builder, batch_size=16)
    abandoned = iter(test)
    next(abandoned)
    alive = iter(test)
    first = np.concatenate([next(alive)] + [b.numpy() for b in test])
    second = np.concatenate([b.numpy() for b in test])
    np.testing.assert_array_equal(first[16:], expected)
    np.testing.assert_array_equal(second, expected)


def test_training_batches_are_reshuffled_each_epoch_reproducibly(tmp_path):
    builder, _ = data.prepare("tiny_images", str(tmp_path), None)
    split = data.load_split(builder, splits.TRAIN_SPLIT)
    first_run = iter(data.shuffled_batches(split, 96, seed=3))
    epoch1, epoch2 = (next(first_run).numpy() for _ in range(2))
    assert not np.array_equal(epoch1, epoch2)
    # Each epoch is a permutation of the whole split.
    for epoch in (epoch1, epoch2):
        np.testing.assert_array_equal(np.sort(epoch, axis=0), np.sort(split, axis=0))
    # A new iterator starts again at epoch 1: epochs do not depend on how
    # many iterators were made.
    second_run = data.shuffled_batches(split, 96, seed=3)
    np.testing.assert_array_equal(next(iter(second_run)).numpy(), epoch1)
    second_iterator = iter(second_run)
    for expected in (epoch1, epoch2):
        np.testing.assert_array_equal(next(second_iterator).numpy(), expected)
    other_seed = next(iter(data.shuffled_batches(split, 96, seed=4))).numpy()
    assert not np.array_equal(epoch1, other_seed)


def test_shuffled_batches_drop_a_different_remainder_each_epoch():
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    batches = iter(data.shuffled_batches(images, batch_size=4, seed=0))
    seen = [
        np.concatenate([next(batches).numpy().ravel() for _ in range(2)])
        for _ in range(20)
    ]
    assert all(len(epoch) == 8 and len(set(epoch)) == 8 for epoch in seen)
    # Over 20 epochs every image is used: the 2 left out change.
    assert set(np.concatenate(seen)) == set(range(10))


def test_batch_larger_than_the_split_is_refused():
    with pytest.raises(ValueError, match="batch_size=11 is larger than the 10"):
        data.shuffled_batches(np.zeros([10, 1, 1, 1], np.uint8), 11, seed=0)


def test_unknown_dataset_is_named(tmp_path):
    with pytest.raises(ValueError, match="Unknown dataset: --dataset=mnistt"):
        data.prepare("mnistt", str(tmp_path), None)


def test_dataset_without_images_is_refused(tmp_path):
    with pytest.raises(ValueError, match="has no 'image' feature"):
        data.prepare("imdb_reviews", str(tmp_path), None)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: None, "is not a folder"),
        (lambda d: d.mkdir(), "is empty"),
        (
            lambda d: (d.mkdir(), (d / "train-images-idx3-ubyte.gz").write_bytes(b"")),
            "lacks t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, "
            "train-labels-idx1-ubyte.gz",
        ),
    ],
)
def test_bad_manual_dir_names_the_expected_files(tmp_path, setup, message):
    manual = tmp_path / "manual"
    setup(manual)
    with pytest.raises(errors.UsageError, match=message) as error:
        data.prepare("mnist", str(tmp_path / "tfds"), str(manual))
    assert all(name in str(error.value) for name in MNIST_FILES)


@pytest.fixture
def network(monkeypatch):
    """Stands in for the network: no connection leaves this machine.

    Yields {"refuse": an OSError every connection raises, or None to accept;
    "hang": seconds a connection takes; "hosts": where connections went;
    "downloads": how often TFDS was asked to download}.
    """
    state = {"refuse": None, "hang": 0, "hosts": [], "downloads": 0}

    class Connection:
        def close(self):
            pass

    def connect(address, timeout=None):
        state["hosts"].append(address)
        time.sleep(state["hang"])
        if state["refuse"]:
            raise state["refuse"]
        return Connection()

    original = tfds.core.DatasetBuilder.download_and_prepare

    def download_and_prepare(builder, **kwargs):
        state["downloads"] += 1
        if not builder.url_infos:  # Generated: nothing to download.
            original(builder, **kwargs)

    monkeypatch.setattr(socket, "create_connection", connect)
    monkeypatch.setattr(urllib.request, "getproxies", dict)
    monkeypatch.setattr(
        tfds.core.DatasetBuilder, "download_and_prepare", download_and_prepare
    )
    return state


def test_offline_without_manual_dir_is_refused_in_seconds_naming_the_files(
    tmp_path, network
):
    network["refuse"] = socket.gaierror(-2, "Name or service not known")
    start = time.perf_counter()
    with pytest.raises(errors.UsageError) as error:
        data.prepare("cifar10", str(tmp_path / "tfds"), None)
    assert time.perf_counter() - start < 5
    message = str(error.value)
    for part in (
        "--dataset=cifar10 is not prepared in",
        "no connection to www.cs.toronto.edu:443 (gaierror",
        "cifar-10-binary.tar.gz, from https://www.cs.toronto.edu/~kriz/",
        "pass --manual_dir=FOLDER",
    ):
        assert part in message, message
    assert network["hosts"] == [("www.cs.toronto.edu", 443)]
    assert network["downloads"] == 0
    assert not (tmp_path / "tfds").exists()


def test_a_download_host_that_does_not_answer_is_refused_after_the_limit(
    tmp_path, network, monkeypatch
):
    monkeypatch.setattr(tfds_sources, "DOWNLOAD_CHECK_SECONDS", 0.2)
    network["hang"] = 5
    start = time.perf_counter()
    with pytest.raises(errors.UsageError, match=r"no answer within 0.2 s"):
        data.prepare("cifar10", str(tmp_path / "tfds"), None)
    assert time.perf_counter() - start < 2
    assert network["downloads"] == 0


def test_a_reachable_download_host_lets_tfds_download(tmp_path, network):
    # The stand-in downloaded nothing.
    with pytest.raises(errors.UsageError, match="--dataset=mnist has no 'train'"):
        data.prepare("mnist", str(tmp_path / "tfds"), None)
    # One check of the one host of MNIST's four files.
    assert network["hosts"] == [("storage.googleapis.com", 443)]
    assert network["downloads"] == 1


def test_behind_a_proxy_the_proxy_is_checked(tmp_path, network, monkeypatch):
    proxies = {"https": "http://127.0.0.1:3128", "no": "example.org"}
    monkeypatch.setattr(urllib.request, "getproxies", lambda: proxies)
    network["refuse"] = ConnectionRefusedError(111, "Connection refused")
    with pytest.raises(errors.UsageError, match="no connection to 127.0.0.1:3128"):
        data.prepare("cifar10", str(tmp_path / "tfds"), None)
    assert network["hosts"] == [("127.0.0.1", 3128)]


def test_a_dataset_with_manual_files_or_nothing_to_download_needs_no_network(
    tmp_path, network
):
    network["refuse"] = OSError("no network")
    data.prepare("tiny_images", str(tmp_path / "tfds"), None)
    with pytest.raises(errors.UsageError, match="is empty"):
        (tmp_path / "manual").mkdir()
        data.prepare("cifar10", str(tmp_path / "tfds"), str(tmp_path / "manual"))
    assert network["hosts"] == []


@pytest.mark.parametrize(
    "data_dir, message",
    [
        ("file", "--data_dir=P is a file, not a folder"),
        ("file/tfds", r"--data_dir=P cannot be created: .*file is a file"),
        ("/proc/tfvae-tfds", "--data_dir=P cannot be created: no file can be"),
    ],
)
def test_a_data_dir_that_cannot_be_written_is_refused_before_any_work(
    tmp_path, network, data_dir, message
):
    (tmp_path / "file").write_text("mine")
    data_dir = os.path.join(tmp_path, data_dir)
    with pytest.raises(errors.UsageError, match=message.replace("P", data_dir)):
        data.prepare("tiny_images", data_dir, None)
    assert network["downloads"] == 0
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_a_manual_dir_with_other_files_of_the_right_names_is_refused(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    for name in MNIST_FILES:
        (manual / name).write_bytes(b"not MNIST")
    with pytest.raises(
        errors.UsageError,
        match=r"(?s)A file of --dataset=mnist is not the one TFDS expects .*"
        r"has wrong checksum.*Replace it with the original file in --manual_dir=",
    ):
        data.prepare("mnist", str(tmp_path / "tfds"), str(manual))


def _cut(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _zero_a_record(path):
    data_bytes = bytearray(path.read_bytes())
    data_bytes[100:200] = bytes(100)
    path.write_bytes(bytes(data_bytes))


@pytest.mark.parametrize(
    "damage, problem",
    [(_cut, "expected to contain 96 elements"), (_zero_a_record, "corrupted record")],
)
def test_damaged_tfds_files_are_refused_before_the_run_directory_changes(
    tmp_path, damage, problem
):
    builder, _ = data.prepare("tiny_images", str(tmp_path / "tfds"), None)
    (train_file,) = pathlib.Path(builder.data_dir).glob("*-train.tfrecord*")
    damage(train_file)
    message = (
        rf"The train split of tiny_images in {builder.data_dir} is damaged: .*"
        rf"{problem}.*\. Delete {builder.data_dir} and run again"
    )
    with pytest.raises(errors.UsageError, match=message):
        data.load_split(builder, splits.TRAIN_SPLIT)
    with pytest.raises(errors.UsageError, match=message):
        training.train_and_evaluate(tiny_config(tmp_path))
    assert not (tmp_path / "run").exists()


def test_expected_manual_files_for_mnist():
    assert tfds_sources.expected_manual_files(tfds.builder("mnist")) == MNIST_FILES


@pytest.mark.slow
@requires_mnist
def test_real_mnist_builds_offline_from_manual_dir(tmp_path):
    builder, info = data.prepare("mnist", str(tmp_path), str(MNIST_MANUAL_DIR))
    assert info == data.DatasetInfo("mnist", (28, 28, 1), 60_000, 10_000, 10)
    first = next(iter(data.split_images(builder, "test").batch(10_000))).numpy()
    assert first.shape == (10_000, 28, 28, 1)
    assert first.max() == 255 and 0.1 < first.mean() / 255 < 0.15


@pytest.mark.parametrize(
    "name, shape",
    [
        ("mnist", (28, 28, 1)),
        ("fashion_mnist", (28, 28, 1)),
        ("kmnist", (28, 28, 1)),
        ("emnist", (28, 28, 1)),
        ("cifar10", (32, 32, 3)),
    ],
)
def test_named_image_datasets_are_accepted_by_metadata(tmp_path, name, shape):
    """What the issue names works by name: only metadata is read, no download."""
    assert data.image_shape(data.load_builder(name, str(tmp_path))) == shape


# --- A user's own images: --image_folder -----------------------------------------


def _write_image(path, pixels: np.ndarray) -> None:
    """Writes `uint8 [H, W, C]` pixels (C = 1 or 3) to `path` as a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)


def _make_folder(root, counts, classes=("cats", "dogs"), shape=(10, 12, 3)):
    """Writes random images into `root/<split>/<class>/` (no class folder if
    `classes` is empty); `counts` is {split: images per class}. Returns root."""
    rng = np.random.default_rng(0)
    for split, count in counts.items():
        for folder in classes or [""]:
            for index in range(count):
                pixels = rng.integers(0, 256, shape, dtype=np.uint8)
                _write_image(root / split / folder / f"{index}.png", pixels)
    return root


def test_an_image_folder_is_built_once_with_labels_from_class_subfolders(tmp_path):
    root = _make_folder(tmp_path / "pets", {"train": 3, "test": 2})
    folder = image_folder.ImageFolder(str(root), size=(8, 6))
    builder, info = data.prepare("mnist", str(tmp_path / "tfds"), None, folder)
    assert info == data.DatasetInfo("pets", (8, 6, 3), 6, 4, 2)
    assert builder.info.features["label"].names == ["cats", "dogs"]
    train = data.load_split(builder, splits.TRAIN_SPLIT)
    assert train.shape == (6, 8, 6, 3) and train.dtype == np.uint8
    pairs = list(data.split_images_and_labels(builder, splits.TEST_SPLIT))
    assert sorted(int(label) for _, label in pairs) == [0, 0, 1, 1]
    batch = next(iter(data.shuffled_batches(train, batch_size=2, seed=0)))
    assert batch.shape == (2, 8, 6, 3) and batch.dtype == tf.uint8
    # Built once: a second prepare finds it in the data dir.
    again = data.load_builder("mnist", str(tmp_path / "tfds"), folder)
    assert again.is_prepared() and again.data_dir == builder.data_dir
    # A changed folder is built anew.
    _write_image(root / "train" / "cats" / "new.png", train[0])
    changed = data.load_builder("mnist", str(tmp_path / "tfds"), folder)
    assert not changed.is_prepared()


def test_images_are_center_cropped_to_the_aspect_ratio_then_resized(tmp_path):
    # 10 high, 60 wide: red | green | blue columns 10, 40 and 10 wide. The
    # square center crop (and the resizing filter around it) sees only green;
    # squeezing the whole image, or cropping at an edge, would show red or blue.
    pixels = np.zeros((10, 60, 3), np.uint8)
    pixels[:, :10, 0] = pixels[:, 10:50, 1] = pixels[:, 50:, 2] = 200
    for split in ("train", "test"):
        _write_image(tmp_path / "rgb" / split / "a.png", pixels)
    folder = image_folder.ImageFolder(str(tmp_path / "rgb"), size=(4, 4))
    builder, _ = data.prepare("mnist", str(tmp_path / "tfds"), None, folder)
    image = data.load_split(builder, splits.TRAIN_SPLIT)[0]
    np.testing.assert_array_equal(image, np.broadcast_to([0, 200, 0], (4, 4, 3)))


def test_grayscale_folders_without_classes_and_channel_conversion(tmp_path):
    root = _make_folder(tmp_path / "gray", {"train": 4, "test": 2}, (), (9, 9, 1))
    builder, info = data.prepare(
        "mnist",
        str(tmp_path / "tfds"),
        None,
        image_folder.ImageFolder(str(root), (8, 8)),
    )
    assert info == data.DatasetInfo("gray", (8, 8, 1), 4, 2, None)
    assert "label" not in builder.info.features
    # --image_channels=3 makes RGB of them; =1 makes a mixed folder grayscale.
    _, rgb = data.prepare(
        "mnist",
        str(tmp_path / "tfds"),
        None,
        image_folder.ImageFolder(str(root), (8, 8), 3),
    )
    assert rgb.image_shape == (8, 8, 3)
    _write_image(root / "train" / "color.png", np.zeros((9, 9, 3), np.uint8))
    _, mixed = data.prepare(
        "mnist",
        str(tmp_path / "tfds"),
        None,
        image_folder.ImageFolder(str(root), (8, 8), 1),
    )
    assert (mixed.image_shape, mixed.num_train) == ((8, 8, 1), 5)


def _unreadable(root):
    (root / "train" / "cats" / "notes.png").write_bytes(b"not an image")


def _truncated(root):
    path = root / "test" / "dogs" / "0.png"
    path.write_bytes(path.read_bytes()[:60])


def _mixed_channels(root):
    _write_image(root / "test" / "dogs" / "gray.png", np.zeros((10, 12, 1), np.uint8))


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda root: os.rename(root, f"{root}_gone"), r"pets is not a folder"),
        (lambda root: os.rename(root / "test", root / "val"), "has no test/ folder"),
        (
            lambda root: [os.remove(p) for p in root.glob("train/*/*.png")],
            r"pets/train holds no images",
        ),
        (_unreadable, r"Cannot read the image .*pets/train/cats/notes\.png"),
        (_truncated, r"Cannot read the image .*pets/test/dogs/0\.png"),
        (
            _mixed_channels,
            r"mixes channel counts: .*cats/0\.png is RGB, .*dogs/gray\.png is "
            r"grayscale\. Pass --image_channels=1",
        ),
        (
            lambda root: _write_image(
                root / "train" / "loose.png", np.zeros((4, 4, 3), np.uint8)
            ),
            "holds both images and subfolders",
        ),
        (
            lambda root: (root / "train" / "cats" / "kittens").mkdir(),
            "is a folder inside a class folder",
        ),
    ],
)
def test_bad_image_folders_are_refused_naming_the_problem(tmp_path, spoil, message):
    root = _make_folder(tmp_path / "pets", {"train": 2, "test": 1})
    spoil(root)
    with pytest.raises(errors.UsageError, match=message):
        data.prepare(
            "mnist",
            str(tmp_path / "tfds"),
            None,
            image_folder.ImageFolder(str(root), (8, 8)),
        )
    # Nothing half-built is left to be taken for the dataset.
    built = tmp_path / "tfds" / "tfvae_image_folder"
    assert not built.exists() or not list(built.glob("*/*/dataset_info.json"))


@pytest.mark.parametrize(
    "size, channels, message",
    [
        ((0, 5), None, r"size must be two positive sizes, \(H, W\). Received: "),
        ((8,), None, r"Received: size=\(8,\)"),
        ((8, 8), 2, "channels must be 1, 3 or None. Received: channels=2"),
    ],
)
def test_an_image_folder_refuses_a_size_or_channels_it_cannot_read_at(
    size, channels, message
):
    with pytest.raises(ValueError, match=message):
        image_folder.ImageFolder("pets", size, channels)


def test_an_image_folder_config_names_the_dataset_after_the_folder(tmp_path):
    config = tiny_config(
        tmp_path,
        dataset="mnist",
        image_folder="/data/faces/",
        image_size=(64, 48),
        image_channels=1,
        export_dir=None,
    )
    assert config.image_source == image_folder.ImageFolder("/data/faces/", (64, 48), 1)
    assert (config.dataset_name, config.export_base) == ("faces", "export/faces")
    assert tiny_config(tmp_path).image_source is None


def test_an_image_size_that_cannot_fit_is_refused_before_the_folder_is_built(
    tmp_path,
):
    root = _make_folder(tmp_path / "shapes", {"train": 2, "test": 1}, ())
    config = tiny_config(
        tmp_path, dataset="mnist", image_folder=str(root), image_size=(30000, 30000)
    )
    with pytest.raises(
        errors.UsageError,
        match=r"would need about .* GiB of memory, .* the image size 30000x30000"
        r".*--image_size=30000,30000",
    ):
        training.train_and_evaluate(config)
    assert sorted(os.listdir(tmp_path)) == ["shapes"]


def test_a_folder_of_images_trains_evaluates_and_exports(tmp_path):
    root = _make_folder(tmp_path / "shapes", {"train": 24, "test": 8}, ("a", "b"))
    config = tiny_config(
        tmp_path,
        dataset="mnist",
        image_folder=str(root),
        image_size=(8, 8),
        epochs=1,
        export=True,
    )
    metrics = training.train_and_evaluate(config)
    assert metrics["dataset"] == "shapes" and np.isfinite(metrics["test_neg_elbo"])
    assert run_dir.load_info(config.model_dir) == data.DatasetInfo(
        "shapes", (8, 8, 3), 48, 16, 2
    )
    assert os.path.isdir(metrics["export_path"])
    results = run_eval.evaluate_run(
        run_eval.EvalConfig(model_dir=config.model_dir, num_importance_samples=3)
    )
    assert results["num_examples"] == 16 and results["dataset"] == "shapes"
