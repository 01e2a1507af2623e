"""Tests for tfvae.training: artifacts, resume, reproducibility, refusals, NaN."""

import csv
import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import run_command, tiny_config, tiny_training_command, tiny_vae
from tfvae import (
    callbacks,
    devices,
    errors,
    memory,
    model,
    run_eval,
    saved_model,
    training,
)
from tfvae import run_dir as run_dir_lib


def _rows(run_dir):
    with open(os.path.join(run_dir, run_dir_lib.HISTORY)) as f:
        return list(csv.DictReader(f))


def _png(path):
    return tf.io.decode_png(tf.io.read_file(str(path))).numpy()


def test_a_run_writes_everything_the_readme_promises(tmp_path):
    config = tiny_config(tmp_path)
    metrics = training.train_and_evaluate(config)
    run = tmp_path / "run"
    for name in ["config.json", "dataset.json", "model.weights.h5", "metrics.json"]:
        assert (run / name).exists(), name
    assert json.loads((run / "metrics.json").read_text()) == metrics
    assert metrics["epochs"] == 2
    assert metrics["train_examples_per_s"] > 0
    assert 0 < metrics["test_neg_elbo"] < 1000
    np.testing.assert_allclose(
        metrics["test_neg_elbo"],
        metrics["test_reconstruction"] + metrics["test_kl"],
        rtol=1e-5,
    )
    assert [row["epoch"] for row in _rows(run)] == ["0", "1"]
    assert {"neg_elbo", "val_neg_elbo", "kl", "reconstruction"} <= set(_rows(run)[0])
    recon, samples = _png(run / "reconstructions.png"), _png(run / "samples.png")
    assert recon.shape == (2 * 2 * 8, 8 * 8, 1)  # 16 inputs + 16 reconstructions.
    assert samples.shape == (8 * 8, 8 * 8, 1)
    assert recon.std() > 0 and samples.std() > 0
    image_events = os.listdir(run / "logs" / "images")
    assert image_events and os.listdir(run / "logs" / "validation")


def test_categorical_runs_report_bits_per_dim(tmp_path):
    metrics = training.train_and_evaluate(
        tiny_config(tmp_path, likelihood="categorical", binarize=True, epochs=1)
    )
    np.testing.assert_allclose(
        metrics["test_neg_elbo_bits_per_dim"],
        metrics["test_neg_elbo"] / (8 * 8 * np.log(2)),
        rtol=1e-6,
    )


def _train_in_a_fresh_process(root, **overrides) -> dict:
    result = run_command(tiny_training_command(root, **overrides))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_same_seed_same_result_other_seed_other_result(tmp_path):
    # As users run it: separate processes (python -m tfvae.train twice).
    a = _train_in_a_fresh_process(tmp_path / "a", epochs=1)
    b = _train_in_a_fresh_process(tmp_path / "b", epochs=1)
    c = _train_in_a_fresh_process(tmp_path / "c", epochs=1, seed=1)
    assert a["test_neg_elbo"] == b["test_neg_elbo"]
    assert a["test_neg_elbo"] != c["test_neg_elbo"]


# "0": the streaming path, which reads the split from its record files.
@pytest.mark.parametrize("memory_budget", ["25%", "0"])
def test_interrupted_run_resumes_from_the_last_completed_epoch(
    tmp_path, monkeypatch, memory_budget
):
    config = tiny_config(tmp_path, epochs=3, memory_budget=memory_budget)

    def crash_in_second_epoch(self, batch, logs=None):
        if self._start is not None and len(self.epoch_seconds) == 1 and batch == 2:
            raise KeyboardInterrupt("simulated Ctrl-C")

    with monkeypatch.context() as patch:
        patch.setattr(callbacks.Throughput, "on_train_batch_end", crash_in_second_epoch)
        with pytest.raises(KeyboardInterrupt):
            training.train_and_evaluate(config)
    run = tmp_path / "run"
    assert [row["epoch"] for row in _rows(run)] == ["0"]
    backup = json.loads((run / "backup" / "training_metadata.json").read_text())
    assert backup["epoch"] == 1

    metrics = training.train_and_evaluate(config)
    assert [row["epoch"] for row in _rows(run)] == ["0", "1", "2"]
    assert metrics["epochs"] == 3
    backup = json.loads((run / "backup" / "training_metadata.json").read_text())
    assert backup["epoch"] == 3

    # The resumed run trained on the batches (and noise) of an uninterrupted
    # one: it ends with the same weights.
    uninterrupted = tmp_path / "uninterrupted"
    training.train_and_evaluate(
        tiny_config(uninterrupted, epochs=3, memory_budget=memory_budget)
    )
    resumed = run_dir_lib.load_run(str(run))[2]
    for a, b in zip(
        resumed.weights,
        run_dir_lib.load_run(str(uninterrupted / "run"))[2].weights,
        strict=True,
    ):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_rerunning_with_more_epochs_continues_and_a_finished_run_is_kept(tmp_path):
    config = tiny_config(tmp_path, epochs=1)
    first = training.train_and_evaluate(config)
    again = training.train_and_evaluate(config)  # Nothing left to train.
    assert again["train_neg_elbo"] == first["train_neg_elbo"]
    assert len(_rows(tmp_path / "run")) == 1
    longer = training.train_and_evaluate(dataclasses.replace(config, epochs=3))
    assert [row["epoch"] for row in _rows(tmp_path / "run")] == ["0", "1", "2"]
    assert longer["test_neg_elbo"] < first["test_neg_elbo"]


def test_a_finished_run_rerun_without_metrics_reports_its_train_figures(tmp_path):
    # A kill after the last epoch but before metrics.json was written.
    config = tiny_config(tmp_path, likelihood="categorical", epochs=1)
    first = training.train_and_evaluate(config)
    (tmp_path / "run" / "metrics.json").unlink()
    again = training.train_and_evaluate(config)
    for name in ("train_neg_elbo", "train_kl", "train_neg_elbo_bits_per_dim"):
        assert again[name] == first[name], name


def test_fewer_epochs_than_done_keeps_the_model_and_reports_it_truthfully(tmp_path):
    training.train_and_evaluate(tiny_config(tmp_path, epochs=3))
    metrics = training.train_and_evaluate(tiny_config(tmp_path, epochs=2))
    assert metrics["epochs"] == 3
    assert len(_rows(tmp_path / "run")) == 3


def test_a_batch_larger_than_the_split_leaves_nothing_behind(tmp_path):
    with pytest.raises(errors.UsageError, match="--batch_size=500 is larger than"):
        training.train_and_evaluate(tiny_config(tmp_path, batch_size=500))
    assert not (tmp_path / "run").exists()
    # The corrected command on the same --model_dir is not refused.
    assert training.train_and_evaluate(tiny_config(tmp_path, epochs=1))["epochs"] == 1


def test_a_model_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "run").write_text("mine")
    with pytest.raises(errors.UsageError, match="is a file, not a folder"):
        training.train_and_evaluate(tiny_config(tmp_path))
    assert (tmp_path / "run").read_text() == "mine"


def test_two_runs_in_one_process_agree(tmp_path):
    # A notebook's habit: the same config twice in one Python process, with
    # XLA, the IWAE callback and the export that touch process-wide state.
    settings = dict(epochs=2, jit_compile=True, iwae_every_epochs=1, export=True)
    a = training.train_and_evaluate(tiny_config(tmp_path / "a", **settings))
    b = training.train_and_evaluate(tiny_config(tmp_path / "b", **settings))
    for name in ("train_neg_elbo", "test_neg_elbo", "test_kl"):
        assert a[name] == b[name], name
    weights_a = run_dir_lib.load_run(str(tmp_path / "a" / "run"))[2].weights
    weights_b = run_dir_lib.load_run(str(tmp_path / "b" / "run"))[2].weights
    for x, y in zip(weights_a, weights_b, strict=True):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_a_model_dir_with_another_configuration_is_refused(tmp_path):
    training.train_and_evaluate(tiny_config(tmp_path, epochs=1))
    before = (tmp_path / "run" / "model.weights.h5").read_bytes()
    with pytest.raises(ValueError, match="--latent_dim: run has 2, requested 3"):
        training.train_and_evaluate(tiny_config(tmp_path, epochs=1, latent_dim=3))
    assert (tmp_path / "run" / "model.weights.h5").read_bytes() == before


def test_a_foreign_non_empty_model_dir_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a tfvae run"):
        training.train_and_evaluate(tiny_config(tmp_path))


def test_uneven_replica_split_is_refused_before_work(tmp_path, monkeypatch):
    class TwoReplicas:
        num_replicas_in_sync = 2

    monkeypatch.setattr(training.distribute, "make_strategy", lambda _: TwoReplicas())
    with pytest.raises(ValueError, match="--batch_size=15 does not split evenly"):
        training.train_and_evaluate(tiny_config(tmp_path, batch_size=15))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "steps_per_execution, where",
    [
        (1, r"at training step 9 \(epoch 2, batch 3\)"),
        # 3 steps per call: the check sees steps 7-9 at once.
        (3, r"in training steps 7-9 \(epoch 2, batches 1-3\)"),
    ],
)
def test_nan_loss_stops_with_the_step_and_keeps_the_last_backup(
    tmp_path, monkeypatch, steps_per_execution, where
):
    real = model.VAE.objective_terms

    def poisoned(self, images, seed, labels=None, num_samples=1):
        terms, chain = real(self, images, seed, labels, num_samples)
        # 6 training + 3 validation steps per epoch; step 12 is in epoch 2.
        bad = tf.where(seed[1] >= 12, np.nan, 0.0)
        return {name: value + bad for name, value in terms.items()}, chain

    monkeypatch.setattr(model.VAE, "objective_terms", poisoned)
    with pytest.raises(FloatingPointError, match=where):
        training.train_and_evaluate(
            tiny_config(tmp_path, epochs=3, steps_per_execution=steps_per_execution)
        )
    backup = json.loads(
        (tmp_path / "run" / "backup" / "training_metadata.json").read_text()
    )
    assert backup["epoch"] == 1


def test_steps_per_execution_does_not_change_training(tmp_path):
    # 6 steps per epoch: whole calls of 4 steps would run 8 steps per epoch,
    # into the next epoch's batches; the run must equal 1 step per call.
    vaes = []
    for steps in (1, 4):
        run = tmp_path / f"spe{steps}"
        training.train_and_evaluate(
            tiny_config(run, epochs=2, steps_per_execution=steps)
        )
        vaes.append(run_dir_lib.load_run(str(run / "run"))[2])
    one, four = vaes
    # noise_step counts every training and test step.
    assert int(four.noise_step.numpy()) == int(one.noise_step.numpy())
    for a, b in zip(one.weights, four.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_a_network_that_cannot_fit_the_images_fails_before_any_data_work(tmp_path):
    config = tiny_config(tmp_path, network="conv", conv_filters=(4, 4, 4, 4))
    # A UsageError: the command line reports it without a traceback.
    with pytest.raises(errors.UsageError, match="divisible by 16"):
        training.train_and_evaluate(config)
    assert not (tmp_path / "tfds").exists()
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "overrides, flag",
    [
        (dict(latent_dim=(200_000_000,)), "--latent_dim=200000000"),
        (dict(train_samples=1_000_000_000), "--train_samples=1000000000"),
        (
            dict(prior="mog", kl="monte_carlo", prior_components=20_000_000_000),
            "--prior_components=20000000000",
        ),
    ],
)
def test_a_model_that_cannot_fit_in_memory_is_refused_before_any_work(
    tmp_path, overrides, flag
):
    with pytest.raises(
        errors.UsageError,
        match=r"The model and one step of 16 images would need about [\d,.]+ GiB "
        rf"of memory, more than the [\d.]+ GiB available; .*Received: {flag}",
    ):
        training.train_and_evaluate(tiny_config(tmp_path, **overrides))
    assert os.listdir(tmp_path) == []


def test_an_iwae_pass_that_cannot_fit_is_refused_though_training_fits(
    tmp_path, monkeypatch
):
    # The tiny model trains in 49 KB; 200 samples of each test batch at once
    # need 1.3 MB.
    monkeypatch.setattr(memory, "physical_memory", lambda: 2**20)
    config = tiny_config(tmp_path, iwae_every_epochs=1, iwae_samples=500)
    with pytest.raises(
        errors.UsageError,
        match=r"--iwae_every_epochs=1 scores each test batch of --batch_size=16 "
        r"with 200 samples at once \(--iwae_samples=500, in chunks of 200\): "
        r"about 0.0 GiB of memory, more than the 0.0 GiB available",
    ):
        training.train_and_evaluate(config)
    assert os.listdir(tmp_path) == []
    training.train_and_evaluate(
        dataclasses.replace(config, iwae_every_epochs=0, epochs=1)
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(model_dir="/proc/tfvae-run"), "--model_dir=/proc/tfvae-run cannot be"),
        (
            dict(export=True, export_dir="/proc/tfvae-export"),
            "--export_dir=/proc/tfvae-export cannot be created",
        ),
        (dict(model_dir="{tmp}/file/run"), r"--model_dir=.*file/run cannot be created"),
        (dict(data_dir="/proc/tfvae-tfds"), "--data_dir=/proc/tfvae-tfds cannot be"),
        (
            dict(data_dir="{tmp}/run/tfds"),
            r"--data_dir=.*/run/tfds is inside --model_dir=.*/run, which holds only",
        ),
    ],
)
def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(
    tmp_path, overrides, message
):
    (tmp_path / "file").write_text("mine")
    overrides = {
        k: v.format(tmp=tmp_path) if isinstance(v, str) else v
        for k, v in overrides.items()
    }
    config = tiny_config(tmp_path, **overrides)
    with pytest.raises(errors.UsageError, match=message):
        training.train_and_evaluate(config)
    # No dataset was built, no run directory was made.
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_training_exports_a_versioned_saved_model_at_the_end(tmp_path):
    metrics = training.train_and_evaluate(tiny_config(tmp_path, epochs=1, export=True))
    assert metrics["export_path"] == str(tmp_path / "export" / "1")
    assert (tmp_path / "export" / "1" / "saved_model.pb").exists()
    loaded = tf.saved_model.load(metrics["export_path"])
    assert {"encode", "decode", "sample", "serving_default"} <= set(loaded.signatures)


def test_an_export_that_fails_after_training_keeps_the_runs_figures(
    tmp_path, monkeypatch
):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(saved_model, "export", full_disk)
    with pytest.raises(OSError, match="No space left"):
        training.train_and_evaluate(tiny_config(tmp_path, epochs=1, export=True))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and np.isfinite(metrics["test_neg_elbo"])
    assert "export_path" not in metrics


def test_iwae_every_n_epochs_logs_a_bound_below_the_elbo(tmp_path):
    training.train_and_evaluate(
        tiny_config(tmp_path, epochs=2, iwae_every_epochs=1, iwae_samples=50)
    )
    with open(tmp_path / "run" / run_dir_lib.IWAE_HISTORY) as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    for row in rows:
        assert row["num_importance_samples"] == "50"
        # The IWAE bound on -log p(x) is tighter than the ELBO's.
        assert float(row["nll"]) < float(row["neg_elbo"])


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_with_float32_distributions(tmp_path, policy):
    import keras

    metrics = training.train_and_evaluate(
        tiny_config(tmp_path, mixed_precision=policy, epochs=2, export=True)
    )
    assert np.isfinite(metrics["test_neg_elbo"])
    assert metrics["test_neg_elbo"] < metrics["train_neg_elbo"] + 50
    # The global policy is restored, and the export computes in float32.
    assert keras.mixed_precision.dtype_policy().name == "float32"
    loaded = tf.saved_model.load(metrics["export_path"])
    scores = loaded.signatures["score"](images=tf.zeros([2, 8, 8, 1], tf.uint8))
    assert scores["neg_elbo"].dtype == tf.float32

    with devices.dtype_policy(policy):
        vae = tiny_vae(tmp_path)
    assert vae.encoder.body.layers[-1].compute_dtype == policy.removeprefix("mixed_")
    reconstruction, kl = vae.neg_elbo_terms(
        tf.zeros([2, 8, 8, 1], tf.uint8), tf.constant([0, 1], tf.int64)
    )
    assert reconstruction.dtype == kl.dtype == tf.float32
    if policy == "mixed_float16":
        vae.compile(optimizer=keras.optimizers.Adam())
        assert isinstance(vae.optimizer, keras.optimizers.LossScaleOptimizer)


def test_kl_warmup_continues_at_the_right_weight_after_a_resume(tmp_path):
    config = tiny_config(tmp_path, epochs=2, kl_warmup_epochs=4, beta=2.0)
    training.train_and_evaluate(config)
    metrics = training.train_and_evaluate(dataclasses.replace(config, epochs=4))
    rows = _rows(tmp_path / "run")
    assert [float(row["kl_weight"]) for row in rows] == [0.5, 1.0, 1.5, 2.0]
    # The objective weighs the KL; the reported -ELBO does not.
    for row in rows:
        weight, kl = float(row["kl_weight"]), float(row["kl"])
        expected = float(row["reconstruction"]) + weight * kl
        assert float(row["loss"]) == pytest.approx(expected, rel=1e-4)
        assert float(row["neg_elbo"]) == pytest.approx(
            float(row["reconstruction"]) + kl, rel=1e-4
        )
    assert metrics["test_loss"] > metrics["test_neg_elbo"]


def test_a_conditional_two_layer_run_trains_evaluates_and_exports(tmp_path):
    config = tiny_config(
        tmp_path,
        conditional=True,
        latent_dim=(3, 2),
        kl="monte_carlo",
        prior="mog",
        prior_components=3,
        objective="iwae",
        train_samples=3,
        export=True,
        iwae_every_epochs=1,
    )
    metrics = training.train_and_evaluate(config)
    assert metrics["test_loss"] <= metrics["test_neg_elbo"]
    loaded = tf.saved_model.load(metrics["export_path"])
    assert set(loaded.signatures["sample"].structured_input_signature[1]) == {
        "num_samples",
        "seed",
        "labels",
    }
    results = run_eval.evaluate_run(
        run_eval.EvalConfig(model_dir=config.model_dir, num_importance_samples=20)
    )
    # The bound on log p(x|y) over both layers, tighter than the ELBO.
    assert results["test_nll"] < results["test_neg_elbo"]
    # The export evaluates to the same figures as the run it came from.
    exported = run_eval.evaluate_run(
        run_eval.EvalConfig(
            export_dir=metrics["export_path"],
            output_dir=str(tmp_path / "export_eval"),
            num_importance_samples=20,
        )
    )
    assert exported["test_nll"] == pytest.approx(results["test_nll"], abs=2.0)


def test_conditional_on_a_dataset_without_labels_is_refused_before_data_work(
    tmp_path,
):
    folder = tmp_path / "plain"
    for split in ("train", "test"):
        (folder / split).mkdir(parents=True)
        for index in range(3):
            tf.io.write_file(
                str(folder / split / f"{index}.png"),
                tf.io.encode_png(tf.zeros([8, 8, 1], tf.uint8)),
            )
    config = tiny_config(
        tmp_path,
        dataset="mnist",
        image_folder=str(folder),
        image_size=(8, 8),
        conditional=True,
    )
    with pytest.raises(errors.UsageError, match="--conditional needs class labels"):
        training.train_and_evaluate(config)
    assert not (tmp_path / "run").exists()
