"""Tests for tfvae.saved_model and the `python -m tfvae.export` command line.

Exports are checked the ways they get used: loaded by `tf.saved_model.load` in
a fresh process that has no tfvae, through the SignatureDef/session path TF
Serving takes (saved_model_cli, and session feeds that skip Python's shape
checks, as TF Serving's C++ Session::Run does), and by replaying the warmup
records. The command line runs in subprocesses only: `tfvae.export` and
`tfvae.train` define the same absl flags and must never share a process.
"""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from tests.conftest import (
    TINY_SHAPE,
    run_command,
    run_module,
    run_python,
    saved_model_cli,
    saved_model_cli_run,
    session_signatures,
    tiny_config,
)
from tfvae import (
    builder,
    data,
    evaluation,
    images,
    likelihoods,
    model,
    noise,
    parts,
    posteriors,
    priors,
    run_dir,
    saved_model,
    signatures,
)
from tfvae import config as config_lib

LATENT_DIM = 3
SEED = 11
INFO = data.DatasetInfo("tiny_images", TINY_SHAPE, 96, 40, 16)
# Posterior x likelihood combinations; the last one also covers the
# Monte Carlo KL, which makes score depend on encode's z.
CASES = {
    "diag-bernoulli": dict(posterior="diag", likelihood="bernoulli", binarize=True),
    "full-gaussian": dict(posterior="full", likelihood="gaussian"),
    "diag-categorical": dict(posterior="diag", likelihood="categorical"),
    "diag-logistic_mixture": dict(
        posterior="diag", likelihood="logistic_mixture", mixture_components=2
    ),
    "full-continuous_bernoulli": dict(
        posterior="full", likelihood="continuous_bernoulli", kl="monte_carlo"
    ),
}
SIGNATURE_INPUTS = {
    "serving_default": ("images",),
    "encode": ("images",),
    "decode": ("z",),
    "sample": ("num_samples", "seed"),
    "score": ("images",),
    "reconstruct": ("images",),
    "log_weights": ("images", "num_samples", "seed"),
    "metadata": (),
}
_RNG = np.random.default_rng(0)
INPUTS = {
    "images": _RNG.integers(0, 256, (5, *TINY_SHAPE), dtype=np.uint8),
    "z": _RNG.normal(size=(4, LATENT_DIM)).astype(np.float32),
    "num_samples": np.int32(6),
    "seed": np.array([3, 4], np.int64),
}


def expected_outputs(
    vae: model.VAE, config: config_lib.Config, signature: str, inputs: dict
) -> dict[str, np.ndarray]:
    """Returns what `signature` of an export of `vae` must return for `inputs`.

    Written from the in-memory model and the seeds export/README.md
    documents (one per image, from its pixels), independently of how the
    export computes them.
    """
    if "images" in inputs:
        image_seeds = noise.example_seeds(
            inputs["images"], noise.seed(config.seed, noise.EXPORT)
        )
        observe_seeds, z_seeds = noise.split_seed(image_seeds)
    likelihood = vae.likelihood
    if signature in ("encode", "serving_default"):
        _, q = vae.observe_and_encode(inputs["images"], observe_seeds)
        eps = tf.stack(
            [tf.random.stateless_normal([vae.latent_dim], s) for s in z_seeds]
        )
        spread = (
            {"stddev": q.stddev()}
            if config.posterior == "diag"
            else {"scale_tril": q.scale.to_dense()}
        )
        outputs = {"mean": q.mean(), **spread, "z": q.loc + q.scale.matvec(eps)}
    elif signature == "decode":
        p = vae.decoder(tf.constant(inputs["z"]))
        outputs = {"mean": likelihood.mean_image(p), **likelihood.parameters(p)}
    elif signature == "sample":
        z = vae.prior.sample(inputs["num_samples"], inputs["seed"])
        outputs = {"images": likelihood.mean_image(vae.decoder(z))}
    elif signature == "score":
        reconstruction, kl = vae.neg_elbo_terms(inputs["images"], image_seeds)
        outputs = {
            "neg_elbo": reconstruction + kl,
            "reconstruction": reconstruction,
            "kl": kl,
        }
    elif signature == "reconstruct":
        _, q = vae.observe_and_encode(inputs["images"], observe_seeds)
        outputs = {"images": likelihood.mean_image(vae.decoder(q.mean()))}
    elif signature == "log_weights":
        x, q = vae.observe_and_encode(inputs["images"], observe_seeds)
        # The z noise of each image: from its pixels and the request's seed.
        z_seeds = noise.example_seeds(inputs["images"], inputs["seed"])
        log_weights = vae.log_weights(x, q, inputs["num_samples"], z_seeds)
        outputs = {"log_weights": tf.transpose(log_weights)}
    else:
        raise ValueError(f"No expected outputs for signature {signature!r}.")
    return {name: np.asarray(value) for name, value in outputs.items()}


def assert_outputs_match(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(
            actual[name], value, rtol=1e-5, atol=1e-5, err_msg=name
        )


def case_config(tmp_path, case: str) -> config_lib.Config:
    return tiny_config(tmp_path, latent_dim=LATENT_DIM, seed=SEED, **CASES[case])


def build(config: config_lib.Config) -> model.VAE:
    return builder.build_vae(TINY_SHAPE, seed=config.seed, **config.model_settings())


# Run in a fresh interpreter: loads exports with TensorFlow alone and saves
# every output of every signature to an .npz file.
_LOAD_AND_RUN = """
import os
import sys
import numpy as np
import tensorflow as tf

def main(exports, inputs_path, out_path):
    inputs = dict(np.load(inputs_path))
    results = {}
    for case, path in exports.items():
        loaded = tf.saved_model.load(path)
        for name, signature in loaded.signatures.items():
            _, specs = signature.structured_input_signature
            outputs = signature(**{key: tf.constant(inputs[key]) for key in specs})
            for key, value in outputs.items():
                results[f"{case}:{name}:{key}"] = value.numpy()
        with open(os.path.join(path, "assets", "tfvae.json"), "rb") as f:
            results[f"{case}:asset"] = np.array(f.read())
    np.savez(out_path, **results)
    # Nothing of tfvae, or of TFP, was needed to load and run them.
    assert "tfvae" not in sys.modules, "tfvae was imported"
    assert "tensorflow_probability" not in sys.modules, "TFP was imported"
"""


def load_and_run_elsewhere(exports: dict[str, str], workdir, inputs=INPUTS) -> dict:
    """Runs every signature of `exports` ({case: path}) in a fresh process.

    `inputs` holds every input by name. Returns {case: {signature: {output:
    array}, "asset": bytes}}.
    """
    inputs_path, out_path = workdir / "inputs.npz", workdir / "outputs.npz"
    np.savez(inputs_path, **inputs)
    result = run_python(
        _LOAD_AND_RUN + f"\nmain({exports!r}, {str(inputs_path)!r}, {str(out_path)!r})"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = {case: {} for case in exports}
    with np.load(out_path) as saved:
        for key in saved.files:
            case, *rest = key.split(":")
            if rest == ["asset"]:
                results[case]["asset"] = saved[key].item()
            else:
                signature, output = rest
                results[case].setdefault(signature, {})[output] = saved[key]
    return results


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """{case: (config, vae, export path)}, one tiny export per case."""
    exported = {}
    for case in CASES:
        tmp_path = tmp_path_factory.mktemp(case)
        config = case_config(tmp_path, case)
        vae = build(config)
        path = saved_model.export(
            vae, str(tmp_path / "export"), config=config, dataset_info=INFO
        )
        exported[case] = (config, vae, path)
    return exported


@pytest.fixture(scope="module")
def elsewhere(exports, tmp_path_factory):
    """The outputs of every signature of every export, run without tfvae."""
    paths = {case: path for case, (_, _, path) in exports.items()}
    return load_and_run_elsewhere(paths, tmp_path_factory.mktemp("elsewhere"))


@pytest.mark.parametrize("signature", [s for s in SIGNATURE_INPUTS if s != "metadata"])
@pytest.mark.parametrize("case", CASES)
def test_signatures_match_the_keras_model(case, signature, exports, elsewhere):
    config, vae, _ = exports[case]
    assert_outputs_match(
        elsewhere[case][signature], expected_outputs(vae, config, signature, INPUTS)
    )


def test_an_export_has_exactly_the_documented_signatures(elsewhere):
    for results in elsewhere.values():
        assert set(results) - {"asset"} == set(signatures.SIGNATURES)
    assert set(SIGNATURE_INPUTS) == set(signatures.SIGNATURES)


@pytest.mark.parametrize("case", CASES)
def test_metadata_describes_the_export(case, exports, elsewhere):
    config, _, _ = exports[case]
    metadata = elsewhere[case]["metadata"]
    assert metadata["latent_dim"] == LATENT_DIM
    assert metadata["image_shape"].tolist() == list(TINY_SHAPE)
    assert metadata["likelihood"] == config.likelihood.encode()
    assert metadata["posterior"] == config.posterior.encode()
    assert metadata["dataset"] == b"tiny_images"
    assert metadata["seed"] == SEED
    assert metadata["fixed_seed"].tolist() == [SEED, noise.EXPORT]
    description = json.loads(metadata["json"].item())
    assert description == json.loads(elsewhere[case]["asset"])
    assert config_lib.Config.from_dict(description["config"]) == config
    assert description["dataset_info"]["image_shape"] == list(TINY_SHAPE)


def test_encode_z_is_the_z_that_score_evaluates(exports, elsewhere):
    config, vae, _ = exports["diag-bernoulli"]
    observe_seeds, _ = noise.split_seed(
        noise.export_seeds(INPUTS["images"], config.seed)
    )
    x = vae.likelihood.observe(INPUTS["images"], observe_seeds)
    z = elsewhere["diag-bernoulli"]["encode"]["z"]
    np.testing.assert_allclose(
        elsewhere["diag-bernoulli"]["score"]["reconstruction"],
        -vae.decoder(z).log_prob(x),
        rtol=1e-5,
    )


@pytest.mark.parametrize("case", ["diag-bernoulli", "full-continuous_bernoulli"])
def test_an_images_outputs_do_not_depend_on_its_batch(case, exports):
    """TF Serving batches requests together: an image's noise is its own.

    The same image alone, at row 3 of a batch of 8 and at row 0 of another
    batch gets the same binarization and z noise, so the same outputs.
    """
    _, _, path = exports[case]
    signatures = tf.saved_model.load(path).signatures
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (1, *TINY_SHAPE), dtype=np.uint8)
    batch = rng.integers(0, 256, (8, *TINY_SHAPE), dtype=np.uint8)
    batch[3] = image[0]
    other = rng.integers(0, 256, (5, *TINY_SHAPE), dtype=np.uint8)
    other[0] = image[0]
    placements = {"alone": (image, 0), "row 3 of 8": (batch, 3), "row 0": (other, 0)}

    def outputs(pixels, row):
        pixels = tf.constant(pixels)
        encoded = signatures["encode"](images=pixels)
        scores = signatures["score"](images=pixels)
        weights = signatures["log_weights"](
            images=pixels,
            num_samples=tf.constant(4),
            seed=tf.constant([5, 6], tf.int64),
        )["log_weights"]
        values = {
            "mean": encoded["mean"],
            "z": encoded["z"],
            **scores,
            "log_weights": weights,
        }
        return {name: value.numpy()[row] for name, value in values.items()}

    expected = outputs(*placements["alone"])
    for placement, (pixels, row) in placements.items():
        actual = outputs(pixels, row)
        for name, value in expected.items():
            np.testing.assert_allclose(
                actual[name], value, atol=1e-5, err_msg=f"{name}, {placement}"
            )


def _meta_graph(path: str):
    """Returns the MetaGraphDef of the SavedModel at `path`, read as a proto."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    return saved.meta_graphs[0]


def test_the_saved_object_holds_no_keras_objects(exports):
    """ExportArchive saves the signatures' functions and plain variables only."""
    _, _, path = exports["full-gaussian"]
    nodes = _meta_graph(path).object_graph_def.nodes
    identifiers = {
        node.user_object.identifier
        for node in nodes
        if node.WhichOneof("kind") == "user_object"
    }
    assert identifiers <= {
        "_generic_user_object",
        "signature_map",
        "trackable_list_wrapper",
        "trackable_dict_wrapper",
    }
    assert {child.local_name for child in nodes[0].children} >= set(
        signatures.SIGNATURES
    )


def test_sample_is_deterministic_in_its_seed_and_matches_prior_samples(exports):
    config, vae, path = exports["diag-bernoulli"]
    sample = tf.saved_model.load(path).signatures["sample"]

    def draw(seed):
        return sample(num_samples=tf.constant(4), seed=tf.constant(seed, tf.int64))[
            "images"
        ].numpy()

    np.testing.assert_array_equal(draw([5, 6]), draw([5, 6]))
    assert not np.allclose(draw([5, 6]), draw([5, 7]))
    # The run's samples.png decodes the z of seed [config.seed, PRIOR_SAMPLES].
    np.testing.assert_allclose(
        draw([config.seed, noise.PRIOR_SAMPLES]),
        images.prior_samples(vae, 4, config.seed),
        atol=1e-6,
    )


# --- The session path TF Serving takes -----------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_no_exported_graph_asks_for_xla(case, exports):
    """TF Serving runs no XLA by default; the logistic mixture trains with it."""
    _, _, path = exports[case]
    functions = _meta_graph(path).graph_def.library.function
    assert functions
    compiled = [
        function.signature.name
        for function in functions
        if function.attr["_XlaMustCompile"].b
    ]
    assert compiled == []


@pytest.fixture(scope="module")
def session_run(exports):
    """Returns run(signature, feeds) -> outputs, TF Serving's path (conftest)."""
    _, _, path = exports["diag-bernoulli"]
    with session_signatures(path) as run:
        yield run


_IMAGES_SHAPE_ERROR = r"images.* is not compatible with expected shape \[\?,8,8,1\]"
_NUM_SAMPLES_ERROR = "num_samples must be a positive int32 scalar"
BAD_INPUTS = {
    "float images": (
        "encode",
        {"images": np.zeros([1, *TINY_SHAPE], np.float32)},
        # The first for signatures called from Python, the second for feeds.
        r"expected to be a uint8 tensor but is a float|expect uint8",
    ),
    "small images": (
        "encode",
        {"images": np.zeros([2, 7, 7, 1], np.uint8)},
        _IMAGES_SHAPE_ERROR,
    ),
    # As many pixels as an 8x8 image: a reshape would silently accept it.
    "images of another shape": (
        "score",
        {"images": np.zeros([2, 16, 4, 1], np.uint8)},
        _IMAGES_SHAPE_ERROR,
    ),
    "images without a batch": (
        "reconstruct",
        {"images": np.zeros(TINY_SHAPE, np.uint8)},
        _IMAGES_SHAPE_ERROR,
    ),
    "wrong latent size": (
        "decode",
        {"z": np.zeros([2, LATENT_DIM + 1], np.float32)},
        r"z.* is not compatible with expected shape \[\?,3\]",
    ),
    "negative num_samples": (
        "sample",
        {"num_samples": np.int32(-1), "seed": np.array([1, 2], np.int64)},
        _NUM_SAMPLES_ERROR,
    ),
    "zero num_samples": (
        "log_weights",
        {
            "images": np.zeros([1, *TINY_SHAPE], np.uint8),
            "num_samples": np.int32(0),
            "seed": np.array([1, 2], np.int64),
        },
        _NUM_SAMPLES_ERROR,
    ),
    "num_samples as a list": (
        "sample",
        {"num_samples": np.array([2], np.int32), "seed": np.array([1, 2], np.int64)},
        r"num_samples.* is not compatible with expected shape \[\]",
    ),
    "seed of 3 numbers": (
        "sample",
        {"num_samples": np.int32(2), "seed": np.array([1, 2, 3], np.int64)},
        r"seed.* \[3\] is not compatible with expected shape \[2\]",
    ),
    "seed with a batch": (
        "log_weights",
        {
            "images": np.zeros([1, *TINY_SHAPE], np.uint8),
            "num_samples": np.int32(2),
            "seed": np.array([[1, 2]], np.int64),
        },
        r"seed.* \[1,2\] is not compatible with expected shape \[2\]",
    ),
}


@pytest.mark.parametrize("bad", BAD_INPUTS)
def test_bad_inputs_fail_with_a_message_naming_the_problem(bad, exports, session_run):
    signature, feeds, message = BAD_INPUTS[bad]
    _, _, path = exports["diag-bernoulli"]
    loaded = tf.saved_model.load(path)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        # Tensors: signatures convert numpy arrays to their dtypes (see below).
        loaded.signatures[signature](**{k: tf.constant(v) for k, v in feeds.items()})
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        session_run(signature, feeds)


def test_signatures_cast_numpy_inputs_to_their_dtype(exports):
    """Documents a pitfall (export/README.md): numpy arrays get no dtype error.

    TensorFlow converts numpy inputs of a signature to its dtypes, so float
    images in [0, 1] silently become uint8 zeros; tensors of the wrong dtype
    are rejected (see test_bad_inputs_fail_with_a_message_naming_the_problem).
    """
    _, _, path = exports["diag-bernoulli"]
    encode = tf.saved_model.load(path).signatures["encode"]
    floats = encode(images=np.full([2, *TINY_SHAPE], 0.7, np.float32))
    zeros = encode(images=np.zeros([2, *TINY_SHAPE], np.uint8))
    np.testing.assert_array_equal(floats["mean"], zeros["mean"])


def test_warmup_requests_cover_every_signature_and_run(exports, session_run):
    _, _, path = exports["diag-bernoulli"]
    records = tf.data.TFRecordDataset(
        os.path.join(path, "assets.extra", saved_model.WARMUP_FILENAME)
    )
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in records]
    names = [log.predict_log.request.model_spec.signature_name for log in logs]
    assert sorted(names) == sorted(signatures.SIGNATURES)
    for log in logs:
        request = log.predict_log.request
        assert request.model_spec.name == "export"
        feeds = {key: tf.make_ndarray(value) for key, value in request.inputs.items()}
        name = request.model_spec.signature_name
        assert set(feeds) == set(SIGNATURE_INPUTS[name])
        outputs = session_run(name, feeds)  # As TF Serving replays it.
        if name != "metadata":
            # Batch 1 in, batch 1 out (one sample for sample).
            assert {np.shape(value)[0] for value in outputs.values()} == {1}


# --- saved_model_cli -------------------------------------------------------------


def test_saved_model_cli_shows_every_signature(exports):
    _, _, path = exports["diag-bernoulli"]
    result = saved_model_cli("show", "--dir", path, "--all")
    assert result.returncode == 0, result.stderr[-3000:]
    shown = result.stdout
    for name in signatures.SIGNATURES:
        assert f"signature_def['{name}']" in shown
    assert shown.count("Method name is: tensorflow/serving/predict") == len(
        signatures.SIGNATURES
    )
    for dtype, shape in [
        ("DT_UINT8", "(-1, 8, 8, 1)"),  # images
        ("DT_FLOAT", "(-1, 3)"),  # z
        ("DT_INT32", "()"),  # num_samples
        ("DT_INT64", "(2)"),  # seed
    ]:
        assert f"dtype: {dtype}\n        shape: {shape}\n" in shown


def _cli_input_args(signature: str, workdir) -> list[str]:
    """Returns saved_model_cli's arguments feeding INPUTS to `signature`."""
    files, exprs = [], []
    for key in SIGNATURE_INPUTS[signature]:
        if INPUTS[key].ndim >= 2:
            np.save(workdir / f"{key}.npy", INPUTS[key])
            files.append(f"{key}={workdir / f'{key}.npy'}")
        else:
            exprs.append(f"{key}={INPUTS[key].tolist()}")
    args = ["--inputs", ";".join(files)] if files else []
    # saved_model_cli insists on some input argument; ";" is an empty one.
    return args + ["--input_exprs", ";".join(exprs) or ";"]


@pytest.mark.parametrize("signature", SIGNATURE_INPUTS)
def test_saved_model_cli_runs_every_signature(signature, exports, tmp_path):
    config, vae, path = exports["diag-bernoulli"]
    out = tmp_path / "out"
    result = saved_model_cli_run(
        path, signature, out, *_cli_input_args(signature, tmp_path)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    actual = {f[: -len(".npy")]: np.load(out / f) for f in os.listdir(out)}
    if signature == "metadata":
        assert actual["latent_dim"] == LATENT_DIM
        assert actual["likelihood"] == b"bernoulli"
        assert actual["fixed_seed"].tolist() == [SEED, noise.EXPORT]
    else:
        assert_outputs_match(actual, expected_outputs(vae, config, signature, INPUTS))


def test_saved_model_cli_casts_inputs_to_the_signature_dtype(exports, tmp_path):
    """Documents a saved_model_cli pitfall (export/README.md): no dtype error.

    Its session.run converts feeds with numpy, so float images in [0, 1]
    silently become uint8 zeros.
    """
    config, vae, path = exports["diag-bernoulli"]
    np.save(tmp_path / "floats.npy", np.full([2, *TINY_SHAPE], 0.7, np.float32))
    result = saved_model_cli_run(
        path, "encode", tmp_path, "--inputs", f"images={tmp_path / 'floats.npy'}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    zeros = {"images": np.zeros([2, *TINY_SHAPE], np.uint8)}
    np.testing.assert_allclose(
        np.load(tmp_path / "mean.npy"),
        expected_outputs(vae, config, "encode", zeros)["mean"],
        rtol=1e-5,
    )


# --- Versions, strategies, the command line ------------------------------------


def test_exports_go_to_the_next_free_version(tmp_path):
    config = case_config(tmp_path, "diag-bernoulli")
    vae = build(config)
    base = tmp_path / "export" / "tiny"
    base.mkdir(parents=True)
    (base / "README.md").write_text("Not a version.\n")
    first = saved_model.export(vae, str(base), config=config, dataset_info=INFO)
    second = saved_model.export(vae, str(base), config=config, dataset_info=INFO)
    assert (first, second) == (str(base / "1"), str(base / "2"))
    # Nothing half-written is left behind for TF Serving to trip over.
    assert sorted(os.listdir(base)) == ["1", "2", "README.md"]
    (base / "10").mkdir()
    assert saved_model.next_version(str(base)) == 11
    assert saved_model.next_version(str(tmp_path / "absent")) == 1


def test_export_refuses_to_run_inside_a_strategy_scope(tmp_path):
    config = case_config(tmp_path, "diag-bernoulli")
    vae = build(config)
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        with pytest.raises(ValueError, match="outside a tf.distribute strategy"):
            saved_model.export(
                vae, str(tmp_path / "export"), config=config, dataset_info=INFO
            )
    assert not (tmp_path / "export").exists()


def _save_run(config: config_lib.Config, vae: model.VAE) -> None:
    run_dir.save_config(config, config.model_dir)
    run_dir.save_info(INFO, config.model_dir)
    vae.save_weights(run_dir.path(config.model_dir, run_dir.WEIGHTS))


def _export_cli(*args) -> subprocess.CompletedProcess:
    return run_module("tfvae.export", *args)


def test_cli_exports_a_run_to_its_own_export_dir(tmp_path):
    config = case_config(tmp_path, "full-gaussian")
    vae = build(config)
    _save_run(config, vae)
    result = _export_cli(f"--model_dir={config.model_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    path = os.path.join(config.export_dir, "1")
    assert f"Exported the SavedModel to {path}" in result.stderr
    encode = tf.saved_model.load(path).signatures["encode"]
    assert_outputs_match(
        {k: v.numpy() for k, v in encode(images=INPUTS["images"]).items()},
        expected_outputs(vae, config, "encode", INPUTS),
    )


def test_cli_requires_a_model_dir():
    result = _export_cli()
    assert result.returncode != 0
    assert "--model_dir is required" in result.stderr


def test_cli_reports_a_folder_that_is_not_a_run_without_a_traceback(tmp_path):
    result = _export_cli(f"--model_dir={tmp_path}")
    assert result.returncode != 0
    assert "is not a tfvae run directory" in result.stderr
    assert "Traceback" not in result.stderr


_TRAIN_MIRRORED_AND_EXPORT = """
import json, os, pathlib
import keras, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tfvae import builder, config as config_lib, data, model, run_dir, saved_model

config = config_lib.Config.from_dict(json.loads(CONFIG))
info = data.DatasetInfo(**{**json.loads(INFO), "image_shape": (8, 8, 1)})
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    vae = builder.build_vae(
        info.image_shape, seed=config.seed, **config.model_settings())
    vae.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
images = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 1)).astype(np.uint8)
vae.fit(tf.data.Dataset.from_tensor_slices(images).batch(8), epochs=1, verbose=0)
run_dir.save_config(config, config.model_dir)
run_dir.save_info(info, config.model_dir)
vae.save_weights(run_dir.path(config.model_dir, run_dir.WEIGHTS))
# As training will: the model the strategy trained, exported after fit.
trained = saved_model.export(vae, BASE, config=config, dataset_info=info)
# As `python -m tfvae.export` does: rebuilt from the run directory.
loaded_config, loaded_info, loaded_vae = run_dir.load_run(config.model_dir)
rebuilt = saved_model.export(
    loaded_vae, BASE, config=loaded_config, dataset_info=loaded_info
)
print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                  "trained": trained, "rebuilt": rebuilt}))
"""


@pytest.mark.slow
def test_an_export_of_a_mirrored_run_loads_on_one_device(tmp_path):
    config = case_config(tmp_path, "diag-categorical")
    base = str(tmp_path / "export")
    code = textwrap.dedent(
        f"""
        CONFIG = {config.to_json()!r}
        INFO = {json.dumps(dataclasses.asdict(INFO))!r}
        BASE = {base!r}
        """
    )
    result = run_python(code + _TRAIN_MIRRORED_AND_EXPORT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert (report["trained"], report["rebuilt"]) == (f"{base}/1", f"{base}/2")

    _, _, trained_vae = run_dir.load_run(config.model_dir)
    assert len(tf.config.list_logical_devices("CPU")) == 1
    outputs = load_and_run_elsewhere(
        {"trained": report["trained"], "rebuilt": report["rebuilt"]}, tmp_path
    )
    for version in ("trained", "rebuilt"):
        with open(os.path.join(report[version], "saved_model.pb"), "rb") as f:
            assert b"CPU:1" not in f.read()
        for signature in ("encode", "decode", "sample", "score", "log_weights"):
            assert_outputs_match(
                outputs[version][signature],
                expected_outputs(trained_vae, config, signature, INPUTS),
            )


# The model family: a learned prior, two stochastic layers, a conditional VAE.
FAMILY = {
    "vamp": dict(prior="vamp", prior_components=4, kl="monte_carlo"),
    "two_layer": dict(
        latent_dim=(LATENT_DIM, 2), kl="monte_carlo", prior="mog", prior_components=3
    ),
    "cvae": dict(conditional=True, objective="iwae", train_samples=2, kl="monte_carlo"),
}
# Four of everything, so that one `labels` input fits every signature.
FAMILY_INPUTS = {
    "images": INPUTS["images"][:4],
    "z": INPUTS["z"],
    "num_samples": np.int32(4),
    "seed": INPUTS["seed"],
    "labels": np.array([3, 0, 15, 7], np.int64),
}


def _family_expected(vae, config, signature, inputs) -> dict[str, np.ndarray]:
    """Returns what an export of `vae` must answer, from the Keras model's methods."""
    labels = tf.constant(inputs["labels"]) if vae.conditional else None
    if "images" in inputs:
        images = tf.constant(inputs["images"])
        image_seeds = noise.example_seeds(images, noise.seed(config.seed, noise.EXPORT))
        observe_seeds, _ = noise.split_seed(image_seeds)
    if signature in ("encode", "serving_default"):
        _, chain = vae.posterior_sample(images, image_seeds, labels)
        outputs = {}
        for layer, (q, z) in enumerate(zip(chain.qs, chain.zs, strict=True)):
            suffix = f"_{layer + 1}" if layer else ""
            outputs |= {f"mean{suffix}": q.mean(), f"stddev{suffix}": q.stddev()}
            outputs[f"z{suffix}"] = z
    elif signature == "decode":
        p = vae.decode(tf.constant(inputs["z"]), labels)
        outputs = {
            "mean": vae.likelihood.mean_image(p),
            "logits": p.distribution.logits,
        }
    elif signature == "sample":
        z = vae.sample_latent(inputs["num_samples"], tf.constant(inputs["seed"]))
        outputs = {"images": vae.decode_mean(z, labels)}
    elif signature == "score":
        reconstruction, kl = vae.neg_elbo_terms(images, image_seeds, labels)
        outputs = {"neg_elbo": reconstruction + kl, "reconstruction": reconstruction}
        outputs["kl"] = kl
    elif signature == "reconstruct":
        _, q = vae.observe_and_encode(images, observe_seeds, labels)
        outputs = {"images": vae.decode_mean(q.mean(), labels)}
    else:
        x, q = vae.observe_and_encode(images, observe_seeds, labels)
        z_seeds = noise.example_seeds(images, tf.constant(inputs["seed"]))
        weights = vae.log_weights(x, q, inputs["num_samples"], z_seeds, labels)
        outputs = {"log_weights": tf.transpose(weights)}
    return {name: np.asarray(value) for name, value in outputs.items()}


@pytest.fixture(scope="module")
def family_exports(tmp_path_factory):
    """{case: (config, vae, export path)} for the model family."""
    exported = {}
    for case, settings in FAMILY.items():
        tmp_path = tmp_path_factory.mktemp(case)
        config = tiny_config(tmp_path, latent_dim=LATENT_DIM, seed=SEED)
        config = dataclasses.replace(config, **settings)
        vae = builder.build_vae(
            TINY_SHAPE,
            seed=config.seed,
            num_classes=INFO.num_classes,
            **config.model_settings(),
        )
        path = saved_model.export(
            vae, str(tmp_path / "export"), config=config, dataset_info=INFO
        )
        exported[case] = (config, vae, path)
    return exported


def test_family_exports_run_without_tfvae_and_match_the_keras_model(
    family_exports, tmp_path
):
    paths = {case: path for case, (_, _, path) in family_exports.items()}
    answers = load_and_run_elsewhere(paths, tmp_path, FAMILY_INPUTS)
    for case, (config, vae, _) in family_exports.items():
        signatures = set(answers[case]) - {"asset"}
        assert signatures == set(SIGNATURE_INPUTS), case
        for signature in signatures - {"metadata"}:
            expected = _family_expected(vae, config, signature, FAMILY_INPUTS)
            assert_outputs_match(answers[case][signature], expected)
        metadata = answers[case]["metadata"]
        assert metadata["prior"] == config.prior.encode()
        assert metadata["latent_dims"].tolist() == list(config.latent_dim)
        assert metadata["num_classes"] == (16 if config.conditional else 0)
    # The two-layer encode returns the top layer too.
    assert answers["two_layer"]["encode"]["z_2"].shape == (4, 2)


def test_a_conditional_export_refuses_labels_that_do_not_fit(family_exports):
    loaded = tf.saved_model.load(family_exports["cvae"][2])
    sample = loaded.signatures["sample"]
    seed = tf.constant([1, 2], tf.int64)
    for labels, message in [
        ([1, 2], "labels must hold one class per image"),
        ([1, 2, 16], "labels must be classes 0 .. 15"),
        ([1, -1, 2], "labels must be classes 0 .. num_classes - 1"),
    ]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            sample(
                num_samples=tf.constant(3),
                seed=seed,
                labels=tf.constant(labels, tf.int64),
            )
    # Images of the classes asked for: the same z decoded for other classes differ.
    a = sample(
        num_samples=tf.constant(2), seed=seed, labels=tf.constant([1, 1], tf.int64)
    )
    b = sample(
        num_samples=tf.constant(2), seed=seed, labels=tf.constant([2, 2], tf.int64)
    )
    assert not np.allclose(a["images"], b["images"])


@pytest.mark.parametrize("case", list(FAMILY))
def test_saved_model_cli_calls_a_family_exports_sample(case, family_exports, tmp_path):
    config, vae, path = family_exports[case]
    inputs = {"num_samples": np.int32(3), "seed": np.array([1, 2], np.int64)}
    exprs = "num_samples=3;seed=[1, 2]"
    if config.conditional:
        inputs["labels"] = np.array([0, 1, 2], np.int64)
        exprs += ";labels=[0, 1, 2]"
    result = saved_model_cli_run(path, "sample", tmp_path, "--input_exprs", exprs)
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(
        np.load(tmp_path / "images.npy"),
        _family_expected(vae, config, "sample", inputs)["images"],
        rtol=1e-5,
        atol=1e-5,
    )


# --- A VAE with networks of its own --------------------------------------------


def _own_conv_vae() -> model.VAE:
    """A VAE whose encoder and decoder bodies are a user's own Keras models."""
    layers = keras.layers
    encoder_body = keras.Sequential(
        [
            layers.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
            layers.Flatten(),
            layers.Dense(16, activation="relu"),
        ]
    )
    decoder_body = keras.Sequential(
        [
            layers.Dense(4 * 4 * 8, activation="relu"),
            layers.Reshape((4, 4, 8)),
            layers.Conv2DTranspose(1, 3, strides=2, padding="same"),
            # [batch, H, W, C, params_per_value], as the likelihood head needs.
            layers.Reshape((*TINY_SHAPE, 1)),
        ]
    )
    vae = model.VAE(
        parts.Encoder(encoder_body, posteriors.NormalDiagHead(LATENT_DIM)),
        parts.Decoder(decoder_body, likelihoods.BernoulliHead(binarize=True)),
        priors.StandardNormal(LATENT_DIM),
        image_shape=TINY_SHAPE,
        seed=SEED,
    )
    vae.build()
    return vae


def test_a_vae_with_its_own_networks_trains_evaluates_exports_and_serves(tmp_path):
    vae = _own_conv_vae()
    images = INPUTS["images"]
    vae.compile(optimizer="adam")
    vae.fit(np.tile(images, [8, 1, 1, 1]), epochs=1, batch_size=8, verbose=0)
    metrics = evaluation.evaluate(vae, images, num_samples=10)
    assert np.isfinite(metrics["nll"]) and metrics["nll"] <= metrics["neg_elbo"] + 5
    path = saved_model.export(vae, str(tmp_path / "export"))
    served = load_and_run_elsewhere({"own": path}, tmp_path)["own"]
    seeds = types.SimpleNamespace(seed=SEED, posterior="diag")
    for signature in ("encode", "decode", "sample", "score", "log_weights"):
        assert_outputs_match(
            served[signature], expected_outputs(vae, seeds, signature, INPUTS)
        )
    # TF Serving's SignatureDef/session path, as a serving user calls it.
    for signature in ("score", "sample"):
        out = tmp_path / f"cli_{signature}"
        result = saved_model_cli_run(
            path, signature, out, *_cli_input_args(signature, tmp_path)
        )
        assert result.returncode == 0, result.stderr[-3000:]
        cli = {f[: -len(".npy")]: np.load(out / f) for f in os.listdir(out)}
        assert_outputs_match(cli, served[signature])
    metadata = served["metadata"]
    assert metadata["likelihood"] == b"bernoulli"
    assert metadata["posterior"] == b"diag"
    assert metadata["prior"] == b"standard"
    assert metadata["dataset"] == b""
    description = json.loads(metadata["json"].item())
    assert description["config"] is None and description["dataset_info"] is None


_PEAK_OF_ONE_REQUEST = """
import resource, sys
import numpy as np, tensorflow as tf
signatures = tf.saved_model.load(sys.argv[1]).signatures
bound = int(signatures["metadata"]()["max_batch_samples"])
images = np.zeros([bound // 1000, 28, 28, 1], np.uint8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
signatures["log_weights"](
    images=images, num_samples=tf.constant(1000), seed=tf.constant([1, 2], tf.int64)
)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(bound, (after - before) * 1024)
"""


@pytest.mark.slow
def test_the_largest_legal_request_fits_its_memory_budget(tmp_path):
    """The default max_batch_samples keeps one request near 1 GB (MNIST's MLP)."""
    vae = builder.build_vae((28, 28, 1))
    path = saved_model.export(vae, str(tmp_path / "export"))
    result = run_command([sys.executable, "-c", _PEAK_OF_ONE_REQUEST, path])
    assert result.returncode == 0, result.stderr[-3000:]
    bound, peak = map(int, result.stdout.split())
    assert bound == signatures.default_max_batch_samples(vae) == 68478
    assert peak < 1.2 * signatures.REQUEST_BYTES
