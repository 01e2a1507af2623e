"""Training: `train_and_evaluate(config)` runs (or resumes) one training run.

Data -> model -> `fit` with resume, checkpoints, TensorBoard and pictures ->
final test evaluation -> `metrics.json` -> SavedModel export (unless
`config.export` is off). `tfvae.train` is its command line.
"""

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile

import keras
import tensorflow as tf
from absl import logging

from tfvae import (
    callbacks,
    data,
    distribute,
    evaluation,
    images,
    model,
    saved_model,
)
from tfvae import config as config_lib

BACKUP_DIRNAME = "backup"


def _claim_model_dir(config: config_lib.Config) -> None:
    """Refuses a model_dir that holds something else; saves config.json."""
    if os.path.exists(os.path.join(config.model_dir, config_lib.CONFIG_FILENAME)):
        config_lib.check_compatible(config_lib.load(config.model_dir), config)
    elif os.path.isdir(config.model_dir) and os.listdir(config.model_dir):
        raise ValueError(
            f"--model_dir={config.model_dir} is not empty and holds no "
            f"{config_lib.CONFIG_FILENAME}, so it is not a tfvae run. Use a new "
            "or empty folder."
        )
    config_lib.save(config, config.model_dir)


@contextlib.contextmanager
def _dtype_policy(name: str):
    """Builds Keras layers under dtype policy `name`, then restores the global one.

    Layers keep the policy they were built with, so training runs mixed while
    anything built later (the float32 export) is not affected.
    """
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def _jit_compile(config: config_lib.Config, strategy) -> bool:
    if config.jit_compile and strategy.num_replicas_in_sync > 1:
        logging.warning(
            "--jit_compile is off: Keras does not XLA-compile steps under a "
            "%d-replica strategy.",
            strategy.num_replicas_in_sync,
        )
        return False
    return config.jit_compile


def _steps_per_execution(requested: int, steps_per_epoch: int) -> int:
    """Returns the largest divisor of `steps_per_epoch` not above `requested`.

    Keras runs whole executions of `steps_per_execution` steps; on the endless
    training stream (`data.shuffled_batches`) one that crossed the end of an
    epoch would train on the next epoch's batches.
    """
    steps = max(
        d
        for d in range(1, min(requested, steps_per_epoch) + 1)
        if steps_per_epoch % d == 0
    )
    if steps != requested:
        logging.info(
            "Running %d steps per compiled call, the largest divisor of the %d "
            "steps per epoch not above --steps_per_execution=%d, so that no "
            "call crosses the end of an epoch.",
            steps,
            steps_per_epoch,
            requested,
        )
    return steps


def _resumed_epoch(backup_dir: str) -> int:
    """Returns the 0-based epoch `BackupAndRestore` will resume at (0 if none).

    Read before `fit`, so a resumed run's data continue where they stopped
    and it trains on the batches an uninterrupted run would have.
    """
    # The file Keras's BackupAndRestore writes with each backup.
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return int(json.load(f)["epoch"])


def train_and_evaluate(config: config_lib.Config) -> dict:
    """Trains (or resumes) the run `config` describes; returns metrics.json's dict."""
    strategy = distribute.make_strategy(config.strategy)
    if config.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(
            f"--batch_size={config.batch_size} does not split evenly over "
            f"{strategy.num_replicas_in_sync} replicas; use a multiple of "
            f"{strategy.num_replicas_in_sync}."
        )
    if distribute.is_chief(strategy):
        return _train(config, strategy)
    # Non-chief workers of a multi-worker job write to a temporary folder,
    # removed at the end (TF's multi-worker pattern). Their backup starts as a
    # copy of the chief's, so a restarted job resumes every worker from the
    # same epoch; that needs --model_dir on storage all workers can read.
    scratch = tempfile.mkdtemp(prefix="tfvae-worker-")
    try:
        chief_backup = os.path.join(config.model_dir, BACKUP_DIRNAME)
        if os.path.isdir(chief_backup):
            shutil.copytree(chief_backup, os.path.join(scratch, BACKUP_DIRNAME))
            # With it, this worker's flags are checked against the chief's run.
            shutil.copy(
                os.path.join(config.model_dir, config_lib.CONFIG_FILENAME), scratch
            )
        worker_config = dataclasses.replace(config, model_dir=scratch, export=False)
        return _train(worker_config, strategy)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _train(config: config_lib.Config, strategy: tf.distribute.Strategy) -> dict:
    """Trains in `config.model_dir` (a chief's, or a worker's scratch folder)."""
    # Build the model from metadata first: a configuration that cannot fit
    # the images fails before any download.
    shape = data.image_shape(data.load_builder(config.dataset, config.data_dir))
    keras.utils.set_random_seed(config.seed)
    with _dtype_policy(config.mixed_precision), strategy.scope():
        vae = model.build_vae(config, shape)
    vae.summary(print_fn=logging.info, expand_nested=True)
    _claim_model_dir(config)
    builder, info = data.prepare(config.dataset, config.data_dir, config.manual_dir)
    data.save_info(info, config.model_dir)
    steps_per_epoch = info.num_train // config.batch_size
    with _dtype_policy(config.mixed_precision), strategy.scope():
        vae.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate),
            jit_compile=_jit_compile(config, strategy),
            steps_per_execution=_steps_per_execution(
                config.steps_per_execution, steps_per_epoch
            ),
        )
    backup_dir = os.path.join(config.model_dir, BACKUP_DIRNAME)
    train_ds, test_ds = data.train_and_test(
        builder, config.batch_size, config.seed, _resumed_epoch(backup_dir)
    )
    train_batches = distribute.distribute_batches(strategy, train_ds)
    test_batches = distribute.distribute_batches(strategy, test_ds)

    log_dir = os.path.join(config.model_dir, "logs")
    shown = next(iter(data.split_images(builder, data.TEST_SPLIT).batch(16)))
    throughput = callbacks.Throughput(steps_per_epoch * config.batch_size)
    fit_callbacks = [
        # Kept after training (a rerun of a finished run trains nothing), and
        # doubled so a kill during a save falls back to the one before.
        keras.callbacks.BackupAndRestore(
            backup_dir, delete_checkpoint=False, double_checkpoint=True
        ),
        callbacks.RaiseOnNonFiniteLoss(backup_dir),
        keras.callbacks.ModelCheckpoint(
            os.path.join(config.model_dir, model.WEIGHTS_FILENAME),
            save_weights_only=True,
        ),
        keras.callbacks.TensorBoard(log_dir),
        keras.callbacks.CSVLogger(
            os.path.join(config.model_dir, config_lib.HISTORY_FILENAME), append=True
        ),
        callbacks.ImageSummaries(log_dir, shown, config.seed),
        throughput,
    ]
    if config.iwae_every_epochs:
        # Last: the epoch is backed up before this slower estimate runs.
        fit_callbacks.append(
            evaluation.IWAECallback(
                test_ds,
                config.iwae_samples,
                config.iwae_every_epochs,
                log_dir,
                os.path.join(config.model_dir, config_lib.IWAE_HISTORY_FILENAME),
                seed=config.seed,
            )
        )
    history = vae.fit(
        train_batches,
        validation_data=test_batches,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        shuffle=False,  # The pipeline shuffles, with the run's seed.
        callbacks=fit_callbacks,
    )
    test = vae.evaluate(test_batches, return_dict=True, verbose=0)
    metrics = _metrics(config, vae, info, history.history, test, throughput.summary())
    metrics["replicas"] = strategy.num_replicas_in_sync
    images.write_png(
        os.path.join(config.model_dir, "reconstructions.png"),
        images.reconstructions(vae, shown),
    )
    images.write_png(
        os.path.join(config.model_dir, "samples.png"),
        images.grid(images.prior_samples(vae, 64, config.seed), 8),
    )
    if config.export:
        metrics["export_path"] = saved_model.export(
            vae, config, info, config.export_dir
        )
    with open(os.path.join(config.model_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
    logging.info("Results: %s", json.dumps(metrics, sort_keys=True))
    return metrics


def _metrics(config, vae, info, history, test, timing) -> dict:
    """Returns metrics.json's dict (a no-op rerun keeps the earlier train figures)."""
    path = os.path.join(config.model_dir, "metrics.json")
    metrics = {}
    if not history and os.path.exists(path):
        with open(path) as f:
            metrics = json.load(f)
    for name in ("neg_elbo", "reconstruction", "kl"):
        if history:
            metrics[f"train_{name}"] = float(history[name][-1])
        metrics[f"test_{name}"] = float(test[name])
    if vae.likelihood.discrete:
        for split in ("train", "test"):
            metrics[f"{split}_bits_per_dim"] = model.bits_per_dim(
                metrics[f"{split}_neg_elbo"], info.image_shape
            )
    metrics.update(timing)
    metrics.update(
        epochs=config.epochs, dataset=config.dataset, likelihood=config.likelihood
    )
    return metrics
