"""Streaming training input: a training split larger than memory, read from files.

The in-memory path (`data.shuffled_batches`) holds the whole split; a split
larger than `--memory_budget` is streamed instead (`streams` decides):

- once per dataset, the split is written decoded (each image's raw pixels
  and label) into record files beside TFDS's own (`decoded_records`):
  decoding TFDS's PNGs every epoch took more CPU than training the model
  (the README's input table); a manifest names the TFDS split the copy was
  made from, so a dataset prepared anew is written again;
- epoch e reads the files in an order seeded by (seed, e), interleaved, and
  permutes each block of `--shuffle_buffer` records with a seed of (seed, e,
  block): memory holds a block, not the dataset, and the same seed gives the
  same batches, also after a resume (`streamed_batches`);
- under several workers, each reads only its own files; the test split is
  read from its decoded copy in order (`ordered_batches`), as in memory.
"""

import dataclasses
import json
import math
import os
import re
import shutil
import socket

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from tfvae import data, errors, folders, memory

# The decoded files' folder, beside TFDS's files in the builder's data dir.
DECODED_DIR = "tfvae_decoded"
# Each decoded folder's record of its files' lengths and of the TFDS split
# they were made from.
_MANIFEST = "manifest.json"
# Decoded files are cut into shards of about this size, so that several
# workers can each read their own.
_SHARD_BYTES = 16 * 2**20
# Each record: the image's bytes, then its label as a little-endian int64.
_LABEL = np.dtype("<i8")

_BUDGET = re.compile(r"(\d+(?:\.\d+)?)\s*(%|KB|MB|GB|TB)?", re.IGNORECASE)
_UNITS = {"KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}


def budget_problem(spec: str) -> str | None:
    """Returns what is wrong with a `--memory_budget` value, or None."""
    match = _BUDGET.fullmatch(spec.strip())
    if not match:
        return "must be a share of memory (25%) or a size (512MB, 2GB, 0)"
    if match.group(2) == "%" and float(match.group(1)) > 100:
        return "must be at most 100%"
    return None


def memory_budget_bytes(spec: str) -> int:
    """Returns the bytes `--memory_budget` allows: "25%" of this machine's
    physical memory, "512MB", "0" (a bare number is bytes)."""
    amount, unit = _BUDGET.fullmatch(spec.strip()).groups()
    if unit == "%":
        return int(float(amount) / 100 * memory.physical_memory())
    return int(float(amount) * _UNITS.get((unit or "").upper(), 1))


def check_in_memory(needed: int, memory_budget: str, what: str):
    """Refuses a `--memory_budget` holding `what` (`needed` bytes) in memory
    when this machine has less: a smaller budget streams it instead."""
    if needed > (available := memory.physical_memory()):
        raise errors.UsageError(
            f"--memory_budget={memory_budget} holds {what} in memory, and it takes "
            f"{needed / 2**30:.1f} GB, more than this machine's {available / 2**30:.1f}"
            " GB. Use a smaller --memory_budget (e.g. 25%) to stream it."
        )


def split_bytes(info: data.DatasetInfo, with_labels: bool = False) -> int:
    """Returns the bytes the training split takes in memory, decoded."""
    per_example = math.prod(info.image_shape) + (_LABEL.itemsize if with_labels else 0)
    return info.num_train * per_example


def streams(
    info: data.DatasetInfo,
    memory_budget: str,
    with_labels: bool = False,
    shuffle_buffer: int = 1,
) -> bool:
    """Returns whether training streams the split; logs the choice and why.

    Raises `UsageError` if what it holds in memory cannot fit this machine:
    the whole split, or a block of `shuffle_buffer` records and its copy.
    """
    needed, budget = split_bytes(info, with_labels), memory_budget_bytes(memory_budget)
    streamed = needed > budget
    if not streamed:
        check_in_memory(needed, memory_budget, "the training split (decoded)")
    block = 2 * shuffle_buffer * (needed // max(info.num_train, 1))
    if streamed and block > (available := memory.physical_memory()):
        raise errors.UsageError(
            f"--shuffle_buffer={shuffle_buffer} records and their permuted copy "
            f"take {block / 2**30:.1f} GB, more than this machine's "
            f"{available / 2**30:.1f} GB. Use a smaller --shuffle_buffer."
        )
    logging.info(
        "Training input: %s (the training split takes %.1f MB decoded; "
        "--memory_budget=%s allows %.1f MB).",
        "streamed from record files" if streamed else "in memory",
        needed / 2**20,
        memory_budget,
        budget / 2**20,
    )
    return streamed


@dataclasses.dataclass(frozen=True)
class RecordFiles:
    """A split's decoded record files and the example count of each."""

    files: tuple[str, ...]
    lengths: tuple[int, ...]
    image_shape: tuple[int, int, int]
    with_labels: bool = False

    def decode(self, records: tf.Tensor):
        """Returns `uint8 [batch, H, W, C]` images of a batch of records, or
        `(images, int64 labels [batch])` with `with_labels`."""
        flat = tf.io.decode_raw(records, tf.uint8)
        pixels = math.prod(self.image_shape)
        images = tf.reshape(flat[:, :pixels], [-1, *self.image_shape])
        if not self.with_labels:
            return images
        labels = tf.bitcast(
            tf.reshape(flat[:, pixels:], [-1, _LABEL.itemsize]), tf.int64
        )
        return images, labels


def _source(builder: tfds.core.DatasetBuilder, split: str) -> dict:
    """Returns what identifies TFDS's copy of `split`: a decoded copy made
    from other files (the dataset prepared anew in place) is written again."""
    info = builder.info.splits[split]
    return {
        "num_examples": info.num_examples,
        "num_bytes": int(info.num_bytes),
        "shard_lengths": [int(n) for n in info.shard_lengths],
    }


def _read_manifest(folder: str) -> dict | None:
    """Returns the manifest of a decoded folder, or None if it has none."""
    try:
        with open(os.path.join(folder, _MANIFEST)) as f:
            return json.load(f)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _up_to_date(folder: str, source: dict) -> bool:
    """Returns whether `folder` holds a decoded copy of the split `source` names."""
    manifest = _read_manifest(folder)
    return manifest is not None and manifest["source"] == source


def _process_tag() -> str:
    """Returns `<host>-<pid>`: names this process's scratch folders."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _remove_dead_scratch(folder: str):
    """Removes scratch folders beside `folder` left by killed processes of
    this host (another host's, on a shared file system, may be in use)."""
    parent, name = os.path.split(folder)
    pattern = re.compile(
        rf"{re.escape(name)}\.(partial|stale)-{re.escape(socket.gethostname())}-(\d+)"
    )
    for entry in os.listdir(parent) if os.path.isdir(parent) else ():
        match = pattern.fullmatch(entry)
        if not match:
            continue
        try:
            os.kill(int(match.group(2)), 0)
        except ProcessLookupError:
            logging.info("Removing %s, left by a killed run.", entry)
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
        except PermissionError:
            pass  # Alive, another user's.


def _write_decoded(builder: tfds.core.DatasetBuilder, split: str, folder: str):
    """Writes `split` decoded into shards in `folder`, atomically, replacing a
    copy made from other TFDS files."""
    shape = data.image_shape(builder)
    total = builder.info.splits[split].num_examples
    record_bytes = math.prod(shape) + _LABEL.itemsize
    shards = max(1, math.ceil(total * record_bytes / _SHARD_BYTES))
    per_shard = math.ceil(total / shards)
    has_labels = "label" in builder.info.features
    _remove_dead_scratch(folder)
    scratch = f"{folder}.partial-{_process_tag()}"
    os.makedirs(scratch, exist_ok=True)
    logging.info("Writing the %s split decoded, once, to %s.", split, folder)
    examples = builder.as_dataset(split=split, shuffle_files=False).map(
        lambda e: (e["image"], e["label"] if has_labels else tf.constant(0, tf.int64)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    progress = keras.utils.Progbar(total, unit_name="image")
    lengths, writer, index = [], None, 0
    with data.reading(builder, split):
        for images, labels in tfds.as_numpy(examples.batch(1024)):
            for image, label in zip(images, labels.astype(_LABEL), strict=True):
                if index % per_shard == 0:
                    if writer:
                        writer.close()
                    name = f"{split}.records-{len(lengths):05d}-of-{shards:05d}"
                    writer = tf.io.TFRecordWriter(os.path.join(scratch, name))
                    lengths.append(0)
                writer.write(image.tobytes() + label.tobytes())
                lengths[-1] += 1
                index += 1
            progress.update(index)
    if writer:
        writer.close()
    source = _source(builder, split)
    with open(os.path.join(scratch, _MANIFEST), "w") as f:
        json.dump({"lengths": lengths, "source": source}, f)
    if _up_to_date(folder, source):
        # Another process (another worker on this data dir) wrote it first,
        # and may be reading it.
        shutil.rmtree(scratch)
        return
    if os.path.exists(folder):
        # A copy of other files: moved aside first, as a folder is only
        # replaced whole, then deleted.
        stale = f"{folder}.stale-{_process_tag()}"
        try:
            os.replace(folder, stale)
        except OSError:
            pass  # Another process moved it first.
        else:
            shutil.rmtree(stale)
    # Written whole or not at all: a killed run leaves only the scratch folder.
    try:
        os.replace(scratch, folder)
    except OSError:
        # Another process put its copy there since.
        if not _up_to_date(folder, source):
            raise
        shutil.rmtree(scratch)


def decoded_records(
    builder: tfds.core.DatasetBuilder, split: str, with_labels: bool = False
) -> RecordFiles:
    """Returns the decoded `RecordFiles` of a prepared builder's `split`.

    Writes them, once, into `<data dir>/tfvae_decoded/<split>` (a progress
    bar shows it); the files take the split's decoded size on disk. A copy
    made from other TFDS files than the builder's (the dataset prepared anew
    in place) is written again.
    """
    folder = os.path.join(builder.data_dir, DECODED_DIR, split)
    if not _up_to_date(folder, _source(builder, split)):
        if os.path.exists(folder):
            logging.warning(
                "The decoded copy in %s was made from other files than TFDS's "
                "%s split has now; writing it again.",
                folder,
                split,
            )
        # Written beside it, then moved in place.
        parent = os.path.dirname(folder)
        folders.check_writable(
            parent, f"{parent} (the decoded copy's folder, in --data_dir)"
        )
        _write_decoded(builder, split, folder)
    lengths = tuple(_read_manifest(folder)["lengths"])
    files = tuple(
        os.path.join(folder, f"{split}.records-{i:05d}-of-{len(lengths):05d}")
        for i in range(len(lengths))
    )
    return RecordFiles(files, lengths, data.image_shape(builder), with_labels)


def streamed_steps(lengths, batch_size: int, shards: int = 1, replicas: int = 1) -> int:
    """Returns the steps per epoch of the streaming path: the full global
    batches of `batch_size` that each of `shards` workers can fill from its
    own share.

    With at least as many files as shards, worker w reads files w, w + shards,
    ...; otherwise every worker reads all files and keeps every shards-th
    record. Raises `UsageError` when the batch does not split evenly over the
    `replicas` or is larger than a worker's share.
    """
    if batch_size % replicas:
        raise errors.UsageError(
            f"Streaming to {replicas} replicas on {shards} worker(s) needs a "
            f"--batch_size divisible by {replicas}. Received: --batch_size="
            f"{batch_size}"
        )
    if len(lengths) >= shards:
        per_shard = min(sum(lengths[i::shards]) for i in range(shards))
    else:
        per_shard = sum(lengths) // shards
    steps = per_shard // (batch_size // shards)
    if steps == 0:
        raise errors.UsageError(
            f"--batch_size={batch_size} is larger than the {sum(lengths)} "
            f"training images{f' ({per_shard} per worker)' if shards > 1 else ''}"
            "; use a smaller batch."
        )
    return steps


def streamed_batches(
    records: RecordFiles,
    batch_size: int,
    seed: int,
    first_epoch: int = 0,
    shuffle_buffer: int = 10_000,
    shards: int = 1,
    shard_index: int = 0,
    replicas_per_shard: int = 1,
) -> tf.data.Dataset:
    """Returns an endless stream of epochs read from `records`' files.

    Worker `shard_index` of `shards` reads its share of the files (see
    `streamed_steps`) and yields, per epoch, its rows of every global batch of
    `batch_size`, cut into `replicas_per_shard` consecutive blocks (one per
    local replica, in turn): `uint8 [batch_size // shards //
    replicas_per_shard, H, W, C]` (or `(images, labels)`), `streamed_steps *
    replicas_per_shard` of them. Epoch e (from `first_epoch`) reads the files
    in the order seeded by (`seed`, e), interleaved, and permutes each block
    of about `shuffle_buffer` consecutive records (the memory bound) with a
    seed of (`seed`, e, block).
    """
    steps = streamed_steps(
        records.lengths, batch_size, shards, shards * replicas_per_shard
    )
    by_file = len(records.files) >= shards
    files = records.files[shard_index::shards] if by_file else records.files
    rows = batch_size // shards // replicas_per_shard
    # A multiple of the rows, so that only an epoch's last block leaves a
    # remainder: the epoch's N % rows examples left out.
    block = max(rows, shuffle_buffer // rows * rows)

    def epoch_batches(epoch):
        epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
        order = tf.random.experimental.stateless_shuffle(tf.constant(files), epoch_seed)
        stream = tf.data.Dataset.from_tensor_slices(order).interleave(
            tf.data.TFRecordDataset, cycle_length=min(len(files), 4)
        )
        if not by_file:
            stream = stream.shard(shards, shard_index)

        def permuted(index, block_records):
            # Stateless, not Dataset.shuffle: its seed cannot be a tensor (the
            # epoch) once Keras has set TF's global seed.
            block_seed = tf.random.experimental.stateless_fold_in(epoch_seed, index)
            mixed = tf.random.experimental.stateless_shuffle(block_records, block_seed)
            whole = tf.size(mixed) // rows * rows
            return tf.data.Dataset.from_tensor_slices(
                tf.reshape(mixed[:whole], [-1, rows])
            )

        return (
            stream.batch(block)
            .enumerate()
            .flat_map(permuted)
            .map(records.decode)
            .take(steps * replicas_per_shard)
        )

    epochs = tf.data.Dataset.range(first_epoch, tf.int64.max)
    return data.prefetched(
        epochs.flat_map(epoch_batches).apply(
            tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY)
        )
    )


def ordered_batches(records: RecordFiles, batch_size: int) -> tf.data.Dataset:
    """Returns every record of `records` once, in the files' order: `uint8
    [batch, H, W, C]` batches (or `(images, labels)`), the last one short.

    The streamed `data.test_batches`: the decoded files keep TFDS's order, so
    the batches and figures are the same; memory holds a batch, not the split.
    """
    count = math.ceil(sum(records.lengths) / batch_size)
    batches = tf.data.TFRecordDataset(list(records.files)).batch(batch_size)
    return data.prefetched(
        batches.map(records.decode).apply(
            tf.data.experimental.assert_cardinality(count)
        )
    )
