"""Training: `train_and_evaluate(config)` runs (or resumes) one training run.

Data -> model -> `fit` with resume, checkpoints, TensorBoard and pictures ->
final test evaluation -> `metrics.json` -> SavedModel export (unless
`config.export` is off). `tfvae.train` is its command line; the files it
writes are listed in `tfvae.run_dir`.
"""

import dataclasses
import functools
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
    devices,
    distribute,
    errors,
    images,
    iwae,
    model,
    run_dir,
    saved_model,
    streaming,
)
from tfvae import config as config_lib


def _jit_compile(requested: bool, strategy) -> bool:
    if requested and strategy.num_replicas_in_sync > 1:
        logging.warning(
            "--jit_compile is off: Keras does not XLA-compile steps under a "
            "%d-replica strategy.",
            strategy.num_replicas_in_sync,
        )
        return False
    return requested


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


def _learning_rate(config: config_lib.Config, steps_per_epoch: int):
    """Returns Adam's learning rate: a float, or a per-epoch staircase decay."""
    if config.learning_rate_decay == 1:
        return config.learning_rate
    return keras.optimizers.schedules.ExponentialDecay(
        config.learning_rate,
        decay_steps=steps_per_epoch,
        decay_rate=config.learning_rate_decay,
        staircase=True,
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
        return _train(config, strategy)
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
            # run, and its backup against the epochs history.csv has logged.
            for name in (run_dir.CONFIG, run_dir.HISTORY):
                if os.path.exists(run_dir.path(config.model_dir, name)):
                    shutil.copy(run_dir.path(config.model_dir, name), scratch)
        worker_config = dataclasses.replace(config, model_dir=scratch, export=False)
        return _train(worker_config, strategy)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _train(config: config_lib.Config, strategy: tf.distribute.Strategy) -> dict:
    """Trains in `config.model_dir` (a chief's, or a worker's scratch folder)."""
    # Build the model from metadata first: a configuration that cannot fit
    # the images fails before any download.
    builder = data.load_builder(config.dataset, config.data_dir, config.image_source)
    num_classes = data.num_classes(builder)
    if config.conditional and not num_classes:
        raise errors.UsageError(
            f"--conditional needs class labels, and --dataset={config.dataset} "
            "has no ClassLabel feature named 'label'. Drop --conditional."
        )
    keras.utils.set_random_seed(config.seed)
    execution = devices.resolve(config.mixed_precision, config.jit_compile)
    jit_compile = _jit_compile(execution.jit_compile, strategy)
    with devices.dtype_policy(execution.mixed_precision), strategy.scope():
        vae = model.build_vae(
            data.image_shape(builder),
            seed=config.seed,
            num_classes=num_classes,
            **config.model_settings(),
        )
    vae.summary(print_fn=logging.info, expand_nested=True)
    builder, info = data.prepare(
        config.dataset, config.data_dir, config.manual_dir, config.image_source
    )
    records = test_records = None
    if streaming.streams(info, config.memory_budget, config.conditional):
        records, test_records = (
            streaming.decoded_records(builder, split, config.conditional)
            for split in (data.TRAIN_SPLIT, data.TEST_SPLIT)
        )
        workers = distribute.num_workers(strategy)
        steps_per_epoch = streaming.streamed_steps(
            records.lengths,
            config.batch_size,
            workers,
            strategy.num_replicas_in_sync if workers > 1 else 1,
        )
    else:
        steps_per_epoch = info.num_train // config.batch_size
    if not steps_per_epoch:
        raise errors.UsageError(
            f"--batch_size={config.batch_size} is larger than the {info.num_train} "
            f"training images of {config.dataset_name}; use a smaller batch."
        )
    # Only now, with every check passed, does the run directory change.
    run_dir.claim(config)
    run_dir.save_info(info, config.model_dir)
    with devices.dtype_policy(execution.mixed_precision), strategy.scope():
        vae.compile(
            optimizer=keras.optimizers.Adam(_learning_rate(config, steps_per_epoch)),
            jit_compile=jit_compile,
            steps_per_execution=_steps_per_execution(
                config.steps_per_execution, steps_per_epoch
            ),
        )
    backup_dir = run_dir.path(config.model_dir, run_dir.BACKUP)
    first_epoch = run_dir.restore_backup(config.model_dir)
    if records:
        train_batches = distribute.distribute_streams(
            strategy,
            functools.partial(
                streaming.streamed_batches,
                records,
                config.batch_size,
                config.seed,
                first_epoch,
                config.shuffle_buffer,
            ),
        )
        test_ds = streaming.ordered_batches(test_records, config.batch_size)
    else:
        train = data.load_split(builder, data.TRAIN_SPLIT, config.conditional)
        train_batches = distribute.distribute_batches(
            strategy,
            data.shuffled_batches(train, config.batch_size, config.seed, first_epoch),
        )
        test_ds = data.test_batches(builder, config.batch_size, config.conditional)
    test_batches = distribute.distribute_batches(strategy, test_ds)

    log_dir = run_dir.path(config.model_dir, run_dir.LOGS)
    # The test images the pictures show (with their classes, if conditional).
    if config.conditional:
        test_split = data.split_images_and_labels(builder, data.TEST_SPLIT)
        shown, shown_labels = next(iter(test_split.batch(16)))
    else:
        shown = next(iter(data.split_images(builder, data.TEST_SPLIT).batch(16)))
        shown_labels = None
    throughput = callbacks.Throughput(steps_per_epoch * config.batch_size)
    fit_callbacks = [
        # Before the backup: a kill between the two leaves a row of an epoch
        # the backup has not done, which a resumed run drops, never a
        # backed-up epoch without its row.
        keras.callbacks.CSVLogger(
            run_dir.path(config.model_dir, run_dir.HISTORY), append=True
        ),
        # The last two epochs, checksummed, kept after training (a rerun of a
        # finished run trains nothing).
        callbacks.BackupAndRestore(config.model_dir),
        callbacks.RaiseOnNonFiniteLoss(backup_dir),
        keras.callbacks.ModelCheckpoint(
            run_dir.path(config.model_dir, run_dir.WEIGHTS),
            save_weights_only=True,
        ),
        keras.callbacks.TensorBoard(log_dir),
        callbacks.ImageSummaries(log_dir, shown, config.seed, shown_labels),
        throughput,
    ]
    if config.kl_warmup_epochs:
        fit_callbacks.insert(0, callbacks.KLWarmup(config.kl_warmup_epochs))
    if config.iwae_every_epochs:
        # Last: the epoch is backed up before this slower estimate runs.
        fit_callbacks.append(
            callbacks.IWAECallback(
                test_ds,
                config.iwae_samples,
                config.iwae_every_epochs,
                config.model_dir,
                seed=config.seed,
            )
        )
    vae.fit(
        train_batches,
        validation_data=test_batches,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        shuffle=False,  # The pipeline shuffles, with the run's seed.
        callbacks=fit_callbacks,
    )
    test = vae.evaluate(test_batches, return_dict=True, verbose=0)
    metrics = {
        **_metrics(config.model_dir, test, vae.likelihood.discrete, info.image_shape),
        **throughput.summary(),
        "dataset": info.name,
        "likelihood": config.likelihood,
        "objective": config.objective,
        "prior": config.prior,
        "replicas": strategy.num_replicas_in_sync,
        "input": "streamed" if records else "in_memory",
        "mixed_precision": execution.mixed_precision,
        "jit_compile": jit_compile,
        "steps_per_epoch": steps_per_epoch,
    }
    images.write_png(
        run_dir.path(config.model_dir, run_dir.RECONSTRUCTIONS),
        images.reconstructions(vae, shown, shown_labels),
    )
    images.write_png(
        run_dir.path(config.model_dir, run_dir.SAMPLES),
        images.grid(images.prior_samples(vae, 64, config.seed), 8),
    )
    if config.export:
        metrics["export_path"] = saved_model.export(
            vae, config, info, config.export_base
        )
    run_dir.write_metrics(config.model_dir, metrics)
    logging.info("Results: %s", json.dumps(metrics, sort_keys=True))
    return metrics


def _metrics(model_dir: str, test: dict, discrete: bool, image_shape) -> dict:
    """Returns the epochs trained and the train and test figures, in nats.

    The train figures are the last epoch's of history.csv, which holds every
    epoch's, also for a resumed run that had nothing left to train.
    """
    history = run_dir.read_history_rows(model_dir)
    last = history[max(history)]
    names = ("loss", "neg_elbo", "reconstruction", "kl")
    metrics = {"epochs": len(history)}
    for split, values in (("train", last), ("test", test)):
        metrics.update(
            iwae.split_metrics(
                {name: float(values[name]) for name in names},
                split,
                image_shape,
                discrete,
            )
        )
    return metrics
