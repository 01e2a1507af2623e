"""Training: `train_and_evaluate(config)` runs (or resumes) one training run.

The run's data path checks its flags and data and builds the model, writing
nothing: `tfvae.image_training` for `--dataset` and `--image_folder`,
`tfvae.table_training` for a table (`--table`, or a TFDS `--dataset` of
scalar features: `Config.table_run`). Then `fitting.fit_run` claims the run
directory and trains (resume, checkpoints, TensorBoard), evaluates the test
split, writes `metrics.json` and exports a SavedModel (unless
`config.export` is off). `tfvae.train` is its command line; the files it
writes are listed in `tfvae.run_dir`.
"""

import dataclasses
import os
import shutil
import tempfile

import tensorflow as tf

from tfvae import config as config_lib
from tfvae import (
    distribute,
    errors,
    fitting,
    folders,
    image_training,
    resume,
    run_dir,
    table_training,
)


def train_and_evaluate(config: config_lib.Config) -> dict:
    """Trains (or resumes) the run `config` describes; returns metrics.json's dict."""
    strategy = distribute.make_strategy(config.strategy)
    if config.batch_size % strategy.num_replicas_in_sync:
        raise errors.UsageError(
            f"--batch_size={config.batch_size} does not split evenly over "
            f"{strategy.num_replicas_in_sync} replicas; use a multiple of "
            f"{strategy.num_replicas_in_sync}."
        )
    if distribute.is_chief(strategy):
        try:
            return _train(config, strategy)
        finally:
            # `claim` locked the run directory for this run.
            resume.release(config.model_dir)
    # Non-chief workers of a multi-worker job write to a temporary folder,
    # removed at the end (TF's multi-worker pattern). Their backup starts as a
    # copy of the chief's, so a restarted job resumes every worker from the
    # same epoch; that needs --model_dir on storage all workers can read.
    scratch = tempfile.mkdtemp(prefix="tfvae-worker-")
    try:
        chief_backup = run_dir.path(config.model_dir, run_dir.BACKUP)
        if os.path.isdir(chief_backup):
            shutil.copytree(chief_backup, run_dir.path(scratch, run_dir.BACKUP))
            # With them, this worker's flags are checked against the chief's
            # run, and its backup against the epochs history.csv has logged
            # (only image runs train on several workers: `table_flags`).
            for name in (run_dir.CONFIG, run_dir.HISTORY):
                if os.path.exists(run_dir.path(config.model_dir, name)):
                    shutil.copy(run_dir.path(config.model_dir, name), scratch)
        worker_config = dataclasses.replace(config, model_dir=scratch, export=False)
        return _train(worker_config, strategy)
    finally:
        resume.release(scratch)
        shutil.rmtree(scratch, ignore_errors=True)


def _train(config: config_lib.Config, strategy: tf.distribute.Strategy) -> dict:
    """Trains in `config.model_dir` (a chief's, or a worker's scratch folder)."""
    _check_output_folders(config)
    # A resumed run's flags are checked against it before its data is read.
    resume.check_resumable(config)
    path = table_training if config.table_run else image_training
    return fitting.fit_run(config, strategy, path.prepare(config, strategy))


def _check_output_folders(config: config_lib.Config) -> None:
    """Refuses a run directory or export base that cannot be written, before
    any data or training work (the data dir is checked where it is written)."""
    folders.check_writable(config.model_dir, f"--model_dir={config.model_dir}")
    if config.data_dir and folders.is_within(config.data_dir, config.model_dir):
        # TFDS would build the dataset there first; `resume.claim` would then
        # refuse the folder, for this and every later run, as not a run.
        raise errors.UsageError(
            f"--data_dir={config.data_dir} is inside --model_dir="
            f"{config.model_dir}, which holds only the run's files. Pass a "
            "--data_dir outside the run directory."
        )
    if config.export:
        folders.check_writable(config.export_base, f"--export_dir={config.export_base}")
