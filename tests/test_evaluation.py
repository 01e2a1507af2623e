"""Tests for tfvae.evaluation (settings, pictures, the run) and its command line.

The command line runs in subprocesses only: `tfvae.evaluate` and `tfvae.train`
define the same absl flags and must never be imported into one process.
"""

import dataclasses
import math
import os
import re
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import (
    REPO,
    TINY_SHAPE,
    run_command,
    run_module,
    tiny_config,
    tiny_images,
)
from tests.conftest import tiny_vae as make_tiny_vae
from tfvae import (
    adapters,
    builder,
    data,
    errors,
    evaluation,
    history,
    images,
    pictures,
    run_dir,
    run_eval,
    saved_model,
)


def _png(path):
    return tf.io.decode_png(tf.io.read_file(str(path))).numpy()


# --- Settings -------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, message",
    [
        ({}, "Pass exactly one of --model_dir"),
        ({"model_dir": "a", "export_dir": "b"}, "Pass exactly one of --model_dir"),
        ({"export_dir": "b"}, "--output_dir is required with --export_dir"),
        (
            {"model_dir": "a", "num_importance_samples": 0},
            "--num_importance_samples must be at least 1. Received: "
            "--num_importance_samples=0",
        ),
        ({"model_dir": "a", "samples_per_chunk": -1}, "--samples_per_chunk must be"),
        ({"model_dir": "a", "batch_size": 0}, "--batch_size must be at least 1"),
        ({"model_dir": "a", "split": ""}, "--split must name a split"),
    ],
)
def test_eval_config_refuses_bad_settings_naming_the_flag(settings, message):
    with pytest.raises(errors.UsageError, match=message):
        run_eval.EvalConfig(**settings)


def test_results_go_to_the_run_unless_told_otherwise():
    assert run_eval.EvalConfig(model_dir="run").results_dir == os.path.join(
        "run", "eval"
    )
    assert run_eval.EvalConfig(model_dir="run", output_dir="o").results_dir == "o"
    assert run_eval.split_name("test[:1000]") == "test"


# --- Pictures ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
    keras.utils.set_random_seed(0)
    return make_tiny_vae(tmp_path_factory.mktemp("vae"), latent_dim=2)


def _labelled_batches(count=40, batch_size=16):
    labels = tf.constant(np.arange(count) % 4)
    return tf.data.Dataset.from_tensor_slices(
        (tiny_images(count, seed=4), labels)
    ).batch(batch_size)


def test_pictures_have_the_expected_size_and_are_not_blank(tiny_vae, tmp_path):
    curves = history.History([1, 2, 3], [60.0, 50.0, 45.0], [58.0, 52.0, 49.0])
    drawn = pictures.write_pictures(
        adapters.VAEAdapter(tiny_vae),
        _labelled_batches(),
        str(tmp_path),
        seed=0,
        split="test",
        curves=curves,
        iwae_history={2: (100, 48.0)},
        final_nll=(1000, 46.0),
    )
    height, width, _ = TINY_SHAPE
    expected = {
        # 32 inputs and their reconstructions, 8 per row.
        "reconstructions.png": (8 * height, 8 * width),
        "prior_samples.png": (8 * height, 8 * width),
        # 8 pairs: input, 10 steps, input.
        "interpolations.png": (8 * height, 12 * width),
        "latent_manifold.png": (20 * height, 20 * width),
        "latent_scatter.png": (560, 640),
        "elbo_curve.png": (480, 640),
    }
    assert set(drawn) == set(expected)
    assert sorted(os.listdir(tmp_path)) == sorted(expected)
    for name, size in expected.items():
        png = _png(tmp_path / name)
        assert png.shape[:2] == size, name
        assert png.std() > 0, name
        np.testing.assert_array_equal(png, drawn[name].numpy())


def test_the_reconstruction_and_sample_pictures_are_those_of_tfvae_images(
    tiny_vae, tmp_path
):
    pictures.write_pictures(
        adapters.VAEAdapter(tiny_vae),
        _labelled_batches(),
        str(tmp_path),
        seed=5,
        split="test",
    )
    shown = tiny_images(40, seed=4)[:32]
    np.testing.assert_array_equal(
        _png(tmp_path / "reconstructions.png"), images.reconstructions(tiny_vae, shown)
    )
    np.testing.assert_array_equal(
        _png(tmp_path / "prior_samples.png"),
        images.grid(images.prior_samples(tiny_vae, 64, 5), 8),
    )
    assert not (tmp_path / "elbo_curve.png").exists()


# --- The history the curve is drawn from -------------------------------------------


def test_history_reads_a_resumed_runs_repeated_epoch_once(tmp_path):
    (tmp_path / run_dir.HISTORY).write_text(
        "epoch,kl,neg_elbo,reconstruction,val_kl,val_neg_elbo,val_reconstruction\n"
        "0,1,90,89,1,80,79\n1,1,70,69,1,65,64\n1,1,71,70,1,66,65\n"
    )
    # A resumed run may log an epoch twice: the last row wins.
    assert history.read_history(str(tmp_path)) == history.History(
        [1, 2], [90.0, 71.0], [80.0, 66.0]
    )
    assert history.read_history(str(tmp_path / "elsewhere")) is None


# --- The run and the command line ---------------------------------------------------


def _evaluate(*flags):
    return run_module("tfvae.evaluate", *flags)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run directory built by hand, on the prepared tiny_images dataset."""
    root = tmp_path_factory.mktemp("cli")
    config = tiny_config(root, latent_dim=3)
    _, info = data.prepare(config.dataset, config.data_dir, None)
    keras.utils.set_random_seed(0)
    vae = builder.build_vae(
        info.image_shape, seed=config.seed, **config.model_settings()
    )
    run_dir.save_config(config, config.model_dir)
    run_dir.save_info(info, config.model_dir)
    vae.save_weights(run_dir.path(config.model_dir, run_dir.WEIGHTS))
    with open(run_dir.path(config.model_dir, run_dir.HISTORY), "w") as f:
        f.write(
            "epoch,neg_elbo,kl,reconstruction,val_neg_elbo,val_kl,val_reconstruction\n"
        )
        f.write("0,50,1,49,48,1,47\n1,45,1,44,44,1,43\n")
    return config, info, vae


SWEEP_KEYS = {f"test_nll_k{k}" for k in (1, 10, 20)}


def _scalar_tags(folder):
    tags = set()
    for name in os.listdir(folder):
        if name.startswith("events.out.tfevents"):
            for record in tf.data.TFRecordDataset(os.path.join(folder, name)):
                event = tf.compat.v1.Event.FromString(record.numpy())
                tags |= {value.tag for value in event.summary.value}
    return tags


def test_cli_writes_metrics_pictures_and_tensorboard(tiny_run):
    config, _, _ = tiny_run
    result = _evaluate(
        f"--model_dir={config.model_dir}",
        "--num_importance_samples=20",
        "--samples_per_chunk=7",
        "--batch_size=16",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = run_dir.path(config.model_dir, run_dir.EVAL)
    metrics = run_dir.read_metrics(out)
    assert {
        "test_neg_elbo",
        "test_reconstruction",
        "test_kl",
        "test_nll",
        *SWEEP_KEYS,
        "num_examples",
        "num_importance_samples",
        "seconds",
    } <= set(metrics)
    assert "test_nll_bits_per_dim" not in metrics  # Bernoulli: not over 256 values.
    assert metrics["num_examples"] == 40
    assert metrics["test_nll"] == metrics["test_nll_k20"] < metrics["test_neg_elbo"]
    for name in ("reconstructions", "prior_samples", "interpolations", "elbo_curve"):
        assert _png(os.path.join(out, f"{name}.png")).std() > 0, name
    assert not os.path.exists(os.path.join(out, "latent_manifold.png"))  # 3-D z.
    # TensorBoard gets the split's figures and the pictures.
    assert {"test_nll", "test_neg_elbo", *SWEEP_KEYS, "elbo_curve"} <= _scalar_tags(out)
    assert "batch" in result.stdout  # The progress bar.


def test_an_export_gives_bits_per_dim_for_categorical(tmp_path, tiny_run):
    config, info, _ = tiny_run
    config = dataclasses.replace(config, likelihood="categorical")
    vae = builder.build_vae(
        info.image_shape, seed=config.seed, **config.model_settings()
    )
    export = saved_model.export(
        vae, str(tmp_path / "export"), config=config, dataset_info=info
    )
    before = sorted(os.listdir(export))
    metrics = run_eval.evaluate_run(
        run_eval.EvalConfig(
            export_dir=export,
            output_dir=str(tmp_path / "eval"),
            num_importance_samples=20,
            split="test[:16]",
        )
    )
    assert run_dir.read_metrics(str(tmp_path / "eval")) == metrics
    assert metrics["num_examples"] == 16
    assert SWEEP_KEYS <= set(metrics)
    for name in ("neg_elbo", "nll", "nll_k10"):
        np.testing.assert_allclose(
            metrics[f"test_{name}_bits_per_dim"],
            metrics[f"test_{name}"] / (math.prod(TINY_SHAPE) * math.log(2)),
        )
    assert "test_kl_bits_per_dim" not in metrics
    assert (tmp_path / "eval" / "latent_scatter.png").exists()
    assert not (tmp_path / "eval" / "elbo_curve.png").exists()  # No history.
    assert sorted(os.listdir(export)) == before


def test_an_unknown_split_is_refused_naming_the_splits(tiny_run):
    config, _, _ = tiny_run
    with pytest.raises(errors.UsageError, match=r"--split=validation is not a split"):
        run_eval.evaluate_run(
            run_eval.EvalConfig(model_dir=config.model_dir, split="validation")
        )


@pytest.mark.parametrize("split", ["test[:0]", "test[5:2]"])
def test_a_split_without_images_is_refused_before_any_work(tiny_run, split):
    config, _, _ = tiny_run
    out = run_dir.path(config.model_dir, "eval-empty")
    with pytest.raises(errors.UsageError, match=rf"--split={re.escape(split)} .*test"):
        run_eval.evaluate_run(
            run_eval.EvalConfig(model_dir=config.model_dir, split=split, output_dir=out)
        )
    assert not os.path.exists(out)


def test_one_image_is_evaluated_and_drawn(tiny_run, tmp_path):
    config, _, _ = tiny_run
    metrics = run_eval.evaluate_run(
        run_eval.EvalConfig(
            model_dir=config.model_dir,
            split="test[:1]",
            num_importance_samples=3,
            output_dir=str(tmp_path),
        )
    )
    assert metrics["num_examples"] == 1
    assert run_dir.read_metrics(str(tmp_path)) == metrics
    # One point on the PCA scatter; no pair to interpolate between.
    assert _png(tmp_path / "latent_scatter.png").std() > 0
    assert not (tmp_path / "interpolations.png").exists()


def _forms(images, labels):
    """The forms `evaluation.evaluate` takes, of the same images and labels."""
    pairs = tf.data.Dataset.from_tensor_slices((images, labels))
    return {
        "arrays": images.numpy(),
        "array pairs": (images.numpy(), labels.numpy()),
        "unbatched images": tf.data.Dataset.from_tensor_slices(images),
        # As `evaluate` batches them: the noise is seeded per batch.
        "batched pairs": pairs.batch(evaluation.BATCH_SIZE),
        "TFDS dicts": pairs.map(lambda x, y: {"image": x, "label": y}),
    }


def test_evaluate_takes_a_vae_or_its_export_and_every_data_form(tiny_run, tmp_path):
    _, _, vae = tiny_run
    images, labels = tiny_images(40, seed=4), tf.constant(np.arange(40) % 4)
    results = {
        form: evaluation.evaluate(vae, data, num_samples=5, samples_per_chunk=2)
        for form, data in _forms(images, labels).items()
    }
    first = results["arrays"]
    assert first["num_importance_samples"] == 5
    assert first["nll"] == first["nll_k5"] < first["neg_elbo"]
    for form, metrics in results.items():
        assert metrics == first, form
    # The export of the same weights, with the pictures.
    path = saved_model.export(vae, str(tmp_path / "export"))
    exported = evaluation.evaluate(
        str(tmp_path / "export"),
        images,
        num_samples=5,
        samples_per_chunk=2,
        output_dir=str(tmp_path / "eval"),
    )
    assert exported.keys() == first.keys()
    assert abs(exported["nll"] - first["nll"]) < 5
    assert (tmp_path / "eval" / "latent_scatter.png").exists()
    assert path.endswith("1")


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros([4, *TINY_SHAPE], np.float32), r"takes uint8 images.*tf.round"),
        (np.zeros([4, 7, 7, 1], np.uint8), r"\(H, W, C\) = \(8, 8, 1\)"),
    ],
)
def test_evaluate_refuses_images_it_cannot_score(tiny_run, images, message):
    _, _, vae = tiny_run
    with pytest.raises(ValueError, match=message):
        evaluation.evaluate(vae, images, num_samples=2)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(batch_size=0), "batch_size must be a positive integer"),
        (dict(samples_per_chunk=2.5), "samples_per_chunk must be a positive integer"),
        (dict(output_dir="/proc/tfvae-eval"), "output_dir=/proc/tfvae-eval cannot"),
    ],
)
def test_evaluate_refuses_bad_arguments_before_any_work(tiny_run, arguments, message):
    _, _, vae = tiny_run
    images = np.zeros([4, *TINY_SHAPE], np.uint8)
    with pytest.raises(ValueError, match=message):
        evaluation.evaluate(vae, images, num_samples=2, **arguments)


def test_cli_reports_bad_flags_without_a_traceback(tmp_path):
    result = _evaluate(f"--export_dir={tmp_path}")
    assert result.returncode != 0
    assert "--output_dir is required with --export_dir" in result.stderr
    assert "Traceback" not in result.stderr
    result = _evaluate("--model_dir=run", "--num_importance_samples=0")
    assert "--num_importance_samples must be at least 1" in result.stderr


def test_report_script_trains_evaluates_and_writes_the_page(tmp_path, tiny_run):
    config, _, _ = tiny_run
    flagfile = tmp_path / "tiny.flags"
    flagfile.write_text(
        "--dataset=tiny_images\n--hidden_units=16\n--latent_dim=2\n"
        "--batch_size=16\n--noexport\n--nojit_compile\n"
    )
    run = tmp_path / "run"
    result = run_command(
        [
            sys.executable,
            os.path.join(REPO, "scripts", "report.py"),
            f"--model_dir={run}",
            f"--train_flags={flagfile}",
            "--epochs=2",
            "--num_importance_samples=20",
            f"--data_dir={config.data_dir}",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = (run / "report.md").read_text()
    assert "| -log p(x), IWAE k=20 |" in report
    assert "![latent_manifold.png](eval/latent_manifold.png)" in report
    page = _png(run / "report.png")
    # Table and curve, then five pictures two by two (2-D z adds the manifold).
    assert page.shape[:2] == (4 * 450, 1100) and page.std() > 0
    assert (run / "report.pdf").stat().st_size > 10_000
