"""Tests for tfvae.evaluation and the `python -m tfvae.evaluate` command line.

The command line runs in subprocesses only: `tfvae.evaluate` and `tfvae.train`
define the same absl flags and must never be imported into one process.
"""

import csv
import json
import math
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tests.conftest import REPO, TINY_SHAPE, run_command, run_module, tiny_config
from tfvae import config as config_lib
from tfvae import data, evaluation, images, model, saved_model

tfd = tfp.distributions


def _tiny_images(count, seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.integers(0, 256, (count, *TINY_SHAPE)), tf.uint8)


def _png(path):
    return tf.io.decode_png(tf.io.read_file(str(path))).numpy()


# --- The IWAE bound ------------------------------------------------------------


def _linear_gaussian_log_weights(num_samples, seed):
    """Returns (log-weights [k, batch], exact log p(x) [batch]) of a known model.

    z ~ N(0, I_2), x|z ~ N(W z + b, s^2 I_3), so p(x) = N(b, W W^T + s^2 I).
    q(z|x) is the exact posterior with its mean shifted and its scale
    widened, so the ELBO is strictly below log p(x).
    """
    w = tf.constant([[1.0, 0.5], [-0.3, 1.2], [0.8, -0.7]])
    b = tf.constant([0.2, -0.1, 0.4])
    s = 0.5
    x = tf.constant([[0.5, 1.0, -1.0], [2.0, -1.5, 0.3], [0.0, 0.0, 0.0]])
    exact = tfd.MultivariateNormalTriL(
        b, tf.linalg.cholesky(w @ tf.transpose(w) + s**2 * tf.eye(3))
    ).log_prob(x)
    posterior_cov = tf.linalg.inv(tf.eye(2) + tf.transpose(w) @ w / s**2)
    posterior_mean = (x - b) @ w / s**2 @ posterior_cov
    q = tfd.MultivariateNormalTriL(
        posterior_mean + 0.4, 1.5 * tf.linalg.cholesky(posterior_cov)
    )
    z = q.sample(num_samples, seed=seed)  # [k, batch, 2]
    prior = tfd.MultivariateNormalDiag(tf.zeros(2), tf.ones(2))
    likelihood = tfd.MultivariateNormalDiag(
        tf.einsum("kbl,dl->kbd", z, w) + b, tf.fill([3], s)
    )
    return likelihood.log_prob(x) + prior.log_prob(z) - q.log_prob(z), exact


def test_iwae_bound_approaches_the_exact_log_likelihood():
    ks = (1, 10, 100, 1000, 5000)
    errors = {k: [] for k in ks}  # log p(x) - L_k, [repeat, batch]
    elbo_gaps = {k: [] for k in ks}  # L_k - ELBO
    for repeat in range(20):
        log_w, exact = _linear_gaussian_log_weights(5000, seed=[repeat, 1])
        bounds = evaluation.logmeanexp_prefixes(tf.split(log_w, 10), ks)
        elbo = tf.cast(tf.reduce_mean(log_w, 0), tf.float64)
        for k in ks:
            errors[k].append(tf.cast(exact, tf.float64) - bounds[k])
            elbo_gaps[k].append(bounds[k] - elbo)
    bias = {k: np.mean(errors[k]) for k in ks}
    spread = {k: np.mean(np.abs(errors[k])) for k in ks}
    # A lower bound, on average: the ELBO's gap of ~1.6 nats closes with k.
    assert bias[1] > 1.0 and bias[1] > bias[10] > 0.05
    assert spread[1] > spread[10] > spread[100] > spread[1000] > spread[5000]
    assert spread[5000] < 0.01 * spread[1]
    assert np.max(np.abs(errors[5000])) < 0.06
    # IWAE(k) >= ELBO on average, and by more for larger k.
    assert 0.5 < np.mean(elbo_gaps[10]) < np.mean(elbo_gaps[5000])


def test_chunked_logmeanexp_equals_the_unchunked_one():
    log_w = tf.random.stateless_normal([1000, 4], seed=[0, 0], stddev=20.0) - 100.0
    ks = (1, 7, 10, 100, 500, 1000)
    for sizes in ([1000], [500, 500], [3, 97, 400, 500], [1] * 10 + [990]):
        bounds = evaluation.logmeanexp_prefixes(tf.split(log_w, sizes), ks)
        for k in ks:
            expected = tf.reduce_logsumexp(log_w[:k], 0) - math.log(k)
            np.testing.assert_allclose(bounds[k], expected, rtol=1e-6)


def test_logmeanexp_reads_chunks_only_as_far_as_it_needs_and_refuses_too_few():
    def chunks():
        yield tf.zeros([10, 2])
        raise AssertionError("read past the largest k")

    assert set(evaluation.logmeanexp_prefixes(chunks(), (1, 10))) == {1, 10}
    with pytest.raises(ValueError, match="fewer than k=20"):
        evaluation.logmeanexp_prefixes([tf.zeros([10, 2])], (5, 20))


def test_sweep_and_chunk_sizes():
    assert evaluation.sweep(5000) == (1, 10, 100, 1000, 5000)
    assert evaluation.sweep(300) == (1, 10, 100, 300)
    assert evaluation.sweep(1) == (1,)
    assert evaluation.chunk_sizes(1200, 500) == [500, 500, 200]
    with pytest.raises(ValueError, match="num_samples=0"):
        evaluation.sweep(0)


# --- On a tiny VAE -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
    """An untrained tiny VAE whose decoder depends strongly on z.

    Its q(z|x) is then far from the true posterior, so the IWAE bound moves
    by several nats between k=1 and k=1000, well above the Monte Carlo noise.
    """
    keras.utils.set_random_seed(0)
    config = tiny_config(tmp_path_factory.mktemp("vae"), latent_dim=2)
    vae = model.build_vae(config, TINY_SHAPE)
    for weight in vae.decoder.trainable_weights:
        if "kernel" in weight.path:
            weight.assign(2.0 * weight)
    return config, vae


def test_iwae_is_below_the_neg_elbo_and_falls_with_k(tiny_vae):
    _, vae = tiny_vae
    batches = tf.data.Dataset.from_tensor_slices(_tiny_images(32, seed=1)).batch(16)
    adapter = evaluation.VAEAdapter(vae, jit_compile=False)
    runs = [
        evaluation.evaluate_batches(adapter, batches, 1000, 300, seed=seed)
        for seed in range(3)
    ]
    means = {name: np.mean([run[name] for run in runs]) for name in runs[0]}
    # k=1 estimates the ELBO itself (with a Monte Carlo KL): equal up to noise.
    assert abs(means["nll_k1"] - means["neg_elbo"]) < 0.03 * means["neg_elbo"]
    assert (
        means["neg_elbo"]
        > means["nll_k10"]
        > means["nll_k100"]
        > means["nll_k1000"]
        > 0
    )
    assert means["neg_elbo"] - means["nll_k1000"] > 5.0
    assert runs[0]["nll"] == runs[0]["nll_k1000"]
    np.testing.assert_allclose(
        runs[0]["neg_elbo"], runs[0]["reconstruction"] + runs[0]["kl"], rtol=1e-6
    )


def test_chunks_share_the_observation_and_the_sweep_reuses_the_first_samples(
    tiny_vae,
):
    _, vae = tiny_vae
    adapter = evaluation.VAEAdapter(vae, jit_compile=False)
    batch = _tiny_images(4, seed=2)
    seed = tf.constant([3, 0], tf.int64)
    chunks = [adapter.log_weights(batch, 50, seed, chunk) for chunk in range(4)]
    # Chunk 1 drawn again is chunk 1; chunk 2 draws other z.
    np.testing.assert_array_equal(chunks[1], adapter.log_weights(batch, 50, seed, 1))
    assert not np.allclose(chunks[1], chunks[2])
    # Every chunk scores one observation x: the same x as the ELBO with the
    # same seed, so the mean log-weight matches -ELBO up to Monte Carlo noise.
    reconstruction, kl = adapter.neg_elbo_terms(batch, seed)
    all_log_w = tf.concat(chunks, 0)
    np.testing.assert_allclose(
        -tf.reduce_mean(all_log_w, 0), reconstruction + kl, rtol=0.1
    )
    bounds = evaluation.logmeanexp_prefixes(chunks, (10, 200))
    np.testing.assert_allclose(
        bounds[200], tf.reduce_logsumexp(all_log_w, 0) - math.log(200), rtol=1e-6
    )
    # The k=10 figure does not depend on how many samples were asked for.
    batches = tf.data.Dataset.from_tensors(batch)
    small, large = (
        evaluation.evaluate_batches(adapter, batches, k, 50, seed=3) for k in (10, 200)
    )
    assert small["nll_k10"] == large["nll_k10"]


def test_xla_estimates_the_same_bound(tmp_path):
    # XLA on CPU draws other stateless random numbers than TensorFlow's
    # kernels, so the two agree in distribution, not number for number (and
    # binarize differently: gray observations keep x the same).
    vae = model.build_vae(tiny_config(tmp_path, binarize=False), TINY_SHAPE)
    batch, seed = _tiny_images(4), tf.constant([1, 2], tf.int64)
    plain, xla = (
        evaluation.VAEAdapter(vae, jit_compile=jit).log_weights(batch, 4000, seed, 1)
        for jit in (False, True)
    )
    standard_error = np.std(plain, axis=0) / np.sqrt(4000)
    assert np.all(
        np.abs(np.mean(plain, axis=0) - np.mean(xla, axis=0)) < 5 * standard_error
    )


# --- Pictures and curves ---------------------------------------------------------


def _labelled_batches(count=40, batch_size=16):
    labels = tf.constant(np.arange(count) % 4)
    return tf.data.Dataset.from_tensor_slices(
        (_tiny_images(count, seed=4), labels)
    ).batch(batch_size)


def test_pictures_have_the_expected_size_and_are_not_blank(tiny_vae, tmp_path):
    _, vae = tiny_vae
    history = evaluation.History([1, 2, 3], [60.0, 50.0, 45.0], [58.0, 52.0, 49.0])
    pictures = evaluation.write_pictures(
        evaluation.VAEAdapter(vae, jit_compile=False),
        _labelled_batches(),
        str(tmp_path),
        seed=0,
        split="test",
        history=history,
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
    assert set(pictures) == set(expected)
    for name, size in expected.items():
        png = _png(tmp_path / name)
        assert png.shape[:2] == size, name
        assert png.std() > 0, name
        np.testing.assert_array_equal(png, pictures[name].numpy())


def test_the_reconstruction_and_sample_pictures_are_those_of_tfvae_images(
    tiny_vae, tmp_path
):
    config, vae = tiny_vae
    evaluation.write_pictures(
        evaluation.VAEAdapter(vae, jit_compile=False),
        _labelled_batches(),
        str(tmp_path),
        seed=5,
        split="test",
    )
    shown = _tiny_images(40, seed=4)[:32]
    np.testing.assert_array_equal(
        _png(tmp_path / "reconstructions.png"), images.reconstructions(vae, shown)
    )
    np.testing.assert_array_equal(
        _png(tmp_path / "prior_samples.png"),
        images.grid(images.prior_samples(vae, 64, 5), 8),
    )
    assert not (tmp_path / "elbo_curve.png").exists()


def test_interpolation_rows_start_and_end_at_the_inputs(tiny_vae):
    _, vae = tiny_vae
    adapter = evaluation.VAEAdapter(vae, jit_compile=False)
    starts, ends = _tiny_images(3, seed=6), _tiny_images(3, seed=7)
    grid = evaluation.interpolation_grid(adapter, starts, ends, steps=5).numpy()
    height, width, _ = TINY_SHAPE
    assert grid.shape == (3 * height, 7 * width, 1)
    np.testing.assert_array_equal(grid[height : 2 * height, :width], starts[1])
    np.testing.assert_array_equal(grid[height : 2 * height, -width:], ends[1])
    first_step = adapter.decode_mean(adapter.encode_mean(starts))[1]
    np.testing.assert_allclose(
        grid[height : 2 * height, width : 2 * width] / 255.0, first_step, atol=0.5 / 255
    )


def test_manifold_needs_a_2d_latent(tmp_path):
    vae = model.build_vae(tiny_config(tmp_path, latent_dim=3), TINY_SHAPE)
    with pytest.raises(ValueError, match="latent_dim=3"):
        evaluation.manifold_grid(evaluation.VAEAdapter(vae, False), 4)


def test_pca_finds_the_direction_of_largest_variance(monkeypatch):
    rng = np.random.default_rng(0)
    direction = np.array([3.0, 4.0, 0.0, 0.0]) / 5.0
    points = rng.normal(size=(500, 1)) * 10 * direction + rng.normal(size=(500, 4))
    projected = evaluation.pca(points)
    assert projected.shape == (500, 2)
    assert abs(np.corrcoef(projected[:, 0], points @ direction)[0, 1]) > 0.99
    assert projected[:, 0].var() > 20 * projected[:, 1].var()
    # Without scikit-learn (optional), higher-dimensional latents use PCA.
    monkeypatch.setitem(sys.modules, "sklearn", None)
    assert evaluation.embed_2d(points, seed=0)[1] == "PCA"
    assert evaluation.embed_2d(points[:, :2], seed=0)[1] == "latent"


def test_history_from_csv_and_from_tensorboard_events(tmp_path):
    csv_run, events_run = tmp_path / "csv", tmp_path / "events"
    csv_run.mkdir()
    (csv_run / "history.csv").write_text(
        "epoch,kl,neg_elbo,reconstruction,val_kl,val_neg_elbo,val_reconstruction\n"
        "0,1,90,89,1,80,79\n1,1,70,69,1,65,64\n1,1,71,70,1,66,65\n"
    )
    history = evaluation.read_history(str(csv_run))
    # A resumed run may log an epoch twice: the last row wins.
    assert history == evaluation.History([1, 2], [90.0, 71.0], [80.0, 66.0])
    for run, values in (("train", [90.0, 70.0]), ("validation", [80.0, 65.0])):
        with tf.summary.create_file_writer(str(events_run / "logs" / run)).as_default():
            for step, value in enumerate(values):
                tf.summary.scalar("epoch_neg_elbo", value, step=step)
    history = evaluation.read_history(str(events_run))
    assert history == evaluation.History([1, 2], [90.0, 70.0], [80.0, 65.0])
    assert evaluation.read_history(str(tmp_path)) is None


def test_iwae_callback_logs_every_n_epochs(tmp_path):
    keras.utils.set_random_seed(0)
    vae = model.build_vae(tiny_config(tmp_path), TINY_SHAPE)
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    test = tf.data.Dataset.from_tensor_slices(_tiny_images(20)).batch(8)
    csv_path = tmp_path / "iwae_history.csv"
    callback = evaluation.IWAECallback(
        test, 50, 2, str(tmp_path / "logs"), str(csv_path)
    )
    vae.fit(test, epochs=4, verbose=0, shuffle=False, callbacks=[callback])
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["1", "3"]
    assert all(0 < float(row["nll"]) < float(row["neg_elbo"]) for row in rows)
    assert float(rows[1]["nll"]) < float(rows[0]["nll"])  # Training helps.
    assert set(evaluation.read_iwae_history(str(csv_path))) == {2, 4}
    assert os.listdir(tmp_path / "logs" / "iwae")
    with pytest.raises(ValueError, match="every_n_epochs=0"):
        evaluation.IWAECallback(test, 50, 0, str(tmp_path), str(csv_path))


# --- The exported SavedModel -------------------------------------------------------


def test_the_saved_model_adapter_matches_the_vae_adapter(tmp_path):
    config = tiny_config(tmp_path, latent_dim=2, binarize=False)
    vae = model.build_vae(config, TINY_SHAPE)
    info = data.DatasetInfo("tiny_images", TINY_SHAPE, 96, 40, 16)
    exported = evaluation.SavedModelAdapter(
        saved_model.export(vae, config, info, str(tmp_path / "export"))
    )
    keras_path = evaluation.VAEAdapter(vae, jit_compile=False)
    batch, z = _tiny_images(12, seed=8), tf.random.normal([5, 2])
    seed = saved_model.fixed_seed(config.seed)
    assert (exported.latent_dim, exported.discrete) == (2, False)
    assert exported.config == config
    for chunk in (0, 3):
        np.testing.assert_allclose(
            exported.log_weights(batch, 30, seed, chunk),
            keras_path.log_weights(batch, 30, seed, chunk),
            rtol=1e-5,
        )
    np.testing.assert_allclose(
        exported.neg_elbo_terms(batch, None),
        keras_path.neg_elbo_terms(batch, seed),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        exported.encode_mean(batch), keras_path.encode_mean(batch), atol=1e-5
    )
    np.testing.assert_allclose(
        exported.decode_mean(z), keras_path.decode_mean(z), atol=1e-6
    )
    # uint8 pixels: float32 round-off may move one across a rounding boundary.
    np.testing.assert_allclose(
        exported.reconstruction_grid(batch).numpy().astype(int),
        keras_path.reconstruction_grid(batch).numpy().astype(int),
        atol=1,
    )
    np.testing.assert_allclose(
        exported.prior_samples(9, 1), keras_path.prior_samples(9, 1), atol=1e-6
    )


# --- The command line ------------------------------------------------------------


def _evaluate(*flags):
    return run_module("tfvae.evaluate", *flags)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run directory built by hand, on the prepared tiny_images dataset."""
    root = tmp_path_factory.mktemp("cli")
    config = tiny_config(root, latent_dim=3)
    _, info = data.prepare(config.dataset, config.data_dir, None)
    keras.utils.set_random_seed(0)
    vae = model.build_vae(config, info.image_shape)
    config_lib.save(config, config.model_dir)
    data.save_info(info, config.model_dir)
    vae.save_weights(os.path.join(config.model_dir, model.WEIGHTS_FILENAME))
    with open(os.path.join(config.model_dir, config_lib.HISTORY_FILENAME), "w") as f:
        f.write(
            "epoch,neg_elbo,kl,reconstruction,val_neg_elbo,val_kl,val_reconstruction\n"
        )
        f.write("0,50,1,49,48,1,47\n1,45,1,44,44,1,43\n")
    return config, info, vae


SWEEP_KEYS = {f"test_nll_k{k}" for k in (1, 10, 20)}


def test_cli_writes_metrics_pictures_and_tensorboard(tiny_run):
    config, _, _ = tiny_run
    result = _evaluate(
        f"--model_dir={config.model_dir}",
        "--num_importance_samples=20",
        "--samples_per_chunk=7",
        "--batch_size=16",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = os.path.join(config.model_dir, "eval")
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
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
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(out))
    assert "batch" in result.stdout  # The progress bar.


def test_cli_on_an_export_gives_bits_per_dim_for_categorical(tmp_path, tiny_run):
    config, info, _ = tiny_run
    config = config_lib.Config.from_dict(
        {**json.loads(config.to_json()), "likelihood": "categorical"}
    )
    vae = model.build_vae(config, info.image_shape)
    export = saved_model.export(vae, config, info, str(tmp_path / "export"))
    result = _evaluate(
        f"--export_dir={export}",
        f"--output_dir={tmp_path / 'eval'}",
        "--num_importance_samples=20",
        "--split=test[:16]",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_examples"] == 16
    assert SWEEP_KEYS <= set(metrics)
    for name in ("neg_elbo", "nll", "nll_k10"):
        np.testing.assert_allclose(
            metrics[f"test_{name}_bits_per_dim"],
            metrics[f"test_{name}"] / (math.prod(TINY_SHAPE) * math.log(2)),
        )
    assert "test_kl_bits_per_dim" not in metrics
    assert (tmp_path / "eval" / "latent_scatter.png").exists()
    assert os.listdir(export) == os.listdir(tmp_path / "export" / "1")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--num_importance_samples=0"], "--num_importance_samples must be at least 1"),
        (["--samples_per_chunk=-1"], "--samples_per_chunk must be at least 1"),
        (["--split=validation"], "--split=validation is not a split of tiny_images"),
    ],
)
def test_bad_flags_fail_fast_naming_the_flag(tiny_run, flags, message):
    config, _, _ = tiny_run
    result = _evaluate(f"--model_dir={config.model_dir}", *flags)
    assert result.returncode != 0
    assert message in result.stderr


def test_the_model_must_be_named_once(tmp_path):
    result = _evaluate()
    assert result.returncode != 0
    assert "Pass exactly one of --model_dir" in result.stderr
    result = _evaluate(f"--export_dir={tmp_path}")
    assert "--output_dir is required with --export_dir" in result.stderr


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
