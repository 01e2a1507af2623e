"""Tests for tfvae.table_signatures: a table VAE's export, served by column name.

One mixed table (real, positive, count, binary and categorical columns, with
missing cells, and column names that need the input-name rewrite) is trained
for an epoch and exported once per module. Its signatures are run in a fresh
process where `import tfvae` (and TFP) fails, through the session path TF
Serving takes, and by `saved_model_cli`, and checked against the Keras model.
"""

import json
import os

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from tests.conftest import run_python, saved_model_cli_run, session_signatures
from tfvae import (
    adapters,
    errors,
    noise,
    saved_model,
    signatures,
    table_model,
    table_signatures,
    tables,
)

SEED = 5
COLUMN_TYPES = {
    "temp (C)": "real",
    "price": "positive",
    "visits": "count",
    "rained": "binary",
    "2nd weather": "categorical",
}
# The columns' input names (table_signatures.input_name).
INPUT_NAMES = {
    "temp (C)": "temp__C_",
    "price": "price",
    "visits": "visits",
    "rained": "rained",
    "2nd weather": "c_2nd_weather",
}
WEATHER = ["fog", "rain", "sun"]
# Rows sent to the export: missing cells in every column, and the first row
# again as the last, to check that a row's outputs do not depend on its batch.
ROWS = {
    "temp__C_": np.array([12.5, np.nan, -3.0, 20.0, 12.5], np.float32),
    "price": np.array([1.5, 0.2, np.nan, 3.0, 1.5], np.float32),
    "visits": np.array([0, 4, 2, np.nan, 0], np.float32),
    "rained": np.array([1, 0, np.nan, 1, 1], np.float32),
    "c_2nd_weather": np.array([b"rain", b"", b"sun", b"fog", b"rain"]),
}
OTHER_INPUTS = {
    "num_samples": np.int32(6),
    "seed": np.array([3, 4], np.int64),
    "z": np.random.default_rng(1).normal(size=(3, 2)).astype(np.float32),
}


def mixed_frame(rows=64, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    temp = rng.normal(10.0, 5.0, size=rows)
    frame = pd.DataFrame(
        {
            "temp (C)": temp,
            "price": np.exp(rng.normal(size=rows)),
            "visits": rng.poisson(np.exp(1 + temp / 20)),
            "rained": rng.integers(0, 2, size=rows),
            "2nd weather": rng.choice(WEATHER, size=rows),
        }
    )
    frame.loc[::7, "temp (C)"] = np.nan
    frame.loc[::5, "2nd weather"] = None
    return frame


def as_cells(rows: dict) -> dict:
    """Returns export inputs as the Keras model's batch {column: cells}."""
    return {column: tf.constant(rows[name]) for column, name in INPUT_NAMES.items()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(vae, export path) of the mixed table, trained for one epoch."""
    keras.utils.set_random_seed(0)
    frame = mixed_frame()
    schema = tables.infer_schema(frame, column_types=COLUMN_TYPES)
    vae = table_model.build_table_vae(
        schema, seed=SEED, latent_dim=2, hidden_units=(16,)
    )
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    vae.fit(tables.table_batches(frame, schema, 16, shuffle_seed=0), verbose=0)
    path = saved_model.export(vae, str(tmp_path_factory.mktemp("export") / "table"))
    return vae, path


# Run in a fresh interpreter where tfvae and TFP cannot be imported: loads
# the export with TensorFlow alone and saves every output of every signature.
_LOAD_AND_RUN = """
import sys
sys.modules["tfvae"] = None
sys.modules["tensorflow_probability"] = None
import numpy as np
import tensorflow as tf

def main(path, inputs_path, out_path):
    inputs = dict(np.load(inputs_path))
    results = {}
    for name, signature in tf.saved_model.load(path).signatures.items():
        _, specs = signature.structured_input_signature
        outputs = signature(**{key: tf.constant(inputs[key]) for key in specs})
        for key, value in outputs.items():
            value = np.asarray(value.numpy())
            if value.dtype == object:
                # Fixed-width bytes: np.load refuses pickled object arrays.
                value = value.astype("S")
            results[f"{name}:{key}"] = value
    np.savez(out_path, **results)
"""


@pytest.fixture(scope="module")
def elsewhere(exported, tmp_path_factory):
    """{signature: {output: array}} of the export, run without tfvae."""
    _, path = exported
    workdir = tmp_path_factory.mktemp("elsewhere")
    inputs_path, out_path = workdir / "inputs.npz", workdir / "outputs.npz"
    np.savez(inputs_path, **ROWS, **OTHER_INPUTS)
    result = run_python(
        _LOAD_AND_RUN + f"\nmain({path!r}, {str(inputs_path)!r}, {str(out_path)!r})"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = {}
    with np.load(out_path) as saved:
        for key in saved.files:
            signature, output = key.split(":", 1)
            outputs.setdefault(signature, {})[output] = saved[key]
    return outputs


def _strings(codes: np.ndarray) -> np.ndarray:
    return np.array([b"" if np.isnan(c) else WEATHER[int(c)].encode() for c in codes])


def _assert_rows_match(actual: dict, rows: np.ndarray) -> None:
    """Checks outputs by input name against rows `[batch, columns]` (codes)."""
    assert set(actual) == set(INPUT_NAMES.values())
    for index, name in enumerate(INPUT_NAMES.values()):
        if name == "c_2nd_weather":
            np.testing.assert_array_equal(actual[name], _strings(rows[:, index]))
        else:
            np.testing.assert_allclose(actual[name], rows[:, index], rtol=1e-5)


@pytest.mark.parametrize(
    "column, name",
    [
        ("temp", "temp"),
        ("alcohol %", "alcohol__"),
        ("2nd", "c_2nd"),
        ("_id", "c__id"),
        ("class", "c_class"),
        ("seed", "c_seed"),
        ("Größe", "Gr__e"),
    ],
)
def test_input_names_are_columns_made_valid(column, name):
    assert table_signatures.input_name(column) == name


def test_an_export_refuses_columns_whose_input_names_collide(tmp_path):
    schema = {
        "columns": [
            {"name": "pH value", "type": "real", "mean": 0.0, "std": 1.0},
            {"name": "pH_value", "type": "real", "mean": 0.0, "std": 1.0},
        ]
    }
    vae = table_model.build_table_vae(schema, latent_dim=2, hidden_units=(4,))
    with pytest.raises(ValueError, match="'pH value' and 'pH_value' would both be"):
        saved_model.export(vae, str(tmp_path / "export"))
    assert not (tmp_path / "export").exists()


def test_signatures_take_one_input_per_column(elsewhere, loaded):
    assert set(loaded) == set(signatures.SIGNATURES)
    _, specs = loaded["score"].structured_input_signature
    assert {
        name: (spec.dtype, spec.shape.as_list()) for name, spec in specs.items()
    } == {
        name: (tf.string if name == "c_2nd_weather" else tf.float32, [None])
        for name in INPUT_NAMES.values()
    }
    assert set(elsewhere["log_weights"]) == {"log_weights"}
    metadata = elsewhere["metadata"]
    assert metadata["inputs"].tolist() == [n.encode() for n in INPUT_NAMES.values()]
    assert metadata["columns"].tolist() == [c.encode() for c in INPUT_NAMES]
    described = json.loads(metadata["json"].item())
    assert {c["input"]: c["name"] for c in described["columns"]} == {
        name: column for column, name in INPUT_NAMES.items()
    }
    assert described["image_shape"] is None
    # One row and sample decode to 10 parameters (2 real, 2 positive, 2
    # count, 1 binary, 3 categories) through 16 hidden units: a request's
    # 2**30 bytes at 20 bytes per value, 1_073_741_824 // (20 * 26).
    assert described["max_batch_samples"] == 2_064_888


def test_score_is_the_models_neg_elbo_split_by_column(elsewhere, exported):
    vae, _ = exported
    cells = as_cells(ROWS)
    x = vae.likelihood.observe(cells, None)
    row_seeds = noise.export_seeds(x, SEED)
    reconstruction, kl = vae.neg_elbo_terms(cells, row_seeds)
    score = elsewhere["score"]
    np.testing.assert_allclose(score["reconstruction"], reconstruction, rtol=1e-5)
    np.testing.assert_allclose(score["kl"], kl, rtol=1e-5)
    np.testing.assert_allclose(score["neg_elbo"], reconstruction + kl, rtol=1e-5)
    shares = np.stack(
        [score[f"reconstruction_{name}"] for name in INPUT_NAMES.values()], axis=1
    )
    np.testing.assert_allclose(shares.sum(axis=1), reconstruction, rtol=1e-5)
    # A missing cell costs nothing.
    assert (shares[np.isnan(x.numpy())] == 0).all()
    # The first row, also sent last, is scored the same in either place (to
    # float32's rounding: a batch's sums may run in another order).
    np.testing.assert_allclose(score["neg_elbo"][0], score["neg_elbo"][-1], rtol=1e-6)


def test_encode_and_log_weights_match_the_model(elsewhere, exported):
    vae, _ = exported
    cells = as_cells(ROWS)
    x, q = vae.observe_and_encode(cells, None)
    np.testing.assert_allclose(elsewhere["encode"]["mean"], q.mean(), rtol=1e-5)
    np.testing.assert_allclose(elsewhere["encode"]["stddev"], q.stddev(), rtol=1e-5)
    z_seeds = noise.example_seeds(x, OTHER_INPUTS["seed"])
    weights = vae.log_weights(x, q, int(OTHER_INPUTS["num_samples"]), z_seeds)
    np.testing.assert_allclose(
        elsewhere["log_weights"]["log_weights"], tf.transpose(weights), rtol=1e-5
    )


def test_reconstruct_keeps_present_cells_and_fills_missing_ones(elsewhere, exported):
    vae, _ = exported
    filled = table_model.impute(vae, as_cells(ROWS)).numpy()
    assert not np.isnan(filled).any()
    reconstructed = elsewhere["reconstruct"]
    _assert_rows_match(reconstructed, filled)
    for name, sent in ROWS.items():
        present = sent != b"" if sent.dtype.kind == "S" else ~np.isnan(sent)
        np.testing.assert_array_equal(reconstructed[name][present], sent[present])


def test_decode_gives_each_columns_mean(elsewhere, exported):
    vae, _ = exported
    _assert_rows_match(elsewhere["decode"], vae.decode_mean(OTHER_INPUTS["z"]).numpy())


def test_sample_draws_valid_rows_from_its_seed(elsewhere, loaded):
    drawn = elsewhere["sample"]
    assert {len(v) for v in drawn.values()} == {OTHER_INPUTS["num_samples"]}
    assert set(drawn["c_2nd_weather"]) <= {w.encode() for w in WEATHER}
    assert (drawn["price"] > 0).all()
    assert (drawn["visits"] >= 0).all()
    np.testing.assert_array_equal(drawn["visits"], np.round(drawn["visits"]))
    assert set(drawn["rained"]) <= {0.0, 1.0}
    again = loaded["sample"](
        num_samples=tf.constant(OTHER_INPUTS["num_samples"]),
        seed=tf.constant(OTHER_INPUTS["seed"]),
    )
    for name, value in again.items():
        np.testing.assert_array_equal(value.numpy(), drawn[name], err_msg=name)


@pytest.fixture(scope="module")
def loaded(exported):
    """The export's signatures, loaded in this process."""
    _, path = exported
    return tf.saved_model.load(path).signatures


@pytest.fixture(scope="module")
def session_run(exported):
    """run(signature, feeds) -> outputs, TF Serving's path (conftest)."""
    _, path = exported
    with session_signatures(path) as run:
        yield run


BAD_ROWS = {
    "unseen category": (
        {"c_2nd_weather": np.array([b"rain", b"hail", b"sun", b"fog", b""])},
        r"Column `2nd weather` holds a category the model never saw:.*hail",
    ),
    "negative price": (
        {"price": np.array([1, -2, 1, 1, 1], np.float32)},
        r"Column `price` is positive but holds.*-2",
    ),
    "columns of different lengths": (
        {"visits": np.array([1, 2], np.float32)},
        "every column must hold one cell per row: visits",
    ),
}


@pytest.mark.parametrize("bad", BAD_ROWS)
def test_bad_rows_are_refused_naming_the_column(bad, loaded, session_run):
    change, message = BAD_ROWS[bad]
    feeds = {**ROWS, **change}
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        loaded["score"](**{k: tf.constant(v) for k, v in feeds.items()})
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        session_run("score", feeds)


def test_missing_extra_and_mistyped_columns_are_refused(loaded):
    score = loaded["score"]
    rows = {k: tf.constant(v) for k, v in ROWS.items()}
    with pytest.raises(TypeError, match="missing a required argument: 'price'"):
        score(**{k: v for k, v in rows.items() if k != "price"})
    with pytest.raises(TypeError, match="unexpected keyword argument 'wind'"):
        score(**rows, wind=tf.constant([1.0] * 5))
    with pytest.raises(tf.errors.InvalidArgumentError, match="string tensor but is a"):
        score(**{**rows, "c_2nd_weather": tf.constant([1.0] * 5)})


def test_warmup_requests_cover_every_signature_and_run(exported, loaded):
    _, path = exported
    records = tf.data.TFRecordDataset(
        os.path.join(path, "assets.extra", saved_model.WARMUP_FILENAME)
    )
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in records]
    assert sorted(
        log.predict_log.request.model_spec.signature_name for log in logs
    ) == (sorted(signatures.SIGNATURES))
    for log in logs:
        request = log.predict_log.request
        feeds = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        outputs = loaded[request.model_spec.signature_name](
            **{k: tf.constant(v) for k, v in feeds.items()}
        )
        if request.model_spec.signature_name != "metadata":
            # Batch 1 in, batch 1 out (one sample for sample).
            assert {v.shape[0] for v in outputs.values()} == {1}


def test_saved_model_cli_calls_score_with_named_inputs(elsewhere, exported, tmp_path):
    _, path = exported
    # From .npy files: --input_exprs takes Python literals only, which have
    # no NaN.
    for name, values in ROWS.items():
        np.save(tmp_path / f"{name}.npy", values)
    inputs = ";".join(f"{name}={tmp_path / name}.npy" for name in ROWS)
    out = tmp_path / "out"
    result = saved_model_cli_run(path, "score", out, "--inputs", inputs)
    assert result.returncode == 0, result.stderr[-3000:]
    for output, expected in elsewhere["score"].items():
        file = out / f"{output}.npy"
        np.testing.assert_allclose(np.load(file), expected, rtol=1e-5, err_msg=output)


def test_a_conditional_export_takes_labels(tmp_path):
    schema = tables.infer_schema(mixed_frame(16), column_types=COLUMN_TYPES)
    vae = table_model.build_table_vae(
        schema,
        seed=SEED,
        conditional=True,
        num_classes=3,
        latent_dim=2,
        hidden_units=(4,),
    )
    served = tf.saved_model.load(saved_model.export(vae, str(tmp_path))).signatures
    rows = {k: tf.constant(v) for k, v in ROWS.items()}
    labels = tf.constant([0, 2, 1, 1, 0], tf.int64)
    assert set(served["encode"](**rows, labels=labels)) == {"mean", "stddev", "z"}
    score = served["score"](**rows, labels=labels)
    cells = as_cells(ROWS)
    row_seeds = noise.export_seeds(vae.likelihood.observe(cells, None), SEED)
    reconstruction, kl = vae.neg_elbo_terms(cells, row_seeds, labels)
    np.testing.assert_allclose(score["reconstruction"], reconstruction, rtol=1e-5)
    np.testing.assert_allclose(score["kl"], kl, rtol=1e-5)
    drawn = served["sample"](
        num_samples=tf.constant(2),
        seed=tf.constant([1, 2], tf.int64),
        labels=labels[:2],
    )
    assert drawn["visits"].shape == [2]
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="one class per image or row"
    ):
        served["score"](**rows, labels=labels[:2])


def test_evaluation_refuses_a_table_export_naming_the_way(exported):
    _, path = exported
    with pytest.raises(errors.UsageError, match="table VAE's export.*--model_dir"):
        adapters.SavedModelAdapter(path)
