"""Tests for tfvae.streaming: the memory budget and the streaming input path."""

import dataclasses
import json
import os
import pathlib
import socket
import subprocess
import tempfile

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import TINY_SHAPE
from tfvae import data, errors, memory, splits, streaming


def _epochs(stream, batches_per_epoch, count):
    """Returns `count` epochs of (images, labels) batches, each concatenated."""
    batches = iter(stream)
    epochs = []
    for _ in range(count):
        pairs = [next(batches) for _ in range(batches_per_epoch)]
        epochs.append(
            (
                np.concatenate([images.numpy() for images, _ in pairs]),
                np.concatenate([labels.numpy() for _, labels in pairs]),
            )
        )
    return epochs


def _keys(images):
    """Returns each image's bytes: a key that names one example of the split."""
    return [image.tobytes() for image in images]


def test_streamed_epochs_hold_every_example_once_in_a_seeded_order(tmp_path):
    builder, info = data.prepare("tiny_images", str(tmp_path), None)
    records = streaming.decoded_records(builder, splits.TRAIN_SPLIT, with_labels=True)
    assert sum(records.lengths) == info.num_train == 96
    split, split_labels = data.load_split(builder, splits.TRAIN_SPLIT, with_labels=True)

    def stream(seed, first_epoch=0):
        # Blocks of 32 among 96 examples: the order is not just the file's.
        return streaming.streamed_batches(
            records, 16, seed, first_epoch, shuffle_buffer=32
        )

    first, second = _epochs(stream(seed=3), 96 // 16, 2)
    for images, labels in (first, second):
        assert sorted(_keys(images)) == sorted(_keys(split))
        # Labels travel with their images.
        by_key = dict(zip(_keys(split), split_labels, strict=True))
        assert [by_key[k] for k in _keys(images)] == list(labels)
    assert _keys(first[0]) != _keys(second[0]) != _keys(split)
    # The same seed gives the same epochs, however many iterators were made;
    # a resumed run (first_epoch=1) starts at the second epoch's batches.
    again = _epochs(stream(seed=3), 96 // 16, 2)
    assert [_keys(e[0]) for e in again] == [_keys(first[0]), _keys(second[0])]
    resumed = _epochs(stream(seed=3, first_epoch=1), 96 // 16, 1)[0]
    assert _keys(resumed[0]) == _keys(second[0])
    assert _keys(_epochs(stream(seed=4), 96 // 16, 1)[0][0]) != _keys(first[0])


def _split_into_files(records, counts, folder):
    """Rewrites `records`' examples into len(counts) record files."""
    serialized = list(tf.data.TFRecordDataset(list(records.files)))
    files, start = [], 0
    for index, count in enumerate(counts):
        path = str(folder / f"part-{index}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for record in serialized[start : start + count]:
                writer.write(record.numpy())
        files.append(path)
        start += count
    return dataclasses.replace(records, files=tuple(files), lengths=tuple(counts))


@pytest.mark.parametrize(
    "counts, steps",
    [
        # Worker 0 reads files 0 and 2 (64 examples), worker 1 file 1 (32):
        # 32 // 8 rows per worker and step.
        ((32, 32, 32), 4),
        # Fewer files than workers: both read the file, each keeps half.
        ((96,), 6),
    ],
)
def test_each_worker_streams_its_own_share_of_the_files(tmp_path, counts, steps):
    builder, _ = data.prepare("tiny_images", str(tmp_path), None)
    records = streaming.decoded_records(builder, splits.TRAIN_SPLIT, with_labels=True)
    records = _split_into_files(records, counts, tmp_path)
    assert streaming.streamed_steps(records.lengths, 16, shards=2, replicas=2) == steps
    shares = [
        _epochs(
            streaming.streamed_batches(
                records, 16, seed=0, shards=2, shard_index=worker, shuffle_buffer=5
            ),
            steps,
            1,
        )[0][0]
        for worker in (0, 1)
    ]
    assert all(share.shape == (steps * 8, *TINY_SHAPE) for share in shares)
    assert not set(_keys(shares[0])) & set(_keys(shares[1]))
    if len(counts) > 1:
        split = data.load_split(builder, splits.TRAIN_SPLIT)
        assert set(_keys(shares[1])) <= set(_keys(split[32:64]))
    # Two local replicas per worker: blocks of 4 rows, two per step.
    blocks = streaming.streamed_batches(
        records, 16, seed=0, shards=2, shard_index=0, replicas_per_shard=2
    )
    assert next(iter(blocks))[0].shape == (4, *TINY_SHAPE)


def test_streaming_refuses_a_batch_that_does_not_split_over_the_replicas():
    with pytest.raises(errors.UsageError, match="by 4. Received: --batch_size=10"):
        streaming.streamed_steps((100, 100), 10, shards=2, replicas=4)
    with pytest.raises(errors.UsageError, match=r"\(3 per worker\); use a smaller"):
        streaming.streamed_steps((7,), 8, shards=2, replicas=2)


@pytest.mark.parametrize(
    "spec, expected",
    [("0", 0), ("512MB", 512 * 2**20), ("1.5GB", int(1.5 * 2**30)), ("2kb", 2048)],
)
def test_memory_budget_sizes(spec, expected):
    assert streaming.budget_problem(spec) is None
    assert streaming.memory_budget_bytes(spec) == expected


def test_memory_budget_shares_and_the_path_they_choose(monkeypatch):
    monkeypatch.setattr(memory, "physical_memory", lambda: 1000 * 2**20)
    assert streaming.memory_budget_bytes("25%") == 250 * 2**20
    info = data.DatasetInfo("mnist", (28, 28, 1), 60_000, 10_000, 10)
    assert streaming.split_bytes(info) == 47_040_000
    assert not streaming.streams(info, "25%")
    assert streaming.streams(info, "4%")  # 40 MB: MNIST streams.
    assert streaming.streams(info, "47040000") is False
    assert streaming.streams(info, "47040000", with_labels=True)


def test_what_cannot_fit_this_machine_is_refused_naming_the_flag(monkeypatch):
    monkeypatch.setattr(memory, "physical_memory", lambda: 1000 * 2**20)
    info = data.DatasetInfo("big", (1000, 1000, 3), 1000, 10, None)  # 2.8 GB.
    with pytest.raises(
        errors.UsageError,
        match=r"--memory_budget=5GB holds the training split \(decoded\) in memory, "
        r"and it takes 2.8 GB, more than this machine's 1.0 GB",
    ):
        streaming.streams(info, "5GB")
    assert streaming.streams(info, "25%", shuffle_buffer=100)  # 572 MB.
    with pytest.raises(
        errors.UsageError,
        match=r"--shuffle_buffer=200 records and their permuted copy take 1.1 GB",
    ):
        streaming.streams(info, "25%", shuffle_buffer=200)


@pytest.mark.parametrize("spec", ["lots", "%", "150%", "1PB", "-1MB", "2 GB GB"])
def test_bad_memory_budgets_are_named(spec):
    assert "must be" in streaming.budget_problem(spec)


def _folder_and_source(builder):
    folder = os.path.join(builder.data_dir, streaming.DECODED_DIR, splits.TRAIN_SPLIT)
    return folder, os.path.join(folder, streaming._MANIFEST)


def test_a_decoded_copy_of_other_tfds_files_is_written_again(tmp_path):
    builder, _ = data.prepare("tiny_images", str(tmp_path), None)
    streaming.decoded_records(builder, splits.TRAIN_SPLIT)
    folder, manifest_path = _folder_and_source(builder)
    # As if the dataset had been prepared anew in place with other images:
    # the copy's files are another split's, its manifest says so.
    with open(manifest_path) as f:
        manifest = json.load(f)
    manifest["source"]["num_bytes"] += 1
    with open(manifest_path, "w") as f:
        json.dump(manifest, f)
    for name in os.listdir(folder):
        if name != streaming._MANIFEST:
            with tf.io.TFRecordWriter(os.path.join(folder, name)) as writer:
                writer.write(b"\0" * 64)
    records = streaming.decoded_records(builder, splits.TRAIN_SPLIT)
    images = np.concatenate(
        [
            records.decode(batch).numpy()
            for batch in tf.data.TFRecordDataset(list(records.files)).batch(96)
        ]
    )
    np.testing.assert_array_equal(images, data.load_split(builder, splits.TRAIN_SPLIT))
    assert sorted(os.listdir(os.path.dirname(folder))) == [splits.TRAIN_SPLIT]


def test_a_decoded_copy_that_cannot_be_written_is_refused_before_any_work(
    tmp_path, monkeypatch
):
    builder, _ = data.prepare("tiny_images", str(tmp_path), None)
    decoded = os.path.join(builder.data_dir, streaming.DECODED_DIR)
    with open(decoded, "w") as f:
        f.write("mine")
    with pytest.raises(errors.UsageError, match=r"decoded copy's folder, in --data"):
        streaming.decoded_records(builder, splits.TRAIN_SPLIT)
    # A data dir the user may read, not write (a shared, prepared one).
    os.remove(decoded)

    def refused(**kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    with pytest.raises(errors.UsageError, match=r"cannot be created: .*Permission"):
        streaming.decoded_records(builder, splits.TRAIN_SPLIT)
    assert not os.path.exists(decoded)


def test_a_damaged_split_is_refused_while_its_decoded_copy_is_written(tmp_path):
    builder, _ = data.prepare("tiny_images", str(tmp_path), None)
    for path in pathlib.Path(builder.data_dir).glob("*-train.tfrecord*"):
        path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(errors.UsageError, match=r"The train split .* is damaged"):
        streaming.decoded_records(builder, splits.TRAIN_SPLIT)
    assert not os.path.exists(_folder_and_source(builder)[0])


def test_scratch_folders_of_killed_runs_are_removed_and_live_ones_kept(tmp_path):
    builder, _ = data.prepare("tiny_images", str(tmp_path), None)
    folder, _ = _folder_and_source(builder)
    host = socket.gethostname()
    finished = subprocess.Popen(["true"])
    finished.wait()
    dead = finished.pid
    left = [
        f"{folder}.partial-{host}-{dead}",
        f"{folder}.stale-{host}-{dead}",
        f"{folder}.partial-{host}-{os.getppid()}",  # Alive: still writing.
        f"{folder}.partial-another-host-{dead}",  # Maybe alive there.
    ]
    for path in left:
        os.makedirs(path)
    streaming.decoded_records(builder, splits.TRAIN_SPLIT)
    assert [os.path.exists(path) for path in left] == [False, False, True, True]


@pytest.mark.parametrize("with_labels", [False, True])
def test_streamed_test_batches_are_the_in_memory_ones(tmp_path, with_labels):
    builder, _ = data.prepare("tiny_images", str(tmp_path), None)
    records = streaming.decoded_records(builder, splits.TEST_SPLIT, with_labels)
    streamed = streaming.ordered_batches(records, 16)
    in_memory = data.test_batches(builder, 16, with_labels)
    assert int(streamed.cardinality()) == 3  # 40 examples: 16, 16, 8.
    for _ in range(2):  # Every pass the same.
        pairs = list(zip(streamed, in_memory, strict=True))
        for a, b in pairs:
            for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b), strict=True):
                assert x.dtype == y.dtype
                np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_a_copy_another_worker_finished_first_is_kept_for_its_readers(tmp_path):
    builder, _ = data.prepare("tiny_images", str(tmp_path), None)
    streaming.decoded_records(builder, splits.TRAIN_SPLIT)
    folder, _ = _folder_and_source(builder)

    def inodes():
        return {
            name: os.stat(os.path.join(folder, name)).st_ino
            for name in os.listdir(folder)
        }

    before = inodes()
    # A second worker that found no copy when it started finishes its own.
    streaming._write_decoded(builder, splits.TRAIN_SPLIT, folder)
    assert inodes() == before
    assert os.listdir(os.path.dirname(folder)) == [splits.TRAIN_SPLIT]
