"""Tests for tfvae.table_model: building, training and evaluating a table VAE."""

import dataclasses
import time

import keras
import numpy as np
import pandas as pd
import pytest
import scipy.optimize
import scipy.stats
import tensorflow as tf

from tfvae import (
    errors,
    evaluation,
    model_settings,
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


def _fitted(frame, epochs=3, run_eagerly=False, **settings):
    keras.utils.set_random_seed(0)
    schema = tables.infer_schema(frame)
    vae = table_model.build_table_vae(
        schema, **{"latent_dim": 2, "hidden_units": (16,), **settings}
    )
    vae.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=run_eagerly)
    history = vae.fit(
        tables.table_batches(frame, schema, 16, shuffle_seed=0),
        epochs=epochs,
        verbose=0,
    )
    return vae, schema, history


@pytest.fixture(scope="module")
def fitted_mixed():
    """(vae, schema, frame): one VAE of `_mixed()`, trained once for the module."""
    frame = _mixed()
    vae, schema, _ = _fitted(frame)
    return vae, schema, frame


def test_impute_fills_only_the_missing_cells(fitted_mixed):
    vae, schema, frame = fitted_mixed
    batch = tables.table_columns(frame[:16], schema)
    x = vae.likelihood.observe(batch, None).numpy()
    filled = table_model.impute(vae, batch).numpy()
    missing = np.isnan(x)
    assert missing.any() and not np.isnan(filled).any()
    np.testing.assert_array_equal(filled[~missing], x[~missing])
    kind = [c["name"] for c in schema["columns"]].index("kind")
    codes = filled[:, kind]
    assert set(codes) <= set(range(len(schema["columns"][kind]["categories"])))
    # A binary cell is filled with a value it can hold, not a share.
    batch["binary"] = np.full(16, np.nan, np.float32)
    binary = [c["name"] for c in schema["columns"]].index("binary")
    assert set(table_model.impute(vae, batch).numpy()[:, binary]) <= {0.0, 1.0}


@pytest.mark.parametrize(
    "count_likelihood", ["poisson", "zero_inflated_negative_binomial"]
)
def test_count_options_train(count_likelihood):
    _, _, history = _fitted(_mixed(), count_likelihood=count_likelihood)
    assert np.all(np.isfinite(history.history["loss"]))


def test_saves_and_loads(fitted_mixed, tmp_path):
    vae, schema, frame = fitted_mixed
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


def test_refusals(fitted_mixed):
    table_vae, schema, _ = fitted_mixed
    with pytest.raises(errors.UsageError, match=r"Received: latent_dim=\(0,\)"):
        table_model.build_table_vae(schema, latent_dim=0)
    with pytest.raises(errors.UsageError, match="posterior must be one of diag, full"):
        table_model.build_table_vae(schema, posterior="flow")
    with pytest.raises(errors.UsageError, match="tfvae.evaluate_table"):
        evaluation.evaluate(table_vae, _mixed())
    cells = tables.table_columns(_mixed(), schema)
    without_kind = {k: v for k, v in cells.items() if k != "kind"}
    with pytest.raises(ValueError, match=r"Missing: \['kind'\]"):
        table_vae.evaluate(
            tf.data.Dataset.from_tensor_slices(without_kind).batch(8), verbose=0
        )


def test_xla_trains_on_rows_and_refuses_cells_naming_the_fix(fitted_mixed):
    plain, schema, frame = fitted_mixed  # Keras's "auto": no XLA on a CPU.
    cells = tf.data.Dataset.from_tensor_slices(tables.table_columns(frame, schema))
    xla = table_model.build_table_vae(schema, latent_dim=2, hidden_units=(16,))
    xla.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True)
    history = xla.fit(tables.table_batches(frame, schema, 16), epochs=1, verbose=0)
    assert xla.jit_compile and np.isfinite(history.history["loss"][0])
    with pytest.raises(ValueError, match="give it rows, as `tfvae.table_batches"):
        xla.evaluate(cells.batch(8), verbose=0)
    # Without XLA, the step takes cells too, and checks them.
    assert not plain.jit_compile
    assert np.isfinite(plain.evaluate(cells.batch(8), verbose=0)[0])
    # Rows of another width, or not float32, are refused by name.
    with pytest.raises(ValueError, match=r"Rows hold the table's 5 columns"):
        plain.evaluate(np.zeros((8, 4), np.float32), verbose=0)


# Each member of the model family but the default (which the tests above
# train), with the settings that make it.
FAMILY = {
    "iwae_dreg": {"objective": "iwae", "train_samples": 3, "gradient": "dreg"},
    "beta_free_bits": {"beta": 0.5, "free_bits": 0.1, "train_samples": 2},
    "full_posterior": {"posterior": "full"},
    "mog": {"prior": "mog", "kl": "monte_carlo", "prior_components": 3},
    "vamp": {"prior": "vamp", "kl": "monte_carlo", "prior_components": 3},
    "two_layers": {"latent_dim": (3, 2), "kl": "monte_carlo"},
}


@pytest.mark.parametrize("member", FAMILY)
def test_each_family_member_builds_and_trains(member):
    # Eagerly: tracing each member's step would take most of the time, and
    # the steps are the images' own, traced by their tests (and by the
    # default member's here).
    frame = _mixed(rows=32)
    vae, _, history = _fitted(frame, epochs=1, run_eagerly=True, **FAMILY[member])
    assert np.isfinite(history.history["loss"][0])
    assert vae.latent_dims == FAMILY[member].get("latent_dim", (2,))
    assert (vae.objective, vae.train_samples) == (
        FAMILY[member].get("objective", "elbo"),
        FAMILY[member].get("train_samples", 1),
    )


def test_the_vamp_prior_of_a_table_lives_where_the_encoder_input_does():
    frame = _mixed(rows=32)
    schema = tables.infer_schema(frame)
    vae = table_model.build_table_vae(
        schema, latent_dim=2, hidden_units=(16,), **FAMILY["vamp"]
    )
    batch = next(iter(tables.table_batches(frame, schema, 4)))
    x = vae.likelihood.encoder_input(vae.likelihood.observe(batch, None))
    pseudo = vae.prior.pseudo_inputs()
    assert pseudo.shape == (3, x.shape[-1])
    # Standardized cells are not squashed into [0, 1] as pixels are.
    assert not vae.prior.bounded and (pseudo.numpy() < 0).any()


def test_a_conditional_table_vae_takes_rows_and_labels():
    frame = _mixed(rows=32)
    labels = np.random.default_rng(0).integers(0, 3, len(frame))
    schema = tables.infer_schema(frame)
    keras.utils.set_random_seed(0)
    vae = table_model.build_table_vae(
        schema, num_classes=3, conditional=True, latent_dim=2, hidden_units=(16,)
    )
    vae.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)
    rows = tables.table_batches(frame, schema, 16)
    pairs = tf.data.Dataset.zip(
        (rows, tf.data.Dataset.from_tensor_slices(labels).batch(16))
    )
    history = vae.fit(pairs, epochs=1, verbose=0)
    assert vae.num_classes == 3 and np.isfinite(history.history["loss"][0])
    with pytest.raises(ValueError, match="needs each row's class"):
        vae.evaluate(rows, verbose=0)
    with pytest.raises(errors.UsageError, match="needs the number of classes"):
        table_model.build_table_vae(schema, conditional=True)


def test_the_defaults_are_the_model_settings():
    schema = tables.infer_schema(_mixed(rows=16))
    vae = table_model.build_table_vae(schema)
    defaults = model_settings.ModelSettings()
    dense = vae.encoder.body.layers[0]
    assert vae.latent_dims == defaults.latent_dim
    assert (dense.units,) == defaults.hidden_units
    assert dense.activation.__name__ == defaults.activation
    assert vae.likelihood.count_likelihood == defaults.count_likelihood


@pytest.mark.parametrize(
    "setting",
    [
        {"likelihood": "gaussian"},
        {"binarize": False},
        {"gaussian_scale": 0.1},
        {"mixture_components": 3},
        {"network": "conv"},
        {"conv_filters": (8,)},
    ],
)
def test_image_only_settings_are_refused(setting):
    schema = tables.infer_schema(_mixed(rows=16))
    ((name, value),) = setting.items()
    with pytest.raises(errors.UsageError) as error:
        table_model.build_table_vae(schema, **setting)
    message = str(error.value)
    assert message.startswith(f"{name} applies to image VAEs; a table's likelihood")
    assert "comes from its schema" in message and f"{name}={value!r}" in message


def test_unknown_settings_are_refused_listing_the_valid_ones():
    schema = tables.infer_schema(_mixed(rows=16))
    with pytest.raises(errors.UsageError) as error:
        table_model.build_table_vae(schema, latnt_dim=2)
    assert "Unknown model settings ['latnt_dim']" in str(error.value)
    assert all(
        f.name in str(error.value)
        for f in dataclasses.fields(model_settings.ModelSettings)
    )
    # The one network a table takes may be named.
    vae = table_model.build_table_vae(
        schema, network="mlp", latent_dim=2, hidden_units=(8,)
    )
    assert vae.latent_dims == (2,)


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
    nll = table_evaluation.evaluate_table(vae, test, num_samples=100)["nll"]
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
    nll = table_evaluation.evaluate_table(vae, test, num_samples=100)["nll"]
    print(f"VAE {nll:.3f}, independent negative binomials {independent:.3f}")
    assert nll < independent - 1.0


def test_sample_rows_are_rows_in_the_datas_units_and_categories(fitted_mixed):
    vae, schema, _ = fitted_mixed
    seed = tf.constant([0, 1], tf.int64)
    rows = table_model.sample_rows(vae, 200, seed).numpy()
    assert rows.shape == (200, 5) and not np.isnan(rows).any()
    kinds = [c["type"] for c in schema["columns"]]
    counts = rows[:, kinds.index("count")]
    assert np.all(counts >= 0) and np.all(counts == np.round(counts))
    assert set(np.unique(rows[:, kinds.index("binary")])) <= {0.0, 1.0}
    assert set(np.unique(rows[:, kinds.index("categorical")])) <= {0.0, 1.0, 2.0}
    # The same rows for the same seed.
    np.testing.assert_array_equal(rows, table_model.sample_rows(vae, 200, seed))
