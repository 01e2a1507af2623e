"""Tests for tfvae.iwae: the IWAE bound, its chunked loop, and IWAECallback.

The bound is checked against a model whose log p(x) is known exactly; the
loop on a tiny VAE, through `adapters.VAEAdapter`.
"""

import csv
import glob
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tests.conftest import tiny_images, tiny_vae
from tfvae import adapters, callbacks, history, iwae, run_dir

tfd = tfp.distributions


# --- The bound ----------------------------------------------------------------


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
        bounds = iwae.logmeanexp_prefixes(tf.split(log_w, 10), ks)
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
        bounds = iwae.logmeanexp_prefixes(tf.split(log_w, sizes), ks)
        for k in ks:
            expected = tf.reduce_logsumexp(log_w[:k], 0) - math.log(k)
            np.testing.assert_allclose(bounds[k], expected, rtol=1e-6)


def test_logmeanexp_reads_chunks_only_as_far_as_it_needs_and_refuses_too_few():
    def chunks():
        yield tf.zeros([10, 2])
        raise AssertionError("read past the largest k")

    assert set(iwae.logmeanexp_prefixes(chunks(), (1, 10))) == {1, 10}
    with pytest.raises(ValueError, match="fewer than k=20"):
        iwae.logmeanexp_prefixes([tf.zeros([10, 2])], (5, 20))


class _FixedWeights:
    """An evaluable whose log-weights are fixed: row r's are r + the sample index."""

    def __init__(self):
        self.calls = []

    def log_weights(self, batch, num_samples, seed, chunk, labels):
        self.calls.append((seed.numpy().tolist(), chunk, num_samples))
        samples = tf.range(num_samples, dtype=tf.float32)[:, None]
        return samples + chunk * 4 + tf.cast(batch, tf.float32)[None]


def test_batch_bounds_yields_each_rows_bound_with_its_batch_seed():
    evaluable = _FixedWeights()
    dataset = tf.data.Dataset.range(5).batch(2)
    found = list(iwae.batch_bounds(evaluable, dataset, 10, 4, seed=7))
    assert [len(batch) for batch, *_ in found] == [2, 2, 1]
    assert [seed.numpy().tolist() for _, _, seed, _ in found] == [
        [7, 0],
        [7, 1],
        [7, 2],
    ]
    # Chunks of 4, 4 and 2 samples: each row's weights r + 0..9.
    assert evaluable.calls[:3] == [([7, 0], 0, 4), ([7, 0], 1, 4), ([7, 0], 2, 2)]
    rows = np.concatenate([bounds[10] for *_, bounds in found])
    expected = [math.log(np.mean(np.exp(r + np.arange(10.0)))) for r in range(5)]
    np.testing.assert_allclose(rows, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="dataset to evaluate is empty"):
        list(iwae.batch_bounds(evaluable, dataset.take(0), 10, 4, seed=7))


def test_sweep_and_chunk_sizes():
    assert iwae.sweep(5000) == (1, 10, 100, 1000, 5000)
    assert iwae.sweep(300) == (1, 10, 100, 300)
    assert iwae.sweep(1) == (1,)
    assert iwae.chunk_sizes(1200, 500) == [500, 500, 200]
    with pytest.raises(ValueError, match="num_samples=0"):
        iwae.sweep(0)


# --- The loop, on a tiny VAE ----------------------------------------------------


@pytest.fixture(scope="module")
def strong_decoder_vae(tmp_path_factory):
    """An untrained tiny VAE whose decoder depends strongly on z.

    Its q(z|x) is then far from the true posterior, so the IWAE bound moves
    by several nats between k=1 and k=1000, well above the Monte Carlo noise.
    """
    keras.utils.set_random_seed(0)
    vae = tiny_vae(tmp_path_factory.mktemp("vae"), latent_dim=2)
    for weight in vae.decoder.trainable_weights:
        if "kernel" in weight.path:
            weight.assign(2.0 * weight)
    return vae


def test_iwae_is_below_the_neg_elbo_and_falls_with_k(strong_decoder_vae):
    batches = tf.data.Dataset.from_tensor_slices(tiny_images(32, seed=1)).batch(16)
    adapter = adapters.VAEAdapter(strong_decoder_vae)
    runs = [
        iwae.evaluate_batches(adapter, batches, 1000, 300, seed=seed)
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
    strong_decoder_vae,
):
    adapter = adapters.VAEAdapter(strong_decoder_vae)
    batch = tiny_images(4, seed=2)
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
    bounds = iwae.logmeanexp_prefixes(chunks, (10, 200))
    np.testing.assert_allclose(
        bounds[200], tf.reduce_logsumexp(all_log_w, 0) - math.log(200), rtol=1e-6
    )
    # The k=10 figure does not depend on how many samples were asked for.
    batches = tf.data.Dataset.from_tensors(batch)
    small, large = (
        iwae.evaluate_batches(adapter, batches, k, 50, seed=3) for k in (10, 200)
    )
    assert small["nll_k10"] == large["nll_k10"]


def test_xla_estimates_the_same_bound(tmp_path):
    # XLA on CPU draws other stateless random numbers than TensorFlow's
    # kernels, so the two agree in distribution, not number for number (and
    # binarize differently: gray observations keep x the same).
    vae = tiny_vae(tmp_path, binarize=False)
    batch, seed = tiny_images(4), tf.constant([1, 2], tf.int64)
    plain, xla = (
        adapters.VAEAdapter(vae, jit_compile=jit).log_weights(batch, 4000, seed, 1)
        for jit in (False, True)
    )
    standard_error = np.std(plain, axis=0) / np.sqrt(4000)
    assert np.all(
        np.abs(np.mean(plain, axis=0) - np.mean(xla, axis=0)) < 5 * standard_error
    )


def test_split_metrics_names_every_figure_and_adds_bits_when_discrete():
    means = {"neg_elbo": 10.0, "reconstruction": 9.0, "kl": 1.0, "nll": 8.0}
    shape = (2, 2, 1)
    assert iwae.split_metrics(means, "test", shape, discrete=False) == {
        "test_neg_elbo": 10.0,
        "test_reconstruction": 9.0,
        "test_kl": 1.0,
        "test_nll": 8.0,
    }
    metrics = iwae.split_metrics(means, "train", shape, discrete=True)
    assert set(metrics) - set(iwae.split_metrics(means, "train", shape, False)) == {
        "train_neg_elbo_bits_per_dim",
        "train_nll_bits_per_dim",
    }
    np.testing.assert_allclose(
        metrics["train_nll_bits_per_dim"], 8.0 / (4 * math.log(2))
    )


# --- During training ---------------------------------------------------------------


def _scalars(log_dir):
    """Returns {tag: {step: value}} of the scalar summaries in `log_dir`."""
    values = {}
    for path in glob.glob(f"{log_dir}/events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                values.setdefault(value.tag, {})[event.step] = float(
                    tf.make_ndarray(value.tensor)
                )
    return values


def test_iwae_callback_logs_every_n_epochs(tmp_path):
    keras.utils.set_random_seed(0)
    vae = tiny_vae(tmp_path)
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    test = tf.data.Dataset.from_tensor_slices(tiny_images(20)).batch(8)
    callback = callbacks.IWAECallback(test, 50, 2, str(tmp_path))
    vae.fit(test, epochs=4, verbose=0, shuffle=False, callbacks=[callback])
    with open(run_dir.path(str(tmp_path), run_dir.IWAE_HISTORY)) as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["1", "3"]
    assert all(0 < float(row["nll"]) < float(row["neg_elbo"]) for row in rows)
    assert float(rows[1]["nll"]) < float(rows[0]["nll"])  # Training helps.
    assert set(history.read_iwae_history(str(tmp_path))) == {2, 4}
    # TensorBoard gets the same numbers, at Keras's step = epoch index.
    scalars = _scalars(tmp_path / run_dir.LOGS / "iwae")
    assert scalars["epoch_nll_k50"] == pytest.approx(
        {1: float(rows[0]["nll"]), 3: float(rows[1]["nll"])}
    )
    assert set(scalars["epoch_neg_elbo"]) == {1, 3}
    with pytest.raises(ValueError, match="every_n_epochs=0"):
        callbacks.IWAECallback(test, 50, 0, str(tmp_path))
