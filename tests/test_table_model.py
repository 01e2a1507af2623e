"""Tests for tfvae.table_model: building, training and evaluating a table VAE."""

import time

import keras
import numpy as np
import pandas as pd
import pytest
import scipy.optimize
import scipy.stats
import tensorflow as tf

from tfvae import (
    builder,
    errors,
    evaluation,
    saved_model,
    table_evaluation,
    table_model,
    tables,
)


def _mixed(rows=64, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "real": rng.normal(size=rows),
            "positive": np.exp(rng.normal(size=rows)),
            "count": rng.poisson(3.0, size=rows),
            "binary": rng.integers(0, 2, size=rows),
            "kind": rng.choice(["a", "b", "c"], size=rows),
        }
    )
    frame.loc[::7, "real"] = np.nan
    frame.loc[::5, "kind"] = None
    return frame


def _fitted(frame, **settings):
    keras.utils.set_random_seed(0)
    schema = tables.infer_schema(frame)
    vae = table_model.build_table_vae(
        schema, latent_dim=2, hidden_units=(16,), **settings
    )
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = vae.fit(
        tables.table_batches(frame, schema, 16, shuffle_seed=0), epochs=3, verbose=0
    )
    return vae, schema, history


def test_fits_and_evaluates_a_mixed_table_with_missing_cells():
    frame = _mixed()
    vae, schema, history = _fitted(frame)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    figures = table_evaluation.evaluate_table(vae, frame, num_samples=20, batch_size=32)
    assert figures["nll"] <= figures["nll_k1"] + 1e-4
    assert figures["neg_elbo"] == pytest.approx(
        figures["reconstruction"] + figures["kl"]
    )
    assert set(figures) >= {f"log_lik/{c['name']}" for c in schema["columns"]}
    assert all(np.isfinite(v) for v in figures.values())
    # The same figures for the same seed, from a DataFrame or its batches.
    again = table_evaluation.evaluate_table(
        vae, tables.table_batches(frame, schema, 32), num_samples=20
    )
    assert again["nll"] == pytest.approx(figures["nll"])


def test_impute_fills_only_the_missing_cells():
    frame = _mixed()
    vae, schema, _ = _fitted(frame)
    batch = next(iter(tables.table_batches(frame, schema, 16)))
    x = vae.likelihood.observe(batch, None).numpy()
    filled = table_model.impute(vae, batch).numpy()
    missing = np.isnan(x)
    assert missing.any() and not np.isnan(filled).any()
    np.testing.assert_array_equal(filled[~missing], x[~missing])
    kind = [c["name"] for c in schema["columns"]].index("kind")
    codes = filled[:, kind]
    assert set(codes) <= set(range(len(schema["columns"][kind]["categories"])))


@pytest.mark.parametrize(
    "count_likelihood", ["poisson", "zero_inflated_negative_binomial"]
)
def test_count_options_train(count_likelihood):
    _, _, history = _fitted(_mixed(), count_likelihood=count_likelihood)
    assert np.all(np.isfinite(history.history["loss"]))


def test_saves_and_loads(tmp_path):
    frame = _mixed()
    vae, schema, _ = _fitted(frame)
    path = str(tmp_path / "table.keras")
    vae.save(path)
    loaded = keras.models.load_model(path)
    batch = next(iter(tables.table_batches(frame, schema, 8)))
    z = tf.zeros([8, 2])
    np.testing.assert_allclose(
        loaded.decode(z).log_prob(loaded.likelihood.observe(batch, None)),
        vae.decode(z).log_prob(vae.likelihood.observe(batch, None)),
        rtol=1e-6,
    )
    assert loaded.likelihood.schema == vae.likelihood.schema


def test_refusals():
    schema = tables.infer_schema(_mixed())
    with pytest.raises(ValueError, match="latent_dim must be a positive integer"):
        table_model.build_table_vae(schema, latent_dim=0)
    with pytest.raises(ValueError, match="posterior must be one of"):
        table_model.build_table_vae(schema, posterior="flow")
    image_vae = builder.build_vae((4, 4, 1), latent_dim=2, hidden_units=(8,))
    with pytest.raises(ValueError, match="evaluate_table takes a table VAE"):
        table_evaluation.evaluate_table(image_vae, _mixed())
    table_vae = table_model.build_table_vae(schema, latent_dim=2, hidden_units=(8,))
    table_vae.compile(optimizer="adam")
    with pytest.raises(errors.UsageError, match="tfvae.evaluate_table"):
        evaluation.evaluate(table_vae, _mixed())
    with pytest.raises(errors.UsageError, match="does not export table VAEs yet"):
        saved_model.export(table_vae, "unused")
    with pytest.raises(ValueError, match=r"Missing: \['kind'\]"):
        table_vae.evaluate(
            tables.table_batches(_mixed(), schema, 8).map(
                lambda b: {k: v for k, v in b.items() if k != "kind"}
            ),
            verbose=0,
        )


@pytest.mark.slow
def test_linear_gaussian_factor_model_is_within_a_nat_of_exact():
    # x = W z + noise, 20 columns and 5 factors: log p(x) is a multivariate
    # normal's, so the IWAE bound can be checked against the exact figure.
    rng = np.random.default_rng(0)
    columns, factors = 20, 5
    weights = rng.normal(size=(columns, factors))
    noise = rng.uniform(0.2, 1.0, size=columns)

    def draw(rows):
        z = rng.normal(size=(rows, factors))
        cells = z @ weights.T + rng.normal(size=(rows, columns)) * np.sqrt(noise)
        return pd.DataFrame(cells, columns=[f"x{i}" for i in range(columns)])

    train, test = draw(5000), draw(1000)
    cov = weights @ weights.T + np.diag(noise)
    exact = -scipy.stats.multivariate_normal(np.zeros(columns), cov).logpdf(test)
    mean, std = train.to_numpy().mean(0), train.to_numpy().std(0)
    independent = -scipy.stats.norm(mean, std).logpdf(test).sum(axis=1)
    keras.utils.set_random_seed(0)
    schema = tables.infer_schema(train)
    vae = table_model.build_table_vae(
        schema, latent_dim=factors, hidden_units=(64,), activation="tanh"
    )
    vae.compile(optimizer=keras.optimizers.Adam(3e-3))
    start = time.time()
    vae.fit(
        tables.table_batches(train, schema, 100, shuffle_seed=0), epochs=30, verbose=0
    )
    seconds = time.time() - start
    nll = table_evaluation.evaluate_table(vae, test, num_samples=1000)["nll"]
    print(
        f"exact {exact.mean():.3f}, VAE {nll:.3f}, independent "
        f"{independent.mean():.3f} nats per row; trained in {seconds:.0f} s"
    )
    assert exact.mean() - 0.05 < nll < exact.mean() + 1.0
    assert nll < independent.mean() - 5.0


@pytest.mark.slow
def test_negative_binomial_vae_beats_independent_columns_on_correlated_counts():
    # Counts whose log-means share 2 factors: each column alone (a negative
    # binomial at its maximum-likelihood fit) misses what the others say.
    rng = np.random.default_rng(0)
    columns, factors, total_count = 10, 2, 3.0
    weights = rng.normal(size=(columns, factors)) * 0.8
    offsets = rng.uniform(0.5, 2.0, size=columns)

    def draw(rows):
        mean = np.exp(rng.normal(size=(rows, factors)) @ weights.T + offsets)
        cells = rng.negative_binomial(total_count, total_count / (total_count + mean))
        return pd.DataFrame(cells, columns=[f"n{i}" for i in range(columns)])

    train, test = draw(3000), draw(1000)

    def fitted_nll(name):
        def nll(log_params, cells):
            count, mean = np.exp(log_params)
            return -scipy.stats.nbinom(count, count / (count + mean)).logpmf(cells)

        cells = train[name].to_numpy()
        start = [0.0, np.log(cells.mean())]
        best = scipy.optimize.minimize(
            lambda p: nll(p, cells).sum(), start, method="Nelder-Mead"
        ).x
        return nll(best, test[name].to_numpy()).mean()

    independent = sum(fitted_nll(name) for name in train.columns)
    keras.utils.set_random_seed(0)
    schema = tables.infer_schema(train)
    assert {c["type"] for c in schema["columns"]} == {"count"}
    vae = table_model.build_table_vae(
        schema, latent_dim=factors, hidden_units=(64,), activation="tanh"
    )
    vae.compile(optimizer=keras.optimizers.Adam(3e-3))
    vae.fit(
        tables.table_batches(train, schema, 100, shuffle_seed=0), epochs=30, verbose=0
    )
    nll = table_evaluation.evaluate_table(vae, test, num_samples=1000)["nll"]
    print(f"VAE {nll:.3f}, independent negative binomials {independent:.3f}")
    # Measured: 26.51 against 28.71 nats per row.
    assert nll < independent - 1.0
