"""A table run's data and model: `prepare(config, strategy)` for `fitting.fit_run`.

The table (`--table`, or a TFDS `--dataset` of scalar features) is read whole
into the run's splits by `tfvae.run_table` and batched by
`tables.table_batches`; a table file larger than `--memory_budget` is
streamed in chunks instead (`tfvae.table_streaming`). A run resumed from a
backup trains on what it recorded (split.json, dataset.json, schema.json),
whichever of the two ways it reads the table now; a run with no backup yet
starts over and records them anew. Everything is checked before the run
directory changes.

Example:

    metrics = fitting.fit_run(config, strategy, prepare(config, strategy))
"""

import dataclasses
import os

import keras
import tensorflow as tf
from absl import logging

from tfvae import config as config_lib
from tfvae import (
    devices,
    distribute,
    errors,
    fitting,
    resume,
    run_dir,
    run_table,
    table_flags,
    table_streaming,
    tables,
)


def _recorded(model_dir: str):
    """Returns the (split, TableInfo) a resumed run trained on, or (None, None)
    for a run that starts at epoch 1 (new, or stopped before its first backup:
    it records them anew)."""
    if not os.path.exists(
        run_dir.path(model_dir, run_dir.CONFIG)
    ) or not resume.resumed_epoch(model_dir):
        return None, None
    split = run_dir.load_split(model_dir)
    if split is None:
        raise errors.UsageError(
            f"{run_dir.path(model_dir, run_dir.SPLIT)} is missing, so the run "
            "cannot resume on its rows. Restore it, or train again in a new "
            "--model_dir."
        )
    return split, run_dir.load_info(model_dir, table=True)


@dataclasses.dataclass(frozen=True)
class _Input:
    """A table run's data: in memory, or streamed past --memory_budget."""

    info: run_dir.TableInfo
    split: dict
    steps_per_epoch: int
    # (strategy, first epoch) -> the distributed endless training stream.
    train_batches: object
    test_batches: tf.data.Dataset
    streamed: bool


def _in_memory(config: config_lib.Config, recorded_split, recorded_info) -> _Input:
    """The table read whole: batches gathered by index from its columns."""
    table = run_table.read_run_table(config, recorded_split, recorded_info)
    schema = table.info.schema

    def codes(labels):
        return table.codes(labels) if config.conditional else None

    def train_batches(strategy, first_epoch):
        return distribute.distribute_batches(
            strategy,
            tables.table_batches(
                table.train,
                schema,
                config.batch_size,
                shuffle_seed=config.seed,
                labels=codes(table.train_labels),
                first_epoch=first_epoch,
            ),
        )

    return _Input(
        info=table.info,
        split=table.split,
        steps_per_epoch=table.info.num_train // config.batch_size,
        train_batches=train_batches,
        test_batches=tables.table_batches(
            table.test, schema, config.batch_size, labels=codes(table.test_labels)
        ),
        streamed=False,
    )


def _streamed(config: config_lib.Config, recorded_split, recorded_info) -> _Input:
    """The table read in chunks, each epoch anew (`table_streaming`)."""
    for name in ("label_column", "drop_columns"):
        if getattr(config, name) is not None:
            raise errors.UsageError(
                f"--{name} needs the table in memory, and --table={config.table} "
                f"is larger than --memory_budget={config.memory_budget}: raise "
                f"--memory_budget, or write the table without the column(s) and "
                f"remove --{name}."
            )
    split = run_table.fingerprint(config.table, recorded_split)
    table = table_streaming.streamed_table(
        config.table,
        config.test_fraction,
        config.seed,
        table_flags.parse_column_types(config.column_types),
        config.max_categories,
    )
    if recorded_info is not None:
        sizes = (table.num_train, table.num_test)
        recorded_sizes = (recorded_info.num_train, recorded_info.num_test)
        if sizes != recorded_sizes:
            raise errors.UsageError(
                f"--table={config.table} splits into {sizes[0]} training and "
                f"{sizes[1]} test rows when streamed, and the run trained on "
                f"{recorded_sizes[0]} and {recorded_sizes[1]} (dataset.json). "
                "Resume with the --memory_budget it began with."
            )
        # The schema trained on: typing chunk by chunk (a run begun in memory)
        # may give other means and spreads, or other types.
        table = dataclasses.replace(table, schema=recorded_info.schema)
        split = recorded_split  # With its test rows, if it began in memory.
    split["rows"] = table.num_train + table.num_test
    info = run_dir.TableInfo(
        config.dataset_name, table.schema, table.num_train, table.num_test
    )

    def train_batches(strategy, first_epoch):
        return distribute.distribute_batches(
            strategy,
            table.train_batches(
                config.batch_size, config.seed, config.shuffle_buffer, first_epoch
            ),
        )

    return _Input(
        info=info,
        split=split,
        steps_per_epoch=table.steps_per_epoch(config.batch_size),
        train_batches=train_batches,
        test_batches=table.test_batches(config.batch_size),
        streamed=True,
    )


def prepare(
    config: config_lib.Config, strategy: tf.distribute.Strategy
) -> fitting.PreparedRun:
    """Checks a table run's flags and table and builds its model; writes nothing.

    A table larger than `--memory_budget` is streamed in chunks
    (`table_streaming`), without `--label_column` and `--drop_columns`.
    `training` has checked the flags against a resumed run's config.json.

    Args:
        config: the run's settings (`--table`, or a TFDS `--dataset`).
        strategy: the strategy the model is built under.

    Returns:
        The `fitting.PreparedRun` of the run.

    Raises:
        errors.UsageError: a table or model that does not fit, naming the fix.

    Example:

        metrics = fitting.fit_run(config, strategy, prepare(config, strategy))
    """
    recorded = _recorded(config.model_dir)
    if config.table:
        run_table.check_exists(config.table, recorded[0] is not None)
    # A TFDS table is read whole (`table_datasets` refuses one past the budget).
    fits = not config.table or table_streaming.table_fits(
        config.table, config.memory_budget
    )
    source = (_in_memory if fits else _streamed)(config, *recorded)
    info = source.info
    if not source.steps_per_epoch:
        raise errors.UsageError(
            f"--batch_size={config.batch_size} is larger than the {info.num_train} "
            f"training rows of {info.name}; use a smaller batch."
        )
    fitting.check_memory(config, info.num_classes, schema=info.schema)
    keras.utils.set_random_seed(config.seed)
    # As for images; the rule compiles a table with XLA (`devices.fastest`),
    # and a long run may time the others (`tfvae.execution_trial`).
    execution = devices.resolve(
        config.mixed_precision, config.jit_compile, devices.TABLE
    )
    with devices.dtype_policy(execution.mixed_precision), strategy.scope():
        vae = run_dir.build_model(config, info)
    vae.summary(print_fn=logging.info, expand_nested=True)

    def record(model_dir):
        run_dir.save_info(info, model_dir)
        run_dir.save_split(source.split, model_dir)

    return fitting.PreparedRun(
        vae=vae,
        info=info,
        network=devices.TABLE,
        execution=execution,
        steps_per_epoch=source.steps_per_epoch,
        train_batches=source.train_batches,
        test_batches=source.test_batches,
        streamed=source.streamed,
        record=record,
        extra_callbacks=list,
        # `tfvae.evaluate` draws a table's pictures.
        pictures=lambda vae: None,
        likelihood="table",
        export_kwargs={"dataset_info": info},
    )
