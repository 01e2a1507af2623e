"""Tests for tfvae.data: preparing datasets, manual dirs, the pipeline."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.conftest import MNIST_FILES, MNIST_MANUAL_DIR, TINY_SHAPE, requires_mnist
from tfvae import data, errors, run_dir


def test_prepare_tiny_dataset(tmp_path):
    builder, info = data.prepare("tiny_images", str(tmp_path), None)
    assert info == data.DatasetInfo("tiny_images", TINY_SHAPE, 96, 40, 16)
    train, test = data.train_and_test(builder, batch_size=16, seed=0)
    train_batches = list(train.take(96 // 16))
    assert all(
        b.shape == (16, *TINY_SHAPE) and b.dtype == tf.uint8 for b in train_batches
    )
    test_batches = list(test)
    assert sum(b.shape[0] for b in test_batches) == 40  # Nothing dropped.
    run_dir.save_info(info, str(tmp_path))
    assert run_dir.load_info(str(tmp_path)) == info


def test_training_batches_are_reshuffled_each_epoch_reproducibly(tmp_path):
    builder, _ = data.prepare("tiny_images", str(tmp_path), None)
    first_run = iter(data.train_and_test(builder, 96, seed=3)[0])
    epoch1, epoch2 = (next(first_run).numpy() for _ in range(2))
    assert not np.array_equal(epoch1, epoch2)
    # Each epoch is a permutation of the whole split.
    split = data.load_split(builder, data.TRAIN_SPLIT)
    for epoch in (epoch1, epoch2):
        np.testing.assert_array_equal(np.sort(epoch, axis=0), np.sort(split, axis=0))
    # A new iterator starts again at epoch 1: epochs do not depend on how
    # many iterators were made.
    second_run = data.train_and_test(builder, 96, seed=3)[0]
    np.testing.assert_array_equal(next(iter(second_run)).numpy(), epoch1)
    second_iterator = iter(second_run)
    for expected in (epoch1, epoch2):
        np.testing.assert_array_equal(next(second_iterator).numpy(), expected)
    other_seed = next(iter(data.train_and_test(builder, 96, seed=4)[0])).numpy()
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


def test_expected_manual_files_for_mnist():
    assert data.expected_manual_files(tfds.builder("mnist")) == MNIST_FILES


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
