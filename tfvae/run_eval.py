"""Evaluating a training run or its export: `python -m tfvae.evaluate`'s work.

`evaluate_run(EvalConfig(...))` loads the model (a training run through
`run_dir.load_run`, or an export), reads the run's dataset split from TFDS,
and hands both to the computation of `tfvae.evaluation` (the -ELBO, the
IWAE bound and the pictures). What it writes to its output dir
(`<model_dir>/eval` by default):

  metrics.json            per-example means in nats, named by
                          `iwae.split_metrics`: <split>_neg_elbo,
                          <split>_reconstruction, <split>_kl, <split>_nll
                          (-L_k at k = num_importance_samples) and
                          <split>_nll_k<k'> for the sweep; bits per dimension
                          when the likelihood is discrete over pixel values
  *.png                   the pictures of `tfvae.pictures`, with the
                          training's -ELBO curve (elbo_curve.png)
  events.out.tfevents.*   the same numbers and pictures for TensorBoard

A table run (`--table`, or a TFDS `--dataset` of scalar features) is
evaluated on its recorded split by `table_evaluation.evaluate_table` (the
IWAE bound, each column's log-likelihood, imputation, anomaly AUCs, prefixed
by the split) and drawn by `table_pictures.table_pictures`, into the same
files.
"""

import dataclasses
import json
import math
import os
import time

import keras
import tensorflow as tf
from absl import logging

from tfvae import (
    adapters,
    data,
    errors,
    evaluation,
    fields,
    folders,
    history,
    iwae,
    noise,
    run_dir,
    run_table,
    splits,
    table_evaluation,
)

# The module, by its path: the package's `tfvae.table_pictures` is the function.
from tfvae.table_pictures import table_pictures


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how; `python -m tfvae.evaluate`'s flags."""

    model_dir: str | None = fields.setting(
        None, "Run directory written by tfvae.train.", "string"
    )
    export_dir: str | None = fields.setting(
        None,
        "Instead of --model_dir: an exported SavedModel, its version folder "
        "(export/mnist/1) or its model base path (export/mnist: the latest "
        "version, as TF Serving does). Needs --output_dir.",
        "string",
    )
    output_dir: str | None = fields.setting(
        None, "Where results go. Unset: <model_dir>/eval.", "string"
    )
    split: str = fields.setting(
        "test",
        "TFDS split to evaluate; slices work, e.g. test[:1000].",
        "string",
        check=lambda v: None if v else "must name a split, e.g. test",
    )
    num_importance_samples: int = fields.setting(
        evaluation.NUM_SAMPLES,
        "k of the IWAE bound; the sweep 1, 10, 100, 1000, 5000 is reported up to k.",
        "integer",
        minimum=1,
    )
    batch_size: int = fields.setting(
        evaluation.BATCH_SIZE, "Images per batch.", "integer", minimum=1
    )
    samples_per_chunk: int = fields.setting(
        iwae.SAMPLES_PER_CHUNK,
        "Importance samples drawn per compiled call: memory grows with "
        "batch_size * samples_per_chunk. The k samples of a batch are drawn in "
        "chunks of this size, so results depend on it (within Monte Carlo noise).",
        "integer",
        minimum=1,
    )
    data_dir: str | None = fields.setting(
        None, "TFDS data directory. Unset: the run's --data_dir.", "string"
    )
    manual_dir: str | None = fields.setting(
        None,
        "Original dataset files, to build the dataset offline. Unset: the run's "
        "--manual_dir.",
        "string",
    )
    seed: int = fields.setting(
        0,
        "Seed of the binarization and z noise.",
        "integer",
        minimum=0,
        check=noise.seed_problem,
    )
    jit_compile: bool = fields.setting(
        False,
        "Compile the per-chunk computation with XLA. It draws other (equally "
        "valid) random numbers, so results differ within Monte Carlo noise; "
        "see the README for its speed on CPU.",
        "bool",
    )

    def __post_init__(self):
        fields.check_values(self)
        if bool(self.model_dir) == bool(self.export_dir):
            raise errors.UsageError(
                "Pass exactly one of --model_dir (a training run) and --export_dir "
                "(an exported SavedModel version folder). Received: "
                f"--model_dir={self.model_dir} --export_dir={self.export_dir}"
            )
        if self.export_dir and not self.output_dir:
            raise errors.UsageError(
                "--output_dir is required with --export_dir (results are not "
                "written into a SavedModel), e.g. --output_dir=eval/mnist."
            )

    @property
    def results_dir(self) -> str:
        """Where results go: `output_dir`, else `<model_dir>/eval`."""
        return self.output_dir or run_dir.path(self.model_dir, run_dir.EVAL)


def split_name(split: str) -> str:
    """Returns the split without TFDS slicing ("test" for "test[:1000]")."""
    return split.split("[")[0]


def _num_examples(builder, split: str, dataset_name: str) -> int:
    """Returns the images in `split`; refuses an unknown or empty split or slice."""
    splits_known = sorted(builder.info.splits)
    try:
        num_examples = builder.info.splits[split].num_examples
    except (KeyError, ValueError, AssertionError) as e:
        raise errors.UsageError(
            f"--split={split} is not a split of {dataset_name}: use one of "
            f"{splits_known}, or a TFDS slice such as test[:1000]."
        ) from e
    if num_examples < 1:
        # TFDS would fail later: "Instruction [] corresponds to no data!".
        raise errors.UsageError(
            f"--split={split} holds no images of {dataset_name} (a slice whose "
            f"end is not after its start): use one of {splits_known}, or a TFDS "
            "slice holding images, such as test[:1000]."
        )
    return num_examples


def _load(eval_config: EvalConfig):
    """Returns the training `Config`, the model `eval_config` names, its name."""
    if eval_config.model_dir:
        config, _, vae = run_dir.load_run(eval_config.model_dir)
        evaluable = adapters.VAEAdapter(vae, eval_config.jit_compile)
        return config, evaluable, eval_config.model_dir
    evaluable, export_dir = evaluation.load_evaluable(
        eval_config.export_dir,
        eval_config.num_importance_samples,
        eval_config.batch_size,
        eval_config.samples_per_chunk,
        eval_config.jit_compile,
    )
    if evaluable.config is None:
        raise errors.UsageError(
            f"{export_dir} was exported from Python, not from a training run: it "
            "names no dataset to evaluate on. Evaluate it from Python with "
            "tfvae.evaluation.evaluate(path, images)."
        )
    return evaluable.config, evaluable, export_dir


def evaluate_run(eval_config: EvalConfig) -> dict:
    """Evaluates a training run or an export on a split; returns metrics.json's dict.

    The dataset, and the data/manual dirs unless `eval_config` sets them, come
    from the model's saved training configuration. Results go to
    `eval_config.results_dir`; an export's folder stays untouched. See the
    module docstring for what is written.
    """
    model_dir, output_dir = eval_config.model_dir, eval_config.results_dir
    folders.check_writable(
        output_dir,
        f"--output_dir={output_dir}"
        if eval_config.output_dir
        else f"{output_dir}, where the results go,",
    )
    if model_dir and run_dir.load_config(model_dir).table_run:
        return _evaluate_table_run(eval_config)
    config, evaluable, model_name = _load(eval_config)
    # Read now, so that a damaged file stops the evaluation before its long
    # computation. An export has no training history; its curve is not drawn.
    curves = history.read_history(model_dir) if model_dir else None
    iwae_history = history.read_iwae_history(model_dir) if model_dir else None
    builder, info = data.prepare(
        config.dataset,
        eval_config.data_dir or config.data_dir,
        eval_config.manual_dir or config.manual_dir,
        config.image_source,
    )
    split, batch_size = eval_config.split, eval_config.batch_size
    num_samples = eval_config.num_importance_samples
    num_examples = _num_examples(builder, split, config.dataset_name)
    logging.info(
        "Evaluating %s on %s %s (%d images): -ELBO and the IWAE bound with k=%d.",
        model_name,
        config.dataset_name,
        split,
        num_examples,
        num_samples,
    )
    prefix = split_name(split)
    start = time.perf_counter()
    metrics, drawn = evaluation.compute(
        evaluable,
        # TFDS's own dicts, in order.
        builder.as_dataset(split=split, shuffle_files=False),
        num_samples=num_samples,
        batch_size=batch_size,
        samples_per_chunk=eval_config.samples_per_chunk,
        seed=eval_config.seed,
        output_dir=output_dir,
        split=prefix,
        progbar=keras.utils.Progbar(
            math.ceil(num_examples / batch_size),
            unit_name="batch",
            stateful_metrics=["neg_elbo", "nll"],
        ),
        # The curve shows test figures: another split's bound would not match.
        curves=curves if prefix == splits.TEST_SPLIT else None,
        iwae_history=iwae_history,
    )
    metrics.update(
        {
            "split": split,
            "num_examples": num_examples,
            "num_importance_samples": num_samples,
            "samples_per_chunk": eval_config.samples_per_chunk,
            "batch_size": batch_size,
            "seed": eval_config.seed,
            "jit_compile": eval_config.jit_compile,
            "seconds": round(time.perf_counter() - start, 1),
            "dataset": info.name,
            "likelihood": config.likelihood,
            "model": model_name,
        }
    )
    # At the last trained epoch, so TensorBoard shows them beside the curves.
    _write_results(
        output_dir, metrics, prefix, drawn, curves.epochs[-1] if curves else 0
    )
    return metrics


def _write_results(
    output_dir: str, metrics: dict, prefix: str, drawn: dict, step: int
) -> None:
    """Writes metrics.json, and the split's figures and `drawn` to TensorBoard."""
    os.makedirs(output_dir, exist_ok=True)
    run_dir.write_metrics(output_dir, metrics)
    with tf.summary.create_file_writer(output_dir).as_default():
        for name, value in metrics.items():
            if name.startswith(f"{prefix}_"):
                tf.summary.scalar(name, value, step=step)
        for name, picture in drawn.items():
            tf.summary.image(name.removesuffix(".png"), picture[tf.newaxis], step=step)
    logging.info(
        "Wrote %s and %d pictures to %s: %s",
        run_dir.METRICS,
        len(drawn),
        output_dir,
        json.dumps(metrics, sort_keys=True),
    )


def _evaluate_table_run(eval_config: EvalConfig) -> dict:
    """Evaluates a table run on its test (or training) split.

    `table_evaluation.evaluate_table`'s figures, prefixed by the split: the
    IWAE bound, each column's log-likelihood, imputation against the
    training split's means and modes, and with `--anomaly_label` the
    score's ROC and PR AUC on the test split; `table_pictures`' PNGs.
    """
    if eval_config.jit_compile:
        raise errors.UsageError(
            "--jit_compile does not apply to a table run: its evaluation reads "
            "the test split's cells, whose category lookups have no XLA "
            "kernels, so it runs without XLA. Remove --jit_compile."
        )
    config, info, vae = run_dir.load_run(eval_config.model_dir)
    # A TFDS table's dirs, as an image run's: the evaluation's, else the run's.
    config = dataclasses.replace(
        config,
        data_dir=eval_config.data_dir or config.data_dir,
        manual_dir=eval_config.manual_dir or config.manual_dir,
    )
    split = eval_config.split
    if split not in (splits.TEST_SPLIT, splits.TRAIN_SPLIT):
        raise errors.UsageError(
            f"--split={split} is not a split of a table run: use "
            f"--split={splits.TEST_SPLIT} or --split={splits.TRAIN_SPLIT}."
        )
    table = run_table.read_run_table(
        config, run_dir.load_split(eval_config.model_dir), info
    )
    curves = history.read_history(eval_config.model_dir)
    rows, labels = (
        (table.test, table.test_labels)
        if split == splits.TEST_SPLIT
        else (table.train, table.train_labels)
    )
    if config.conditional:
        labels = table.codes(labels)
    logging.info(
        "Evaluating %s on %s %s (%d rows): -ELBO and the IWAE bound with k=%d.",
        eval_config.model_dir,
        info.name,
        split,
        len(rows),
        eval_config.num_importance_samples,
    )
    start = time.perf_counter()
    figures = table_evaluation.evaluate_table(
        vae,
        rows,
        labels,
        train=table.train,
        # The training split holds no anomalous row: nothing to pick out.
        anomaly_label=config.anomaly_label if split == splits.TEST_SPLIT else None,
        num_samples=eval_config.num_importance_samples,
        batch_size=eval_config.batch_size,
        samples_per_chunk=eval_config.samples_per_chunk,
        seed=eval_config.seed,
    )
    pictures = table_pictures(
        vae, rows, labels, eval_config.results_dir, seed=eval_config.seed
    )
    metrics = {f"{split}_{name}": value for name, value in figures.items()}
    metrics.update(
        {
            "split": split,
            "num_examples": len(rows),
            "num_importance_samples": eval_config.num_importance_samples,
            "samples_per_chunk": eval_config.samples_per_chunk,
            "batch_size": eval_config.batch_size,
            "seed": eval_config.seed,
            "seconds": round(time.perf_counter() - start, 1),
            "dataset": info.name,
            "likelihood": "table",
            "model": eval_config.model_dir,
        }
    )
    # The PNGs, to TensorBoard too, as an image run's pictures go.
    drawn = {
        os.path.basename(path): tf.io.decode_png(tf.io.read_file(path))
        for path in pictures
    }
    _write_results(eval_config.results_dir, metrics, split, drawn, curves.epochs[-1])
    return metrics
