"""A hostile user's sweep: bad input is refused clearly, and nothing changes.

Each case states an input (a flag of `tfvae.train`, `tfvae.evaluate` or
`tfvae.export`, a missing or damaged run file, an export folder, a signature
input) and the message it must produce; afterwards the run directory and the
export base hold exactly what they held before. Then what a damaged backup,
a kill during a backup and a damaged weights file must lead to: a resume
from the newest intact backup, logged, with every epoch in history.csv once
and the weights of an uninterrupted run.

The commands run in-process where their flags are not the point (a
subprocess costs ~10 s of imports); the flag cases of each command run in
one subprocess per command, all three at once.
"""

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tests.conftest import REPO, TINY_SHAPE, session_signatures, tiny_config
from tests.test_table_datasets import table_dataset_config
from tests.test_table_training import table_config, tiny_table
from tfvae import (
    errors,
    resume,
    run_dir,
    run_eval,
    saved_model,
    training,
)
from tfvae import signatures as signatures_lib

MAX_SAMPLES = 1000  # The default --export_max_samples.


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The config of a finished 2-epoch tiny run, with IWAE rows and an export."""
    root = tmp_path_factory.mktemp("trained")
    config = tiny_config(root, epochs=2, iwae_every_epochs=1, export=True)
    training.train_and_evaluate(config)
    return config


def _copy(trained, tmp_path, **overrides):
    """Returns `trained` copied into `tmp_path` (run and export), with `overrides`."""
    shutil.copytree(trained.model_dir, tmp_path / "run")
    shutil.copytree(trained.export_dir, tmp_path / "export")
    paths = dict(model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "export"))
    return dataclasses.replace(trained, **{**paths, **overrides})


def _snapshot(top) -> dict:
    """Returns {path: bytes, or None for a folder} of everything under `top`."""
    found = {}
    for folder, _, names in os.walk(top):
        found[folder] = None
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                found[os.path.join(folder, name)] = f.read()
    return found


# --- Damaged run files ------------------------------------------------------------


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(path):
    path.write_bytes(b"")


def _folder(path):
    path.unlink()
    path.mkdir()


def _remove(path):
    path.unlink()


def _write(text):
    return lambda path: path.write_text(text)


def _json_with(**changes):
    def damage(path):
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

    return damage


def _cut_mid_row(path):
    # A kill (or a full disk) in the middle of writing a row: a field short.
    text = path.read_text()
    path.write_text(text[: text.rindex(",")])


def _garble(path):
    # What `dd if=/dev/urandom of=FILE bs=1 count=4096 conv=notrunc` does.
    data = bytearray(path.read_bytes())
    data[:4096] = np.random.default_rng(0).bytes(4096)
    path.write_bytes(bytes(data))


_NOT_JSON = r"config.json is damaged: it is not JSON .*Restore it from a copy"
_WEIGHTS_DAMAGED = (
    r"model.weights.h5 is damaged: Keras cannot load it .*Rerun the run's "
    "training command"
)
_LAYOUT = r"{} is a folder, where a tfvae run keeps a file. Move it out of"
# name: (file of the run, damage, {command: message}). The commands: "train"
# resumes the run, "evaluate" and "export" load it.
RUN_FILE_CASES = {
    "config.json empty": (
        "config.json",
        _empty,
        dict(train=_NOT_JSON, evaluate=_NOT_JSON, export=_NOT_JSON),
    ),
    "config.json cut short": (
        "config.json",
        _truncate,
        dict(train=_NOT_JSON, evaluate=_NOT_JSON, export=_NOT_JSON),
    ),
    "config.json a list": (
        "config.json",
        _write("[]\n"),
        dict(evaluate=r"config.json is not a valid tfvae configuration: it holds a"),
    ),
    "config.json with an unknown setting": (
        "config.json",
        _json_with(colour="blue"),
        dict(
            train=r"not a valid tfvae configuration: .*unknown keys \['colour'\]",
            export=r"not a valid tfvae configuration: .*unknown keys \['colour'\]",
        ),
    ),
    "config.json with a bad value": (
        "config.json",
        _json_with(seed=-1),
        dict(evaluate=r"config.json is not a valid tfvae configuration: --seed must"),
    ),
    "config.json a folder": (
        "config.json",
        _folder,
        dict(
            train=_LAYOUT.format("config.json"),
            evaluate="config.json is a folder, not a file",
        ),
    ),
    "execution.json cut short": (
        "execution.json",
        _write('{"mixed_precision'),
        dict(train="execution.json is damaged: it is not JSON .*Delete it"),
    ),
    "execution.json with a bad value": (
        "execution.json",
        _json_with(mixed_precision="float8"),
        dict(train="execution.json is not a run's execution .*Delete it"),
    ),
    "config.json missing": (
        "config.json",
        _remove,
        dict(
            train="is not empty and holds no config.json, so it is not a tfvae run",
            evaluate="config.json does not exist: .* is not a tfvae run directory",
            export="config.json does not exist: .* is not a tfvae run directory",
        ),
    ),
    "dataset.json missing": (
        "dataset.json",
        _remove,
        dict(
            evaluate="dataset.json does not exist. Rerun the run's training command",
            export="dataset.json does not exist. Rerun the run's training command",
        ),
    ),
    "dataset.json cut short": (
        "dataset.json",
        _truncate,
        dict(export="dataset.json is damaged: it is not JSON"),
    ),
    "dataset.json without the image shape": (
        "dataset.json",
        _write('{"name": "tiny_images"}'),
        dict(evaluate="dataset.json is not a valid dataset description"),
    ),
    "dataset.json a folder": (
        "dataset.json",
        _folder,
        dict(
            train=_LAYOUT.format("dataset.json"),
            export="dataset.json is a folder, not a file",
        ),
    ),
    "model.weights.h5 cut short": (
        "model.weights.h5",
        _truncate,
        dict(evaluate=_WEIGHTS_DAMAGED, export=_WEIGHTS_DAMAGED),
    ),
    "model.weights.h5 empty": (
        "model.weights.h5",
        _empty,
        dict(evaluate=_WEIGHTS_DAMAGED),
    ),
    "model.weights.h5 overwritten at the start": (
        "model.weights.h5",
        _garble,
        dict(export=_WEIGHTS_DAMAGED),
    ),
    "model.weights.h5 a folder": (
        "model.weights.h5",
        _folder,
        dict(
            train=_LAYOUT.format("model.weights.h5"),
            evaluate="model.weights.h5 is a folder, not a file",
        ),
    ),
    "model.weights.h5 missing": (
        "model.weights.h5",
        _remove,
        dict(export="model.weights.h5 does not exist: .* or the file was deleted"),
    ),
    "history.csv cut in a row": (
        "history.csv",
        _cut_mid_row,
        dict(
            train=r"history.csv is damaged: line 3 is not a row of \d+ numbers",
            evaluate=r"history.csv is damaged: line 3 is not a row of \d+ numbers",
        ),
    ),
    "history.csv with another header": (
        "history.csv",
        _write("when,what\n0,1\n"),
        dict(evaluate="history.csv is damaged: its first line should name the"),
    ),
    "history.csv empty": (
        "history.csv",
        _empty,
        dict(train="history.csv lacks the rows of 2 of the 2 epochs the backup"),
    ),
    "history.csv missing": (
        "history.csv",
        _remove,
        dict(train="history.csv lacks the rows of 2 of the 2 epochs the backup"),
    ),
    "history.csv a folder": (
        "history.csv",
        _folder,
        dict(
            train=_LAYOUT.format("history.csv"),
            evaluate="history.csv is a folder, not a file",
        ),
    ),
    "iwae_history.csv cut in a row": (
        "iwae_history.csv",
        _cut_mid_row,
        dict(
            train="iwae_history.csv is damaged: line 3 is not a row",
            evaluate="iwae_history.csv is damaged: line 3 is not a row",
        ),
    ),
    "both backups' weights damaged": (
        "backup/latest.weights.h5",
        lambda path: (_garble(path), _truncate(path.with_suffix(".h5.bkp"))),
        dict(
            train=r"No backup in .*backup is intact, so the run cannot resume: .*"
            r"latest.weights.h5 is damaged .* and .*latest.weights.h5.bkp is "
            r"damaged .*Delete .*backup to train the run again from epoch 1"
        ),
    ),
    "both backups' checksums missing": (
        "backup/checksums.json",
        lambda path: (_remove(path), _remove(path.with_suffix(".json.bkp"))),
        dict(train=r"No backup .* is intact.*checksums.json is missing"),
    ),
    "backup a file": (
        "backup",
        lambda path: (shutil.rmtree(path), path.write_text("")),
        dict(train="backup is a file, where a tfvae run keeps its backup/ folder"),
    ),
    "backup/latest.weights.h5 a folder": (
        "backup/latest.weights.h5",
        _folder,
        dict(train=_LAYOUT.format("latest.weights.h5")),
    ),
    "logs a file": (
        "logs",
        lambda path: (shutil.rmtree(path), path.write_text("")),
        dict(train="logs is a file, where a tfvae run keeps its logs/ folder"),
    ),
    "eval a file": (
        "eval",
        _write(""),
        dict(evaluate="eval, where the results go, is a file, not a folder"),
    ),
}


def _train(config):
    training.train_and_evaluate(config)


def _evaluate(config):
    run_eval.evaluate_run(
        run_eval.EvalConfig(
            model_dir=config.model_dir, num_importance_samples=2, batch_size=40
        )
    )


def _export(config):
    # What `python -m tfvae.export --model_dir=... --export_dir=...` does.
    loaded, info, vae = run_dir.load_run(config.model_dir)
    saved_model.export(vae, config.export_dir, config=loaded, dataset_info=info)


COMMANDS = {"train": _train, "evaluate": _evaluate, "export": _export}


@pytest.mark.parametrize(
    "case, command",
    [(case, command) for case, (_, _, ms) in RUN_FILE_CASES.items() for command in ms],
)
def test_a_damaged_run_file_is_refused_naming_it_and_the_fix(
    trained, tmp_path, case, command
):
    name, damage, messages = RUN_FILE_CASES[case]
    config = _copy(trained, tmp_path)
    damage(tmp_path / "run" / name)
    before = _snapshot(tmp_path)
    with pytest.raises(errors.UsageError, match=messages[command]):
        COMMANDS[command](config)
    assert _snapshot(tmp_path) == before


def test_an_export_dir_that_is_a_file_is_refused_before_training(trained, tmp_path):
    config = _copy(trained, tmp_path, epochs=3, export_dir=str(tmp_path / "file"))
    (tmp_path / "file").write_text("mine")
    before = _snapshot(tmp_path)
    for command in (_train, _export):
        with pytest.raises(errors.UsageError, match=r"file is a file, not a folder"):
            command(config)
        assert _snapshot(tmp_path) == before


# --- Backups: damaged, or cut short by a kill --------------------------------------


@pytest.fixture(scope="module")
def uninterrupted(trained, tmp_path_factory):
    """The weights of `trained` trained for 3 epochs in one go."""
    root = tmp_path_factory.mktemp("uninterrupted")
    config = dataclasses.replace(
        trained, model_dir=str(root / "run"), epochs=3, export=False
    )
    training.train_and_evaluate(config)
    return [w.numpy() for w in run_dir.load_run(config.model_dir)[2].weights]


def _epochs_in(csv_path):
    return [line.split(",")[0] for line in csv_path.read_text().split()[1:]]


def _assert_resumed_as_uninterrupted(run, metrics, uninterrupted):
    assert _epochs_in(run / "history.csv") == ["0", "1", "2"]
    assert _epochs_in(run / "iwae_history.csv") == ["0", "1", "2"]
    assert metrics["epochs"] == 3
    for a, b in zip(run_dir.load_run(str(run))[2].weights, uninterrupted, strict=True):
        np.testing.assert_array_equal(a.numpy(), b)


def _garble_data(path):
    # Bytes in the middle of the weights: h5py would read them without a word.
    data = bytearray(path.read_bytes())
    data[-3000:-2000] = bytes(1000)
    path.write_bytes(bytes(data))


# name: (backup file, damage). Each leaves the previous backup intact.
DAMAGED_LATEST_BACKUPS = {
    "weights overwritten at the start": ("latest.weights.h5", _garble),
    "weights zeroed in the middle": ("latest.weights.h5", _garble_data),
    "metadata not JSON": ("training_metadata.json", _write("{")),
    "checksums deleted": ("checksums.json", _remove),
}


@pytest.mark.parametrize("case", DAMAGED_LATEST_BACKUPS)
def test_a_damaged_latest_backup_falls_back_to_the_previous_one_and_says_so(
    trained, uninterrupted, tmp_path, caplog, case
):
    name, damage = DAMAGED_LATEST_BACKUPS[case]
    config = _copy(trained, tmp_path, epochs=3, export=False)
    damage(tmp_path / "run" / "backup" / name)
    metrics = training.train_and_evaluate(config)
    # Epoch 2 was trained again, and logged once.
    _assert_resumed_as_uninterrupted(tmp_path / "run", metrics, uninterrupted)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(
        "latest backup is damaged or incomplete" in message
        and name in message
        and "after epoch 1" in message
        for message in warnings
    ), warnings


def test_a_kill_during_a_backup_resumes_from_the_one_before(
    trained, uninterrupted, tmp_path, monkeypatch
):
    config = _copy(trained, tmp_path, epochs=3, export=False)
    with monkeypatch.context() as patch:
        # Killed after Keras wrote epoch 3's backup, before its checksums.
        def killed(backup_dir):
            raise KeyboardInterrupt("simulated kill")

        patch.setattr(resume, "write_backup_checksums", killed)
        with pytest.raises(KeyboardInterrupt):
            training.train_and_evaluate(config)
    run = tmp_path / "run"
    assert json.loads((run / "backup" / "training_metadata.json").read_text()) == {
        "epoch": 3,
        "batch": 0,
    }
    assert resume.resumed_epoch(str(run)) == 2
    metrics = training.train_and_evaluate(config)
    _assert_resumed_as_uninterrupted(run, metrics, uninterrupted)


def test_a_damaged_weights_file_is_put_back_by_rerunning_training(trained, tmp_path):
    config = _copy(trained, tmp_path, export=False)
    before = [w.numpy() for w in run_dir.load_run(config.model_dir)[2].weights]
    _truncate(tmp_path / "run" / "model.weights.h5")
    with pytest.raises(errors.UsageError, match=_WEIGHTS_DAMAGED):
        run_dir.load_run(config.model_dir)
    training.train_and_evaluate(config)  # As the message says; trains nothing.
    after = run_dir.load_run(config.model_dir)[2].weights
    for a, b in zip(after, before, strict=True):
        np.testing.assert_array_equal(a.numpy(), b)
    assert _epochs_in(tmp_path / "run" / "history.csv") == ["0", "1"]


def test_a_deleted_backup_trains_the_run_again_from_the_start(trained, tmp_path):
    config = _copy(trained, tmp_path, export=False)
    shutil.rmtree(tmp_path / "run" / "backup")
    assert resume.resumed_epoch(config.model_dir) == 0
    metrics = training.train_and_evaluate(config)
    assert metrics["epochs"] == 2
    assert _epochs_in(tmp_path / "run" / "history.csv") == ["0", "1"]
    trained_weights = run_dir.load_run(trained.model_dir)[2].weights
    for a, b in zip(
        run_dir.load_run(config.model_dir)[2].weights, trained_weights, strict=True
    ):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# --- Exports: folders, versions, signatures -----------------------------------------


def _evaluate_export(export_dir, output_dir, **settings):
    return run_eval.evaluate_run(
        run_eval.EvalConfig(
            export_dir=str(export_dir),
            output_dir=str(output_dir),
            **{"num_importance_samples": 2, "batch_size": 40, **settings},
        )
    )


def _non_tfvae_saved_model(path):
    module = tf.Module()
    module.f = tf.function(lambda: tf.constant(1), input_signature=[])
    tf.saved_model.save(module, str(path))


def _export_with_an_empty_latest_version(path):
    shutil.copytree(path / "1", path / "7")
    (path / "7" / "saved_model.pb").unlink()


# name: (prepare the export base, --export_dir within it, evaluation settings,
# message).
EXPORT_CASES = {
    "a folder with neither a SavedModel nor versions": (
        lambda path: (path / "other" / "notes").mkdir(parents=True),
        "other",
        {},
        r"holds neither a SavedModel \(saved_model.pb\) nor numbered version "
        r"folders. Pass an export's version folder",
    ),
    "a folder that does not exist": (
        lambda path: None,
        "nothing",
        {},
        r"nothing does not exist. Pass an export's version folder",
    ),
    "a latest version without its saved_model.pb": (
        _export_with_an_empty_latest_version,
        ".",
        {},
        r"7, the latest version in .* holds no saved_model.pb",
    ),
    "a version with its saved_model.pb cut short": (
        lambda path: _truncate(path / "1" / "saved_model.pb"),
        "1",
        {},
        r"1 cannot be loaded as a SavedModel, it is damaged \(Cannot parse",
    ),
    "a version without its variables": (
        lambda path: shutil.rmtree(path / "1" / "variables"),
        "1",
        {},
        r"1 cannot be loaded as a SavedModel, it is damaged",
    ),
    "a SavedModel that is not a tfvae export": (
        lambda path: _non_tfvae_saved_model(path / "3"),
        "3",
        {},
        r"3 is a SavedModel, but not a tfvae export: it has no metadata signature",
    ),
    "more samples per call than the export serves": (
        lambda path: None,
        ".",
        {"num_importance_samples": 5000, "samples_per_chunk": 2000},
        r"serves at most 1000 samples per call \(its max_samples\), and this "
        r"evaluation asks for 2000 at once .*--export_max_samples",
    ),
}


@pytest.mark.parametrize("case", EXPORT_CASES)
def test_evaluating_a_bad_export_folder_is_refused_clearly(trained, tmp_path, case):
    prepare, export_dir, settings, message = EXPORT_CASES[case]
    _copy(trained, tmp_path)
    prepare(tmp_path / "export")
    before = _snapshot(tmp_path)
    with pytest.raises(errors.UsageError, match=message):
        _evaluate_export(tmp_path / "export" / export_dir, tmp_path / "out", **settings)
    assert _snapshot(tmp_path) == before


def test_evaluating_a_model_base_path_takes_its_latest_version(
    trained, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="absl")
    _copy(trained, tmp_path)
    shutil.copytree(tmp_path / "export" / "1", tmp_path / "export" / "10")
    shutil.copytree(tmp_path / "export" / "1", tmp_path / "export" / "9")
    (tmp_path / "export" / ".tmp-export-x").mkdir()  # An export in progress.
    metrics = _evaluate_export(tmp_path / "export", tmp_path / "out")
    assert metrics["model"] == str(tmp_path / "export" / "10")
    assert f"Using {tmp_path / 'export' / '10'}, the latest version" in caplog.text
    # The same figures as the version folder itself.
    direct = _evaluate_export(tmp_path / "export" / "10", tmp_path / "direct")
    assert metrics["test_nll"] == direct["test_nll"]


@pytest.fixture(scope="module")
def signatures(trained):
    """The signatures of the trained run's export, loaded from Python."""
    return tf.saved_model.load(os.path.join(trained.export_dir, "1")).signatures


@pytest.fixture(scope="module")
def session_run(trained):
    """Returns run(signature, feeds): TF Serving's path, feeds unchecked by Python."""
    with session_signatures(os.path.join(trained.export_dir, "1")) as run:
        yield run


_IMAGES = np.zeros([2, *TINY_SHAPE], np.uint8)
_SEED = np.array([1, 2], np.int64)
_TOO_MANY = (
    rf"num_samples must be at most {MAX_SAMPLES}, the max_samples of this "
    r"export \(set by --export_max_samples when it was exported\)"
)
_NOT_POSITIVE = "num_samples must be a positive int32 scalar"
# The default bound of one request's images (or z) x samples, for the tiny
# 8x8x1 Bernoulli model: about 1 GB of memory.
MAX_BATCH_SAMPLES = signatures_lib.REQUEST_BYTES // (
    signatures_lib.BYTES_PER_DECODED_VALUE * 8 * 8
)
_TOO_LARGE = (
    rf"the batch times num_samples must be at most {MAX_BATCH_SAMPLES}, the "
    r"max_batch_samples of this export"
)
_OVER_THE_BOUND = np.zeros(
    [MAX_BATCH_SAMPLES // MAX_SAMPLES + 1, *TINY_SHAPE], np.uint8
)
# name: (signature, inputs, message).
SIGNATURE_CASES = {
    # Each num_samples is legal alone, the product is not: without the
    # bound, 1000 MNIST images x 1000 samples took a server down (13 GB).
    "log_weights: images x num_samples over the export's bound": (
        "log_weights",
        dict(images=_OVER_THE_BOUND, num_samples=np.int32(MAX_SAMPLES), seed=_SEED),
        _TOO_LARGE,
    ),
    "encode: more images than the export's bound": (
        "encode",
        dict(images=np.zeros([MAX_BATCH_SAMPLES + 1, *TINY_SHAPE], np.uint8)),
        _TOO_LARGE,
    ),
    "score: more images than the export's bound": (
        "score",
        dict(images=np.zeros([MAX_BATCH_SAMPLES + 1, *TINY_SHAPE], np.uint8)),
        _TOO_LARGE,
    ),
    "decode: more z than the export's bound": (
        "decode",
        dict(z=np.zeros([MAX_BATCH_SAMPLES + 1, 2], np.float32)),
        _TOO_LARGE,
    ),
    "sample: one more than the export's max": (
        "sample",
        dict(num_samples=np.int32(MAX_SAMPLES + 1), seed=_SEED),
        _TOO_MANY,
    ),
    # 2**31 - 1 images: refused before a byte is allocated.
    "sample: the largest int32": (
        "sample",
        dict(num_samples=np.int32(2**31 - 1), seed=_SEED),
        _TOO_MANY,
    ),
    "log_weights: one more than the export's max": (
        "log_weights",
        dict(images=_IMAGES, num_samples=np.int32(MAX_SAMPLES + 1), seed=_SEED),
        _TOO_MANY,
    ),
    "log_weights: an empty batch and too many samples": (
        "log_weights",
        dict(images=_IMAGES[:0], num_samples=np.int32(10**9), seed=_SEED),
        _TOO_MANY,
    ),
    "sample: negative num_samples": (
        "sample",
        dict(num_samples=np.int32(-5), seed=_SEED),
        _NOT_POSITIVE,
    ),
    "log_weights: zero num_samples": (
        "log_weights",
        dict(images=_IMAGES, num_samples=np.int32(0), seed=_SEED),
        _NOT_POSITIVE,
    ),
    "sample: num_samples with a batch": (
        "sample",
        dict(num_samples=np.array([4], np.int32), seed=_SEED),
        r"num_samples.* is not compatible with expected shape \[\]",
    ),
    "sample: a seed of 3 numbers": (
        "sample",
        dict(num_samples=np.int32(2), seed=np.array([1, 2, 3], np.int64)),
        r"seed.* \[3\] is not compatible with expected shape \[2\]",
    ),
    "encode: float images": (
        "encode",
        dict(images=_IMAGES.astype(np.float32)),
        r"expected to be a uint8 tensor but is a float|expect uint8",
    ),
    "score: images of another size": (
        "score",
        dict(images=np.zeros([2, 7, 7, 1], np.uint8)),
        r"images.* is not compatible with expected shape \[\?,8,8,1\]",
    ),
    "reconstruct: one image without its batch": (
        "reconstruct",
        dict(images=_IMAGES[0]),
        r"images.* is not compatible with expected shape \[\?,8,8,1\]",
    ),
    "decode: z of another size": (
        "decode",
        dict(z=np.zeros([2, 5], np.float32)),
        r"z.* is not compatible with expected shape \[\?,2\]",
    ),
    "decode: float64 z": (
        "decode",
        dict(z=np.zeros([2, 2], np.float64)),
        r"expected to be a float tensor but is a double|expect float",
    ),
}


@pytest.mark.parametrize("case", SIGNATURE_CASES)
def test_a_bad_signature_input_is_refused_naming_it(
    trained, signatures, session_run, case
):
    name, inputs, message = SIGNATURE_CASES[case]
    before = _snapshot(trained.export_dir)
    start = time.perf_counter()
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        signatures[name](**{key: tf.constant(v) for key, v in inputs.items()})
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        session_run(name, inputs)
    assert time.perf_counter() - start < 10
    assert _snapshot(trained.export_dir) == before


@pytest.mark.parametrize("name", ["encode", "score", "reconstruct", "log_weights"])
def test_an_empty_batch_gives_empty_outputs(signatures, name):
    inputs = dict(images=tf.constant(_IMAGES[:0]))
    if name == "log_weights":
        inputs.update(num_samples=tf.constant(3), seed=tf.constant(_SEED))
    for output in signatures[name](**inputs).values():
        assert output.shape[0] == 0


def test_the_export_reports_its_request_bound(trained, signatures):
    assert signatures["metadata"]()["max_batch_samples"] == MAX_BATCH_SAMPLES
    described = json.loads(signatures["metadata"]()["json"].numpy())
    assert described["max_batch_samples"] == MAX_BATCH_SAMPLES
    # At the bound exactly, the request is served.
    images = np.zeros([MAX_BATCH_SAMPLES // 100, *TINY_SHAPE], np.uint8)
    weights = signatures["log_weights"](
        images=images, num_samples=tf.constant(100), seed=tf.constant(_SEED)
    )["log_weights"]
    assert weights.shape == (MAX_BATCH_SAMPLES // 100, 100)


def test_the_export_reports_and_enforces_its_max_samples(trained, signatures, tmp_path):
    assert signatures["metadata"]()["max_samples"] == MAX_SAMPLES
    described = json.loads(signatures["metadata"]()["json"].numpy())
    assert described["max_samples"] == MAX_SAMPLES
    with open(os.path.join(trained.export_dir, "1", "assets", "tfvae.json")) as f:
        asset = json.load(f)
    assert asset["max_samples"] == MAX_SAMPLES
    images = signatures["sample"](
        num_samples=tf.constant(MAX_SAMPLES), seed=tf.constant(_SEED)
    )["images"]
    assert images.shape[0] == MAX_SAMPLES
    # Another limit, fixed at export time.
    config = dataclasses.replace(trained, export_max_samples=5)
    _, info, vae = run_dir.load_run(trained.model_dir)
    path = saved_model.export(
        vae, str(tmp_path / "export"), config=config, dataset_info=info
    )
    loaded = tf.saved_model.load(path).signatures
    assert loaded["metadata"]()["max_samples"] == 5
    assert loaded["sample"](num_samples=tf.constant(5), seed=_SEED)["images"].shape[0]
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 5, the"):
        loaded["log_weights"](images=_IMAGES, num_samples=tf.constant(6), seed=_SEED)


# --- The three commands' flags, as a user types them --------------------------------

# Run in a fresh interpreter per command: parses each argv as absl's app.run
# does and calls the command's main; prints what each case reported.
_COMMAND_DRIVER = """
import json, sys, traceback
from absl import app, flags
import tests.conftest  # Registers the tiny_images dataset.
import tests.test_table_datasets  # And tiny_table, ragged_table.
import {module} as command

results = []
for argv in json.loads(sys.argv[1]):
    flags.FLAGS.unparse_flags()
    try:
        command.main(flags.FLAGS(["{module}", *argv]))
        results.append("no error")
    except (app.UsageError, flags.Error) as e:
        results.append(str(e))
    except Exception:
        results.append("a bug: " + traceback.format_exc())
print(json.dumps(results))
"""

# The tiny run's flags, but for the one each case gets wrong.
_TINY = ["--dataset=tiny_images", "--data_dir={tfds}", "--batch_size=16"]
_NEW = [*_TINY, "--model_dir={new}", "--noexport"]
_TABLE = ["--model_dir={new}", "--noexport", "--batch_size=16"]
# The finished table run's flags ({table_run}: `table_config`, epochs=1).
_TABLE_RUN = [
    "--table={table_run}/tiny.csv",
    "--model_dir={table_run}/run",
    "--label_column=kind",
    "--latent_dim=2",
    "--hidden_units=16",
    "--learning_rate=0.01",
    "--batch_size=16",
    "--steps_per_execution=1",
    "--mixed_precision=float32",
    "--noexport",
]
# A TFDS table ({tfds_run}/tfds: tiny_table/one_split, prepared).
_TFDS_TABLE = [*_TABLE, "--data_dir={tfds_run}/tfds"]
# {run}: a finished run; {export}: its export base; {new}: a folder that
# does not exist; {file}: a file; {empty}: an empty folder; {fresh}: an
# export base for the one case that succeeds.
FLAG_CASES = {
    "tfvae.train": [
        (_NEW + ["--seed=-1"], "--seed must be at least 0. Received: --seed=-1"),
        (
            _NEW + ["--seed=4294967296"],
            "--seed must be in [0, 2**32), the range NumPy and Keras seed from. "
            "Received: --seed=4294967296",
        ),
        (_NEW + ["--beta=inf"], "--beta must be a finite number. Received: --beta=inf"),
        (_NEW + ["--beta=nan"], "--beta must be a finite number. Received: --beta=nan"),
        (_NEW + ["--learning_rate=inf"], "--learning_rate must be a finite number"),
        (
            _NEW + ["--likelihood=gaussian", "--gaussian_scale=inf"],
            "--gaussian_scale must be a finite number. Received: --gaussian_scale=inf",
        ),
        (_NEW + ["--free_bits=inf"], "--free_bits must be a finite number"),
        (_NEW + ["--free_bits=nan"], "--free_bits must be a finite number"),
        (
            _NEW + ["--latent_dim=200000000"],
            "most of it comes from --latent_dim: make it smaller. Received: "
            "--latent_dim=200000000",
        ),
        # On the tiny 8x8 images, sizes that fit no machine (1.5 and 12 TB):
        # 20000000 components and 1000000 samples fit here, and would train.
        (
            _NEW
            + ["--prior=mog", "--kl=monte_carlo", "--prior_components=20000000000"],
            "most of it comes from --prior_components: make it smaller.",
        ),
        (
            _NEW + ["--train_samples=1000000000"],
            "most of it comes from --train_samples: make it smaller.",
        ),
        (_NEW + ["--epochs=0"], "--epochs must be at least 1. Received: --epochs=0"),
        (_NEW + ["--epochs=two"], "flag --epochs=two: invalid literal for int()"),
        (
            _NEW + ["--batch_size=97"],
            "--batch_size=97 is larger than the 96 training images of tiny_images",
        ),
        (_NEW + ["--learning_rate=0"], "--learning_rate must be positive. Received"),
        (_NEW + ["--steps_per_execution=0"], "--steps_per_execution must be at least"),
        (_NEW + ["--iwae_every_epochs=-1"], "--iwae_every_epochs must be at least 0"),
        (_NEW + ["--iwae_samples=0"], "--iwae_samples must be at least 1"),
        (
            _NEW + ["--export_max_samples=0"],
            "--export_max_samples must be at least 1. Received: --export_max_samples=0",
        ),
        (
            _NEW + ["--export_max_samples=2147483648"],
            "--export_max_samples must fit in an int32. Received: "
            "--export_max_samples=2147483648",
        ),
        (_NEW + ["--model_dir="], "--model_dir is required (the run directory)"),
        (_NEW + ["--model_dir={file}"], "--model_dir={file} is a file, not a folder"),
        (
            _NEW + ["--export", "--export_dir={file}"],
            "--export_dir={file} is a file, not a folder",
        ),
        (_NEW + ["--dataset=no_such_set"], "Unknown dataset: --dataset=no_such_set"),
        # Output folders that cannot be written: refused before any data work.
        (
            [*_TINY, "--model_dir=/proc/tfvae-run", "--noexport"],
            "--model_dir=/proc/tfvae-run cannot be created: no file can be created "
            "in /proc",
        ),
        (
            _NEW + ["--export", "--export_dir=/proc/tfvae-export"],
            "--export_dir=/proc/tfvae-export cannot be created",
        ),
        (
            _NEW + ["--data_dir=/proc/tfvae-tfds"],
            "--data_dir=/proc/tfvae-tfds cannot be created",
        ),
        (_NEW + ["--data_dir={file}"], "--data_dir={file} is a file, not a folder"),
        (
            _NEW + ["--data_dir={new}/tfds"],
            "--data_dir={new}/tfds is inside --model_dir={new}, which holds only",
        ),
        (
            _NEW + ["--model_dir={file}/run"],
            "--model_dir={file}/run cannot be created: {file} is a file",
        ),
        (
            _NEW + ["--strategy=multi_worker"],
            "--strategy=multi_worker reads the cluster from the TF_CONFIG "
            "environment variable, which is not set",
        ),
        (
            _NEW + ["--network=conv", "--conv_filters=4,4,4,4"],
            "height and width must be divisible by 16",
        ),
        (_NEW + ["--seed=4294967296"], "--seed must be in [0, 2**32)"),
        (_NEW + ["--no_such_flag"], "Unknown command line flag 'no_such_flag'"),
        (_NEW + ["extra"], "Unexpected arguments: ['extra']"),
        (
            [*_TINY, "--model_dir={run}", "--seed=1"],
            "--seed: run has 0, requested 1",
        ),
        # Bad tables ({tables}: `_bad_tables`), refused before any work,
        # naming the file or the column and the fix.
        (
            [*_TABLE, "--table={tables}/nothing.csv"],
            "--table={tables}/nothing.csv does not exist. Pass a CSV, Parquet",
        ),
        ([*_TABLE, "--table={tables}/rows.xlsx"], "is not a table tfvae reads"),
        ([*_TABLE, "--table={tables}/notes.csv"], ("Column 'notes'", "free text")),
        ([*_TABLE, "--table={tables}/day.csv"], "Column 'day' holds dates"),
        (
            [*_TABLE, "--table={tables}/base.csv", "--max_categories=2"],
            ("Column 'kind'", "max_categories=2"),
        ),
        ([*_TABLE, "--table={tables}/const.csv"], ("Column 'const'", "constant")),
        (
            [*_TABLE, "--table={tables}/empty.csv"],
            "Column 'empty' is entirely missing",
        ),
        (
            [*_TABLE, "--table={tables}/base.csv", "--label_column=nope"],
            "--label_column names 'nope', which is not a column of",
        ),
        (
            [
                *_TABLE,
                "--table={tables}/base.csv",
                "--label_column=kind",
                "--memory_budget=0",
            ],
            "--label_column needs the table in memory",
        ),
        (
            [*_TABLE, "--table={tables}/base.csv", "--drop_columns=nope"],
            "--drop_columns names 'nope', which is not a column of",
        ),
        (
            [
                *_TABLE,
                "--table={tables}/base.csv",
                "--label_column=kind",
                "--anomaly_label=z",
            ],
            "--anomaly_label=z is not a value of --label_column=kind. Its values: "
            "a, b, c",
        ),
        (
            [*_TABLE, "--table={tables}/base.csv", "--anomaly_label=a"],
            "--anomaly_label=a needs --label_column=NAME",
        ),
        (
            [*_TABLE, "--table={tables}/base.csv", "--column_types=nope:real"],
            "column_types names 'nope', which is not a column",
        ),
        (
            [*_TABLE, "--table={tables}/base.csv", "--column_types=temp:text"],
            "--column_types must list name:type pairs, each type one of",
        ),
        (
            [*_TABLE, "--table={tables}/base.csv", "--dataset=fashion_mnist"],
            "--table={tables}/base.csv is the dataset: remove --dataset=fashion_mnist",
        ),
        (
            [*_TABLE, "--table={tables}/base.csv", "--likelihood=gaussian"],
            "--likelihood applies to image VAEs",
        ),
        (["--model_dir={new}", "--column_types=a:real"], "only applies to --table"),
        (
            [*_TABLE_RUN, "--epochs=3"],
            "--table={table_run}/tiny.csv is not the table this run began with",
        ),
        # The run's flags are checked before its (changed) table is read.
        (
            [*_TABLE_RUN, "--epochs=3", "--drop_columns=weather"],
            "--drop_columns: run has None, requested 'weather'",
        ),
        (
            [
                *_TABLE,
                "--table={tables}/base.csv",
                "--column_types=temp:real,temp:count",
            ],
            "--column_types types 'temp' twice",
        ),
        (
            [*_TABLE, "--table={tables}", "--test_fraction=0.3"],
            "--test_fraction=0.3 does not apply to --table={tables}",
        ),
        # TFDS tables (tests/test_table_datasets.py's builders).
        (
            [*_TFDS_TABLE, "--dataset=ragged_table"],
            ("the feature 'events'", "variable"),
        ),
        (
            [*_TFDS_TABLE, "--dataset=tiny_table/one_split", "--memory_budget=1KB"],
            "more than --memory_budget=1KB",
        ),
        (
            [
                *_TFDS_TABLE,
                "--dataset=tiny_table/two_splits",
                "--manual_dir={empty}",
            ],
            "TFDS registers no files for it",
        ),
        (
            [
                "--dataset=tiny_table/one_split",
                "--data_dir={tfds_run}/tfds",
                "--model_dir={tfds_run}/run",
                "--label_column=kind",
                "--latent_dim=2",
                "--hidden_units=16",
                "--learning_rate=0.01",
                "--batch_size=16",
                "--epochs=2",
                "--steps_per_execution=1",
                "--mixed_precision=float32",
                "--noexport",
            ],
            "this run began with tiny_table/one_split/0.9.0 (split.json)",
        ),
    ],
    "tfvae.evaluate": [
        ([], "Pass exactly one of --model_dir (a training run) and --export_dir"),
        (
            ["--model_dir={run}", "--export_dir={export}"],
            "Pass exactly one of --model_dir",
        ),
        (["--export_dir={export}"], "--output_dir is required with --export_dir"),
        (["--model_dir={new}"], "is not a tfvae run directory"),
        (
            ["--model_dir={run}", "--num_importance_samples=0"],
            "--num_importance_samples must be at least 1",
        ),
        (["--model_dir={run}", "--samples_per_chunk=0"], "--samples_per_chunk must"),
        (["--model_dir={run}", "--batch_size=0"], "--batch_size must be at least 1"),
        (["--model_dir={run}", "--seed=-1"], "--seed must be at least 0"),
        (
            ["--model_dir={run}", "--seed=18446744073709551616"],
            "--seed must be in [0, 2**32)",
        ),
        (
            ["--model_dir={run}", "--data_dir=/proc/tfvae-tfds"],
            "--data_dir=/proc/tfvae-tfds cannot be created",
        ),
        (["--model_dir={run}", "--split="], "--split must name a split"),
        # TFDS's "Instruction [] corresponds to no data!", and -3 images.
        (["--model_dir={run}", "--split=test[:0]"], "--split=test[:0] holds no"),
        (["--model_dir={run}", "--split=test[5:2]"], "--split=test[5:2] holds no"),
        (
            ["--model_dir={run}", "--split=validation"],
            "--split=validation is not a split of tiny_images: use one of",
        ),
        (
            ["--model_dir={run}", "--output_dir={file}"],
            "--output_dir={file} is a file, not a folder",
        ),
        (
            ["--model_dir={run}", "--output_dir=/proc/tfvae-eval"],
            "--output_dir=/proc/tfvae-eval cannot be created",
        ),
        (
            ["--export_dir={empty}", "--output_dir={new}"],
            "--export_dir={empty} holds neither a SavedModel",
        ),
        (
            ["--export_dir={export}", "--output_dir={new}", "--samples_per_chunk=2000"],
            "serves at most 1000 samples per call",
        ),
        (["--model_dir={run}", "extra"], "Unexpected arguments: ['extra']"),
        (
            ["--model_dir={table_run}/run", "--jit_compile"],
            "--jit_compile does not apply to a table run",
        ),
    ],
    "tfvae.export": [
        ([], "--model_dir is required"),
        (["--model_dir={new}"], "is not a tfvae run directory"),
        (["--model_dir={empty}"], "is not a tfvae run directory"),
        (
            ["--model_dir={run}", "--export_dir={export}", "--export_max_samples=0"],
            "--export_max_samples must be at least 1. Received: --export_max_samples=0",
        ),
        (
            ["--model_dir={run}", "--export_dir={file}"],
            "--export_dir={file} is a file, not a folder",
        ),
        (
            ["--model_dir={run}", "--export_dir=/proc/tfvae-export"],
            "--export_dir=/proc/tfvae-export cannot be created",
        ),
        (["--model_dir={run}", "extra"], "Unexpected arguments: ['extra']"),
        (
            ["--model_dir={run}", "--export_dir={fresh}", "--export_max_samples=5"],
            "no error",
        ),
    ],
}


def _bad_tables(folder):
    """Writes base.csv (`tiny_table`) and, each with one bad column added,
    notes.csv (free text), day.csv (dates), const.csv (constant) and
    empty.csv (all missing); and rows.xlsx, of a suffix tfvae does not read."""
    base = pd.read_csv(tiny_table(folder / "base.csv"))
    rows = len(base)
    bad = {
        "notes": [f"visit number {i} went fine" for i in range(rows)],
        "day": pd.date_range("2024-01-01", periods=rows).astype(str),
        "const": np.full(rows, 7.0),
        "empty": np.full(rows, np.nan),
    }
    for name, cells in bad.items():
        base.assign(**{name: cells}).to_csv(folder / f"{name}.csv", index=False)
    (folder / "rows.xlsx").write_bytes(b"PK")


@pytest.fixture(scope="module", autouse=True)
def flag_processes(trained, tmp_path_factory):
    """Starts each command's FLAG_CASES in a subprocess, to run beside the rest.

    Yields ({command: process}, the paths the cases use, a snapshot of them
    before, the folder of the processes' stderr).
    """
    root = tmp_path_factory.mktemp("flags")
    shutil.copytree(trained.model_dir, root / "run")
    shutil.copytree(trained.export_dir, root / "export")
    (root / "file").write_text("mine")
    (root / "empty").mkdir()
    _bad_tables(root / "tables")
    # A table run, then its table changed: a resume must refuse it.
    training.train_and_evaluate(table_config(root / "table_run", epochs=1))
    tiny_table(root / "table_run" / "tiny.csv", seed=1)
    # A TFDS table run, then its split.json of another TFDS version.
    training.train_and_evaluate(table_dataset_config(root / "tfds_run"))
    split_path = root / "tfds_run" / "run" / run_dir.SPLIT
    split = json.loads(split_path.read_text())
    split_path.write_text(json.dumps({**split, "tfds": "tiny_table/one_split/0.9.0"}))
    paths = {
        name: str(root / name)
        for name in (
            *("run", "export", "new", "file", "empty", "fresh"),
            *("tables", "table_run", "tfds_run"),
        )
    }
    paths["tfds"] = trained.data_dir
    before = _snapshot(root)
    logs = tmp_path_factory.mktemp("flag_logs")
    processes = {}
    for module, cases in FLAG_CASES.items():
        argvs = [[arg.format(**paths) for arg in argv] for argv, _ in cases]
        with open(logs / module, "w") as stderr:
            processes[module] = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _COMMAND_DRIVER.format(module=module),
                    json.dumps(argvs),
                ],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            )
    yield processes, paths, before, logs
    for process in processes.values():
        if process.poll() is None:  # This module's tests failed before waiting.
            process.kill()
            process.communicate()


@pytest.fixture(scope="module")
def flag_results(flag_processes):
    """({command: [what each of its FLAG_CASES reported]}, paths, nothing changed)."""
    processes, paths, before, logs = flag_processes
    results = {}
    for module, process in processes.items():
        stdout, _ = process.communicate(timeout=300)
        assert process.returncode == 0, (logs / module).read_text()[-3000:]
        results[module] = json.loads(stdout.strip().splitlines()[-1])
    root = os.path.dirname(paths["run"])
    fresh = _snapshot(paths["fresh"])
    after = {k: v for k, v in _snapshot(root).items() if k not in fresh}
    return results, paths, before == after


@pytest.mark.parametrize(
    "module, index",
    [(module, i) for module, cases in FLAG_CASES.items() for i in range(len(cases))],
)
def test_a_bad_flag_is_refused_with_a_message_naming_it(flag_results, module, index):
    results, paths, unchanged = flag_results
    argv, message = FLAG_CASES[module][index]
    # A message, or the parts it must hold.
    for part in message if isinstance(message, tuple) else (message,):
        assert part.format(**paths) in results[module][index]
    assert unchanged, "a refused command changed a run or an export"
    assert not os.path.exists(paths["new"])


def test_the_export_command_fixes_the_limit_it_is_given(flag_results):
    _, paths, _ = flag_results
    loaded = tf.saved_model.load(os.path.join(paths["fresh"], "1"))
    assert loaded.signatures["metadata"]()["max_samples"] == 5
