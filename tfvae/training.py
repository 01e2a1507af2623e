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
    builder,
    callbacks,
    data,
    devices,
    distribute,
    errors,
    fields,
    folders,
    history,
    images,
    iwae,
    resume,
    run_dir,
    saved_model,
    splits,
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
            # run, and its backup against the epochs history.csv has logged.
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
    # Build the model from metadata first: a configuration that cannot fit
    # the images fails before any download.
    tfds_builder = data.load_builder(
        config.dataset, config.data_dir, config.image_source
    )
    num_classes = data.num_classes(tfds_builder)
    if config.conditional and not num_classes:
        raise errors.UsageError(
            f"--conditional needs class labels, and --dataset={config.dataset} "
            "has no ClassLabel feature named 'label'. Drop --conditional."
        )
    image_shape = data.image_shape(tfds_builder)
    _check_memory(config, image_shape, num_classes)
    keras.utils.set_random_seed(config.seed)
    execution = devices.resolve(
        config.mixed_precision, config.jit_compile, config.network
    )
    jit_compile = _jit_compile(execution.jit_compile, strategy)
    with devices.dtype_policy(execution.mixed_precision), strategy.scope():
        try:
            vae = builder.build_vae(
                image_shape,
                seed=config.seed,
                num_classes=num_classes,
                **config.model_settings(),
            )
        except ValueError as e:
            # The settings passed Config's checks, but do not fit this
            # dataset's images (conv layers that do not divide the size).
            raise errors.UsageError(str(e)) from None
    vae.summary(print_fn=logging.info, expand_nested=True)
    tfds_builder, info = data.prepare(
        config.dataset, config.data_dir, config.manual_dir, config.image_source
    )
    records = test_records = None
    if streaming.streams(
        info, config.memory_budget, config.conditional, config.shuffle_buffer
    ):
        records, test_records = (
            streaming.decoded_records(tfds_builder, split, config.conditional)
            for split in (splits.TRAIN_SPLIT, splits.TEST_SPLIT)
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
        # Read before the run directory changes: damaged TFDS files are
        # refused (`data.reading`) before config.json is written.
        train = data.load_split(tfds_builder, splits.TRAIN_SPLIT, config.conditional)
        test_ds = data.test_batches(tfds_builder, config.batch_size, config.conditional)
    if not steps_per_epoch:
        raise errors.UsageError(
            f"--batch_size={config.batch_size} is larger than the {info.num_train} "
            f"training images of {config.dataset_name}; use a smaller batch."
        )
    # Only now, with every check passed, does the run directory change.
    resume.claim(config)
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
    first_epoch = resume.restore_backup(config.model_dir)
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
        train_batches = distribute.distribute_batches(
            strategy,
            data.shuffled_batches(train, config.batch_size, config.seed, first_epoch),
        )
    test_batches = distribute.distribute_batches(strategy, test_ds)

    log_dir = run_dir.path(config.model_dir, run_dir.LOGS)
    # The test images the pictures show (with their classes, if conditional).
    if config.conditional:
        test_split = data.split_images_and_labels(tfds_builder, splits.TEST_SPLIT)
        shown, shown_labels = next(iter(test_split.batch(16)))
    else:
        shown = next(iter(data.split_images(tfds_builder, splits.TEST_SPLIT).batch(16)))
        shown_labels = None
    throughput = callbacks.Throughput(steps_per_epoch * config.batch_size)
    backup = callbacks.BackupAndRestore(config.model_dir)
    fit_callbacks = [
        # Before the backup: a kill between the two leaves a row of an epoch
        # the backup has not done, which a resumed run drops, never a
        # backed-up epoch without its row.
        keras.callbacks.CSVLogger(
            run_dir.path(config.model_dir, run_dir.HISTORY), append=True
        ),
        # The last two epochs, checksummed, kept after training (a rerun of a
        # finished run trains nothing).
        backup,
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
        # Before the backup, as the CSV row is: a kill during this slower
        # estimate leaves an epoch the backup has not done, trained again
        # with its row, never a backed-up epoch without its IWAE row.
        fit_callbacks.insert(
            fit_callbacks.index(backup),
            callbacks.IWAECallback(
                test_ds,
                config.iwae_samples,
                config.iwae_every_epochs,
                config.model_dir,
                samples_per_chunk=iwae.SAMPLES_PER_CHUNK,
                seed=config.seed,
            ),
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
    # Written before the export too: an export that fails (a full disk) or is
    # killed leaves the run's figures, and a rerun trains nothing to export.
    run_dir.write_metrics(config.model_dir, metrics)
    if config.export:
        metrics["export_path"] = saved_model.export(
            vae, config.export_base, config=config, dataset_info=info
        )
        run_dir.write_metrics(config.model_dir, metrics)
    logging.info("Results: %s", json.dumps(metrics, sort_keys=True))
    return metrics


def _check_memory(config: config_lib.Config, image_shape, num_classes) -> None:
    """Refuses, before anything is built, a model and training step, or an
    IWAE pass, that cannot fit in this machine's memory (figure and flag)."""
    settings = config.model_settings()
    problem = builder.memory_problem(
        image_shape,
        config.batch_size,
        name=fields.flag_name,
        num_classes=num_classes,
        **settings,
    )
    if problem and config.image_folder:
        size = ",".join(map(str, config.image_size))
        problem += f" (--image_folder's images are read at --image_size={size})"
    if problem:
        raise errors.UsageError(problem)
    if not config.iwae_every_epochs:
        return
    chunk = min(config.iwae_samples, iwae.SAMPLES_PER_CHUNK)
    needed = builder.estimate_bytes(
        image_shape,
        config.batch_size,
        num_classes=num_classes,
        training=False,
        **{**settings, "train_samples": chunk},
    )
    available = builder.physical_memory()
    if needed > available:
        raise errors.UsageError(
            f"--iwae_every_epochs={config.iwae_every_epochs} scores each test "
            f"batch of --batch_size={config.batch_size} with {chunk} samples at "
            f"once (--iwae_samples={config.iwae_samples}, in chunks of "
            f"{iwae.SAMPLES_PER_CHUNK}): about {needed / 2**30:,.1f} GiB of "
            f"memory, more than the {available / 2**30:,.1f} GiB available. Use a "
            "smaller --batch_size or --iwae_samples, or --iwae_every_epochs=0."
        )


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


def _metrics(model_dir: str, test: dict, discrete: bool, image_shape) -> dict:
    """Returns the epochs trained and the train and test figures, in nats.

    The train figures are the last epoch's of history.csv, which holds every
    epoch's, also for a resumed run that had nothing left to train.
    """
    rows = history.read_history_rows(model_dir)
    last = rows[max(rows)]
    names = ("loss", "neg_elbo", "reconstruction", "kl")
    metrics = {"epochs": len(rows)}
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
