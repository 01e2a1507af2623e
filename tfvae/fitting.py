"""The fit every training run shares, of images or of a table: `fit_run`.

A run's data path (`tfvae.image_training`, `tfvae.table_training`) checks
its flags and its data and builds the model, changing nothing on disk, and
hands over a `PreparedRun`. Only then does `fit_run` claim the run directory
(`resume.claim`), record what the model is trained on, settle the number
format and compiler (a timed trial for a long run: `tfvae.execution_trial`),
compile, and `fit`
with one list of callbacks: the CSV history, the checksummed backup a rerun
resumes from, the NaN guard, the weights checkpoint, TensorBoard, the KL
warm-up, the IWAE pass and the throughput, plus the path's own (the images'
TensorBoard pictures). Then the final test figures, metrics.json, the path's
pictures and the SavedModel export.

Example:

    prepared = table_training.prepare(config, strategy)
    metrics = fit_run(config, strategy, prepared)
"""

import dataclasses
import json
import math
from collections.abc import Callable

import keras
import tensorflow as tf
from absl import logging

from tfvae import (
    callbacks,
    devices,
    distribute,
    errors,
    execution_trial,
    fields,
    history,
    iwae,
    memory,
    model,
    resume,
    run_dir,
    saved_model,
)
from tfvae import config as config_lib


@dataclasses.dataclass(frozen=True)
class PreparedRun:
    """What a data path hands `fit_run`: a checked model and its data.

    Args:
        vae: the model, built under the run's strategy and dtype policy.
        info: what it is trained on (`data.DatasetInfo`, `run_dir.TableInfo`).
        network: the network `devices` rules by (`devices.TABLE` for a table).
        execution: the rule's number format and compiler for the run
            (`devices.resolve`), which `vae` is built in; `fit_run` may time
            the others the flags leave open (`tfvae.execution_trial`).
        steps_per_epoch: full global batches per epoch.
        train_batches: (strategy, first epoch) -> the distributed endless
            training stream, starting at that 0-based epoch.
        test_batches: the test split's batches, in order, for every pass.
        streamed: whether training streams its input past --memory_budget.
        record: writes what the model is trained on into the run directory
            (called once it is claimed).
        extra_callbacks: () -> the path's own callbacks (made after the claim:
            they may write into the run directory).
        pictures: draws the path's pictures of the trained VAE.
        likelihood: the likelihood's name in metrics.json.
        export_kwargs: what `saved_model.export` takes besides the VAE.
    """

    vae: model.VAE
    info: object
    network: str
    execution: devices.Execution
    steps_per_epoch: int
    train_batches: Callable[[tf.distribute.Strategy, int], tf.data.Dataset]
    test_batches: tf.data.Dataset
    streamed: bool
    record: Callable[[str], None]
    extra_callbacks: Callable[[], list]
    pictures: Callable[[model.VAE], None]
    likelihood: str
    export_kwargs: dict


def jit_compile(requested: bool, strategy) -> bool:
    """Returns whether to ask Keras for XLA: not under several replicas; logs
    why not. (Keras itself leaves XLA off for a model with layers that lack
    it, a table's lookups: `vae.jit_compile` after `compile` is the answer.)"""
    if requested and strategy.num_replicas_in_sync > 1:
        logging.warning(
            "--jit_compile is off: Keras does not XLA-compile steps under a "
            "%d-replica strategy.",
            strategy.num_replicas_in_sync,
        )
        return False
    return requested


def steps_per_execution(requested: int, steps_per_epoch: int) -> int:
    """Returns the divisor of `steps_per_epoch` nearest `requested` by ratio.

    Keras runs whole executions of `steps_per_execution` steps; on the endless
    training stream (`data.shuffled_batches`) one that crossed the end of an
    epoch would train on the next epoch's batches. Nearest by ratio, not the
    largest below: an epoch of 159 steps (3 x 53) runs 53 steps per call
    for a request of 16, not 3, since each call costs a few milliseconds of
    its own, a step of a small model not many more. (There are no ties: two
    divisors whose ratios to `requested` are equal make it a divisor.)

    Example:
        >>> steps_per_execution(16, 234), steps_per_execution(16, 159)
        (18, 53)
    """
    divisors = {
        d
        for i in range(1, math.isqrt(steps_per_epoch) + 1)
        if steps_per_epoch % i == 0
        for d in (i, steps_per_epoch // i)
    }
    steps = min(divisors, key=lambda d: abs(math.log(d / requested)))
    if steps != requested:
        logging.info(
            "Running %d steps per compiled call, the divisor of the %d steps "
            "per epoch nearest --steps_per_execution=%d, so that no call "
            "crosses the end of an epoch.",
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


def fit_run(
    config: config_lib.Config, strategy: tf.distribute.Strategy, run: PreparedRun
) -> dict:
    """Claims the run directory, trains, evaluates, exports; returns the metrics.

    Args:
        config: the run's settings.
        strategy: the `tf.distribute` strategy `run.vae` was built under.
        run: the checked model and data of the run's path.

    Returns:
        metrics.json's dict.
    """
    steps_per_epoch = run.steps_per_epoch
    # Read before anything is written: a damaged record stops the run here.
    recorded = run_dir.load_execution(config.model_dir)
    # Only now, with every check passed, does the run directory change.
    resume.claim(config)
    run.record(config.model_dir)
    calls = steps_per_execution(config.steps_per_execution, steps_per_epoch)

    def built(policy: str) -> model.VAE:
        # Seeded as the data path seeded `run.vae`: the same initial weights.
        keras.utils.set_random_seed(config.seed)
        with devices.dtype_policy(policy), strategy.scope():
            return run_dir.build_model(config, run.info)

    def compiled(vae: model.VAE, execution: devices.Execution) -> model.VAE:
        with devices.dtype_policy(execution.mixed_precision), strategy.scope():
            vae.compile(
                optimizer=keras.optimizers.Adam(
                    _learning_rate(config, steps_per_epoch)
                ),
                jit_compile=jit_compile(execution.jit_compile, strategy),
                steps_per_execution=calls,
            )
        return vae

    choice = execution_trial.choose(
        config,
        run.execution,
        recorded=recorded,
        network=run.network,
        replicas=strategy.num_replicas_in_sync,
        run_steps=config.epochs * steps_per_epoch,
        steps_per_execution=calls,
        measure=lambda execution: execution_trial.seconds_per_step(
            compiled(built(execution.mixed_precision), execution),
            run.train_batches(strategy, 0),
            calls,
        ),
    )
    run_dir.save_execution(choice.record(), config.model_dir)
    execution = choice.execution
    vae = compiled(
        run.vae
        if execution.mixed_precision == run.execution.mixed_precision
        else built(execution.mixed_precision),
        execution,
    )
    first_epoch = resume.restore_backup(config.model_dir)
    train_batches = run.train_batches(strategy, first_epoch)
    test_batches = distribute.distribute_batches(strategy, run.test_batches)
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
        callbacks.RaiseOnNonFiniteLoss(run_dir.path(config.model_dir, run_dir.BACKUP)),
        keras.callbacks.ModelCheckpoint(
            run_dir.path(config.model_dir, run_dir.WEIGHTS),
            save_weights_only=True,
        ),
        keras.callbacks.TensorBoard(run_dir.path(config.model_dir, run_dir.LOGS)),
        *run.extra_callbacks(),
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
                run.test_batches,
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
        **_metrics(config.model_dir, test, vae),
        **throughput.summary(),
        "dataset": run.info.name,
        "likelihood": run.likelihood,
        "objective": config.objective,
        "prior": config.prior,
        "replicas": strategy.num_replicas_in_sync,
        "input": "streamed" if run.streamed else "in_memory",
        "mixed_precision": execution.mixed_precision,
        "jit_compile": vae.jit_compile,  # As Keras resolved it.
        "execution": choice.record(),
        "steps_per_epoch": steps_per_epoch,
    }
    run.pictures(vae)
    # Written before the export too: an export that fails (a full disk) or is
    # killed leaves the run's figures, and a rerun trains nothing to export.
    run_dir.write_metrics(config.model_dir, metrics)
    if config.export:
        metrics["export_path"] = saved_model.export(
            vae, config.export_base, config=config, **run.export_kwargs
        )
        run_dir.write_metrics(config.model_dir, metrics)
    logging.info("Results: %s", json.dumps(metrics, sort_keys=True))
    return metrics


def _metrics(model_dir: str, test: dict, vae: model.VAE) -> dict:
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
                vae.image_shape,
                vae.likelihood.discrete,
            )
        )
    return metrics


def check_memory(
    config: config_lib.Config,
    num_classes: int | None,
    *,
    image_shape: tuple[int, int, int] | None = None,
    schema: dict | None = None,
) -> None:
    """Refuses, before anything is built, a model and training step, or an
    IWAE pass, that cannot fit in this machine's memory (figure and flag).

    Args:
        config: the run's settings.
        num_classes: the dataset's classes (used if conditional).
        image_shape: an image run's `(H, W, C)`.
        schema: a table run's schema, instead.
    """
    settings = config.model_settings(tabular=schema is not None)
    shape = {"schema": schema} if schema is not None else {}
    problem = memory.memory_problem(
        image_shape,
        config.batch_size,
        name=fields.flag_name,
        num_classes=num_classes,
        **shape,
        **settings,
    )
    if problem:
        raise errors.UsageError(problem)
    if not config.iwae_every_epochs:
        return
    chunk = min(config.iwae_samples, iwae.SAMPLES_PER_CHUNK)
    needed = memory.estimate_bytes(
        image_shape,
        config.batch_size,
        num_classes=num_classes,
        training=False,
        **shape,
        **{**settings, "train_samples": chunk},
    )
    available = memory.physical_memory()
    if needed > available:
        raise errors.UsageError(
            f"--iwae_every_epochs={config.iwae_every_epochs} scores each test "
            f"batch of --batch_size={config.batch_size} with {chunk} samples at "
            f"once (--iwae_samples={config.iwae_samples}, in chunks of "
            f"{iwae.SAMPLES_PER_CHUNK}): about {needed / 2**30:,.1f} GiB of "
            f"memory, more than the {available / 2**30:,.1f} GiB available. Use a "
            "smaller --batch_size or --iwae_samples, or --iwae_every_epochs=0."
        )
