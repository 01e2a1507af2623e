"""SavedModel export: a VAE as plain TF graphs for TF Serving.

`export(vae, export_base)` writes `<export_base>/<version>/`, the next free
integer version (TF Serving's model base path layout). Everything comes
from the VAE object itself (its configuration and weights), so a VAE built
in Python with a user's own networks exports like a flag-built one; a run
adds its training config and dataset description to the metadata. Loading
it needs TensorFlow only (`tf.saved_model.load(path)`,
`tensorflow_model_server`, `saved_model_cli`): no tfvae, Keras or TFP code.

The signatures (`tfvae.signatures`; a table VAE's, which take and give
rows by column name, `tfvae.table_signatures`), their inputs, outputs and
noise contract are documented in one place, export/README.md ("Signatures"
and "Tables"). In short, all are `tensorflow/serving/predict` and
batch-major: `encode` (also `serving_default`), `decode`, `sample`,
`score`, `reconstruct`, `log_weights` and `metadata`.

Why `keras.export.ExportArchive`: it is Keras's public way to write a
SavedModel of a Keras model with custom endpoints. It tracks the model's
variables (`track`), wraps each endpoint in a `tf.function` of the given
input signature (`add_endpoint`) and saves them as signatures
(`write_out`); the saved object holds only those functions and plain
variables, not the Keras model, so loading needs neither Keras nor TFP
(whose distributions the Keras calls return). Two things it cannot do
through its public API, done here by hand: adding an asset to the saved
object (so `assets/tfvae.json` is written into the folder after
`write_out`), and TF Serving's warmup records
(`assets.extra/tf_serving_warmup_requests`, one PredictRequest per
signature, which TF Serving replays when it loads the version).
"""

import dataclasses
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from tfvae import (
    data,
    distributions,
    errors,
    folders,
    model,
    noise,
    run_dir,
    signatures,
    table_signatures,
)
from tfvae.config import Config
from tfvae.parts import part_name

METADATA_FILENAME = "tfvae.json"
WARMUP_FILENAME = "tf_serving_warmup_requests"
# The flag's default, read from its one owner.
_DEFAULT_MAX_SAMPLES = {
    field.name: field.default for field in dataclasses.fields(Config)
}["export_max_samples"]


def _without_build_configs(config):
    """Returns a VAE's `get_config()` without its parts' Keras build configs.

    Keras would build each part from its saved input shape alone, which a
    conditional VAE's encoder and decoder cannot be (they take the class
    too, and Keras warns); `VAE.build` builds every part, through the
    objective, instead.
    """
    if isinstance(config, dict):
        return {
            key: _without_build_configs(value)
            for key, value in config.items()
            if key != "build_config"
        }
    if isinstance(config, list):
        return [_without_build_configs(value) for value in config]
    return config


def describe(
    vae: model.VAE,
    *,
    max_samples: int,
    max_batch_samples: int,
    config: Config | None = None,
    dataset_info: data.DatasetInfo | run_dir.TableInfo | None = None,
) -> dict:
    """Returns what an export says about itself (`metadata`, `assets/tfvae.json`).

    Args:
      vae: the exported VAE; the latent sizes, the parts' names, the image
        shape, the classes and the seed come from it.
      max_samples: the largest `num_samples` of `sample` and `log_weights`.
      max_batch_samples: the largest rows x samples of one request.
      config: the training run's `Config`, if the VAE comes from a run.
      dataset_info: the dataset it was trained on (`data.DatasetInfo`, or a
        table run's `run_dir.TableInfo`), if known.

    Returns:
      A JSON-able dict; `config` and `dataset_info` are None when not given.
    """
    return {
        # The size of the z that decode takes (the bottom layer's).
        "latent_dim": vae.latent_dim,
        "latent_dims": list(vae.latent_dims),
        "prior": part_name(vae.prior),
        "num_classes": vae.num_classes,
        # None for a table VAE, whose rows are described by "columns".
        "image_shape": vae.image_shape and list(vae.image_shape),
        # A table VAE's columns (None for images): the schema's, each with
        # its input name in the signatures ("input").
        "columns": (
            table_signatures.describe_columns(vae.likelihood.schema)
            if vae.likelihood.tabular
            else None
        ),
        "likelihood": part_name(vae.likelihood),
        "posterior": part_name(vae.encoder.head),
        # True when p(x|z) is a probability mass over the 256 pixel values.
        "discrete": vae.likelihood.discrete,
        "dataset": dataset_info.name if dataset_info else None,
        "seed": vae.seed,
        # The base of the per-image seeds: noise.example_seeds(images, it).
        "fixed_seed": [vae.seed, noise.EXPORT],
        "signatures": list(signatures.SIGNATURES),
        # The largest num_samples that sample and log_weights accept.
        "max_samples": max_samples,
        # The largest rows x samples of one request (images or z, times
        # num_samples for log_weights).
        "max_batch_samples": max_batch_samples,
        "config": dataclasses.asdict(config) if config else None,
        "dataset_info": dataclasses.asdict(dataset_info) if dataset_info else None,
    }


def _archive(
    vae: model.VAE, description: dict
) -> tuple[keras.export.ExportArchive, dict]:
    """Returns (archive, {signature name: concrete function}) of `vae`."""
    archive = keras.export.ExportArchive()
    archive.track(vae)
    concrete = {}
    owner = table_signatures if vae.likelihood.tabular else signatures
    functions = owner.signature_functions(vae, description)
    for name, (fn, specs) in functions.items():
        # A tf.function without autograph: no tensor-dependent Python control
        # flow in the signatures.
        function = archive.add_endpoint(name, fn, input_signature=specs)
        concrete[name] = function.get_concrete_function()
        if name == "encode":
            # The archive would alias its first endpoint as serving_default
            # anyway; registering it by name says so. The same traced
            # function, no second trace.
            archive.add_endpoint("serving_default", function)
            concrete["serving_default"] = concrete["encode"]
    return archive, concrete


def _warmup_inputs(
    signature: tf.types.experimental.ConcreteFunction, cells: frozenset[str]
) -> dict[str, np.ndarray]:
    """Returns a small valid input of `signature`: batch 1, 1 sample.

    Zeros, but a table's `cells` inputs hold a missing cell (NaN, or "" for
    a category): a row of zeros would be refused by a positive column.
    """
    values = {}
    # An unconditional VAE's functions keep their `labels=None` default.
    specs = [
        s
        for s in tf.nest.flatten(signature.structured_input_signature)
        if s is not None
    ]
    for spec in specs:
        shape = [1 if size is None else size for size in spec.shape]
        if spec.dtype == tf.string:
            values[spec.name] = np.full(shape, b"", object)
        elif spec.name in cells:
            values[spec.name] = np.full(shape, np.nan, spec.dtype.as_numpy_dtype)
        else:
            values[spec.name] = np.zeros(shape, spec.dtype.as_numpy_dtype)
    if "num_samples" in values:
        values["num_samples"] = np.ones([], np.int32)
    return values


def _write_warmup(
    path: str, model_name: str, signatures: dict, cells: frozenset[str]
) -> None:
    """Writes one PredictRequest per signature as TF Serving warmup records."""
    os.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for name, signature in signatures.items():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=name)
            )
            for input_name, value in _warmup_inputs(signature, cells).items():
                request.inputs[input_name].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())


def check_export_base(export_base: str) -> None:
    """Raises `UsageError` unless `export_base` is, or can be made, a writable folder.

    Checked before any work (a training's first epoch, a command's model
    loading), so an export that cannot be written loses nothing.
    """
    if os.path.exists(export_base) and not os.path.isdir(export_base):
        raise errors.UsageError(
            f"--export_dir={export_base} is a file, not a folder (a TF Serving "
            "model base path, holding one folder per version). Pass a folder, "
            "or move the file away."
        )
    folders.check_writable(export_base, f"--export_dir={export_base}")


def latest_version(export_dir: str) -> str:
    """Returns `export_dir` if it is a SavedModel, else its latest version folder.

    As TF Serving does with a model base path: the highest integer folder,
    logged. Raises `UsageError` for a folder holding neither, and for a
    latest version without its saved_model.pb.
    """
    if os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
        return export_dir
    if not os.path.exists(export_dir):
        raise errors.UsageError(
            f"--export_dir={export_dir} does not exist. Pass an export's version "
            "folder (e.g. export/mnist/1) or its model base path (export/mnist)."
        )
    versions = (
        [int(name) for name in os.listdir(export_dir) if name.isdigit()]
        if os.path.isdir(export_dir)
        else []
    )
    if not versions:
        raise errors.UsageError(
            f"--export_dir={export_dir} holds neither a SavedModel (saved_model.pb) "
            "nor numbered version folders. Pass an export's version folder (e.g. "
            "export/mnist/1) or its model base path (export/mnist)."
        )
    latest = os.path.join(export_dir, str(max(versions)))
    if not os.path.isfile(os.path.join(latest, "saved_model.pb")):
        raise errors.UsageError(
            f"{latest}, the latest version in --export_dir={export_dir}, holds no "
            "saved_model.pb: it is not a complete export. Export the run again "
            "(python -m tfvae.export), or pass an older version's folder."
        )
    logging.info("Using %s, the latest version in %s.", latest, export_dir)
    return latest


def next_version(export_base: str) -> int:
    """Returns 1 + the largest integer folder name in `export_base` (1 if none)."""
    if not os.path.isdir(export_base):
        return 1
    versions = [int(name) for name in os.listdir(export_base) if name.isdigit()]
    return max(versions, default=0) + 1


def export(
    vae: model.VAE,
    export_base: str,
    *,
    max_samples: int | None = None,
    max_batch_samples: int | None = None,
    config: Config | None = None,
    dataset_info: data.DatasetInfo | run_dir.TableInfo | None = None,
) -> str:
    """Exports `vae` to `<export_base>/<next version>/`; returns that folder's path.

    The VAE is copied once into a fresh model built outside any strategy
    (`VAE.from_config(vae.get_config())` and its weights), so the SavedModel
    holds plain variables and loads on any number of devices, whatever
    strategy trained it, and a VAE with a user's own Keras networks exports
    like a flag-built one. The export is written under a hidden name and
    renamed when complete, so a TF Serving process watching `export_base`
    never loads half of one.

    Args:
      vae: a built `VAE` (trained or not), of images or of a table's rows
        (`tfvae.build_table_vae`). Call this outside `strategy.scope()`.
      export_base: TF Serving's model base path; created if absent.
      max_samples: the largest `num_samples` that `sample` and `log_weights`
        serve per request. Unset: `config.export_max_samples` if `config`
        is given, else the flag's default (1000).
      max_batch_samples: the largest rows x samples of one request (images
        or z, times `num_samples` for `log_weights`), which bounds what one
        request allocates. Unset: `signatures.default_max_batch_samples`,
        about 1 GB per request.
      config: the training run's `Config`, recorded in the metadata.
      dataset_info: the dataset's `data.DatasetInfo` (a table run's
        `run_dir.TableInfo`, whose `labels` name a conditional VAE's
        classes), recorded in the metadata.

    Returns:
      The path of the new version folder, e.g. `export/mnist/3`.

    Raises:
      ValueError: a bad bound, a call inside a strategy scope, a VAE that
        cannot be rebuilt from its config, or two table columns with the
        same input name (`table_signatures.input_names`).

    Example:
      >>> path = saved_model.export(vae, "export/mine")
      >>> served = tf.saved_model.load(path)  # no tfvae needed
      >>> served.signatures["sample"](num_samples=tf.constant(4),
      ...                             seed=tf.constant([1, 2], tf.int64))
    """
    if tf.distribute.has_strategy():
        raise ValueError(
            "export() must be called outside a tf.distribute strategy scope, so "
            "the SavedModel holds plain variables that load on any device count. "
            f"Received: strategy={tf.distribute.get_strategy()!r}"
        )
    if max_samples is None:
        max_samples = config.export_max_samples if config else _DEFAULT_MAX_SAMPLES
    if max_batch_samples is None:
        max_batch_samples = max(signatures.default_max_batch_samples(vae), max_samples)
    for name, value in (
        ("max_samples", max_samples),
        ("max_batch_samples", max_batch_samples),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(
                f"{name} must be a positive int. Received: {name}={value!r}"
            )
    if max_samples > max_batch_samples:
        raise ValueError(
            "max_samples cannot exceed max_batch_samples: one sample request of "
            f"max_samples would pass the request bound. Received: "
            f"max_samples={max_samples}, max_batch_samples={max_batch_samples}"
        )
    check_export_base(export_base)
    try:
        fresh = type(vae).from_config(_without_build_configs(vae.get_config()))
    except (TypeError, ValueError) as e:
        raise ValueError(
            "The VAE cannot be rebuilt from its get_config(), which export() "
            "needs: register each of your own Keras classes with "
            "@keras.saving.register_keras_serializable() and give it a "
            f"get_config(). Received: {e}"
        ) from e
    fresh.build()
    fresh.set_weights(vae.get_weights())
    description = describe(
        fresh,
        max_samples=max_samples,
        max_batch_samples=max_batch_samples,
        config=config,
        dataset_info=dataset_info,
    )
    # No XLA in the graphs: TF Serving runs none by default.
    with distributions.without_xla():
        archive, concrete = _archive(fresh, description)

    os.makedirs(export_base, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-export-", dir=export_base)
    try:
        # mkdtemp makes the folder private; the model server may be another user.
        os.chmod(staging, 0o755)
        # Writing traces the endpoints again: without XLA too.
        with distributions.without_xla():
            archive.write_out(staging, verbose=False)
        # ExportArchive has no public way to add a tf.saved_model.Asset to the
        # saved object, so the file is written into the folder's assets/
        # directly: the same place, but not listed in the SavedModel's asset
        # table (nothing reads it from there; TF Serving keeps the folder).
        assets = os.path.join(staging, "assets")
        os.makedirs(assets, exist_ok=True)
        with open(os.path.join(assets, METADATA_FILENAME), "w") as f:
            f.write(signatures.to_json(description))
        _write_warmup(
            os.path.join(staging, "assets.extra", WARMUP_FILENAME),
            os.path.basename(os.path.normpath(export_base)),
            concrete,
            frozenset(c["input"] for c in description["columns"] or ()),
        )
        path = os.path.join(export_base, str(next_version(export_base)))
        os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logging.info(
        "Exported the SavedModel to %s (TF Serving: --model_base_path=%s).",
        path,
        os.path.abspath(export_base),
    )
    return path
