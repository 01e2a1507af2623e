"""An image run's data and model: `prepare(config, strategy)` for `fitting.fit_run`.

TFDS (or an `--image_folder`) gives raw uint8 images, held in memory or
streamed past `--memory_budget` (`tfvae.streaming`). The model is built from
the dataset's metadata first, so a configuration that cannot fit the images
or this machine's memory fails before any download; every check runs before
the run directory changes. The path's own extras: TensorBoard pictures every
epoch, and reconstructions.png and samples.png at the end.

Example:

    metrics = fitting.fit_run(config, strategy, prepare(config, strategy))
"""

import functools

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
    fitting,
    images,
    run_dir,
    splits,
    streaming,
)
from tfvae import config as config_lib
from tfvae.fitting import PreparedRun


def prepare(config: config_lib.Config, strategy: tf.distribute.Strategy) -> PreparedRun:
    """Checks an image run's flags and data and builds its model; writes nothing.

    Args:
        config: the run's settings (`--dataset` or `--image_folder`).
        strategy: the strategy the model is built under.

    Returns:
        The `fitting.PreparedRun` of the run.

    Raises:
        errors.UsageError: a dataset, model or batch that does not fit.
    """
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
    try:
        fitting.check_memory(config, num_classes, image_shape=image_shape)
    except errors.UsageError as error:
        if not config.image_folder:
            raise
        size = ",".join(map(str, config.image_size))
        raise errors.UsageError(
            f"{error} (--image_folder's images are read at --image_size={size})"
        ) from None
    keras.utils.set_random_seed(config.seed)
    execution = devices.resolve(
        config.mixed_precision, config.jit_compile, config.network
    )
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
        test_ds = streaming.ordered_batches(test_records, config.batch_size)

        def train_batches(strategy, first_epoch):
            return distribute.distribute_streams(
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

    else:
        steps_per_epoch = info.num_train // config.batch_size
        # Read before the run directory changes: damaged TFDS files are
        # refused (`data.reading`) before config.json is written.
        train = data.load_split(tfds_builder, splits.TRAIN_SPLIT, config.conditional)
        test_ds = data.test_batches(tfds_builder, config.batch_size, config.conditional)

        def train_batches(strategy, first_epoch):
            return distribute.distribute_batches(
                strategy,
                data.shuffled_batches(
                    train, config.batch_size, config.seed, first_epoch
                ),
            )

    if not steps_per_epoch:
        raise errors.UsageError(
            f"--batch_size={config.batch_size} is larger than the {info.num_train} "
            f"training images of {config.dataset_name}; use a smaller batch."
        )
    # The test images the pictures show (with their classes, if conditional).
    if config.conditional:
        test_split = data.split_images_and_labels(tfds_builder, splits.TEST_SPLIT)
        shown, shown_labels = next(iter(test_split.batch(16)))
    else:
        shown = next(iter(data.split_images(tfds_builder, splits.TEST_SPLIT).batch(16)))
        shown_labels = None

    def pictures(vae):
        images.write_png(
            run_dir.path(config.model_dir, run_dir.RECONSTRUCTIONS),
            images.reconstructions(vae, shown, shown_labels),
        )
        images.write_png(
            run_dir.path(config.model_dir, run_dir.SAMPLES),
            images.grid(images.prior_samples(vae, 64, config.seed), 8),
        )

    return PreparedRun(
        vae=vae,
        info=info,
        network=config.network,
        execution=execution,
        steps_per_epoch=steps_per_epoch,
        train_batches=train_batches,
        test_batches=test_ds,
        streamed=records is not None,
        record=functools.partial(run_dir.save_info, info),
        extra_callbacks=lambda: [
            callbacks.ImageSummaries(
                run_dir.path(config.model_dir, run_dir.LOGS),
                shown,
                config.seed,
                shown_labels,
            )
        ],
        pictures=pictures,
        likelihood=config.likelihood,
        export_kwargs={"dataset_info": info},
    )
