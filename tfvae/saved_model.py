"""SavedModel export: a trained VAE as plain TF graphs for TF Serving.

`export(vae, config, info, export_base)` writes `<export_base>/<version>/`, the
next free integer version (TF Serving's model base path layout). Loading it
needs TensorFlow only (`tf.saved_model.load(path)`, `tensorflow_model_server`,
`saved_model_cli`): no tfvae, Keras or TFP code.

The signatures, their inputs, outputs and noise contract are documented in
one place, export/README.md ("Signatures"). In short, all are
`tensorflow/serving/predict` and batch-major: `encode` (also
`serving_default`), `decode`, `sample`, `score`, `reconstruct`,
`log_weights` and `metadata`; images are raw uint8 pixels, and the
likelihood's preprocessing (binarizing, scaling) happens inside.

Noise. Every image gets its own stateless seed, computed from its pixels
and the export's fixed seed alone (`noise.example_seeds`):

  fixed_seed  = noise.seed(config.seed, noise.EXPORT)           # [seed, -1]
  image_seeds = noise.example_seeds(images, fixed_seed)          # [batch, 2]
  observe_seeds, z_seeds = noise.split_seed(image_seeds)

so an image's outputs do not depend on its row or on the other images of
its batch (TF Serving's server-side batching merges requests). encode,
reconstruct, score and log_weights observe an image (dynamic binarization)
with its observe seed, so all four see the same x; encode's z is the z
that score evaluates (`VAE.posterior_sample` / `VAE.neg_elbo_terms` with
`image_seeds`). log_weights draws its z from the request's `seed`, per
image too: `noise.example_seeds(images, seed)`. `sample` draws z from the
model, top-down from its prior (`VAE.sample_latent(num_samples, seed)`); seed
`noise.seed(config.seed, noise.PRIOR_SAMPLES)` decodes the z of the run's
samples.png.

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
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from tfvae import data, errors, model, noise
from tfvae.config import Config

METADATA_FILENAME = "tfvae.json"
WARMUP_FILENAME = "tf_serving_warmup_requests"
SIGNATURES = (
    "serving_default",
    "encode",
    "decode",
    "sample",
    "score",
    "reconstruct",
    "log_weights",
    "metadata",
)


def fixed_seed(seed: int) -> tf.Tensor:
    """Returns the export's fixed seed, int64 `[2]`: `(seed, noise.EXPORT)`.

    Not the seed of any draw: each image's seed is folded from it and the
    image's pixels (`noise.export_seeds`).
    """
    return noise.seed(seed, noise.EXPORT)


def describe(config: Config, info: data.DatasetInfo) -> dict:
    """Returns what an export says about itself (`metadata`, `assets/tfvae.json`)."""
    return {
        # The size of the z that decode takes (the bottom layer's).
        "latent_dim": config.latent_dim[0],
        "latent_dims": list(config.latent_dim),
        "prior": config.prior,
        "num_classes": info.num_classes if config.conditional else None,
        "image_shape": list(info.image_shape),
        "likelihood": config.likelihood,
        "posterior": config.posterior,
        "dataset": info.name,
        "seed": config.seed,
        # The base of the per-image seeds: noise.example_seeds(images, it).
        "fixed_seed": [config.seed, noise.EXPORT],
        "signatures": list(SIGNATURES),
        # The largest num_samples that sample and log_weights accept.
        "max_samples": config.export_max_samples,
        "config": dataclasses.asdict(config),
        "dataset_info": dataclasses.asdict(info),
    }


def _to_json(description: dict) -> str:
    return json.dumps(description, indent=2, sort_keys=True) + "\n"


_NUM_SAMPLES_SPEC = tf.TensorSpec([], tf.int32, name="num_samples")
_SEED_SPEC = tf.TensorSpec([2], tf.int64, name="seed")
# A conditional VAE's classes, one per image (or per sample).
_LABELS_SPEC = tf.TensorSpec([None], tf.int64, name="labels")


def _checked(tensor: tf.Tensor, spec: tf.TensorSpec) -> tf.Tensor:
    """Returns `tensor`, made to fail at run time unless its shape fits `spec`.

    The TensorSpecs fix the dtypes, but TF Serving (C++ Session::Run) and the
    signatures of `tf.saved_model.load` feed tensors into the graph without
    checking their shapes: a wrong shape would crash deep inside the network
    or, worse, be silently reshaped. Asserts on `tf.shape` do not do here:
    where the spec's shape is fully known (seed, num_samples), grappler folds
    them away, trusting the very shape they check. It keeps EnsureShape ops,
    whose error names the input and the expected shape: "Shape of tensor
    images [1,7,7,1] is not compatible with expected shape [?,8,8,1]".
    """
    return tf.ensure_shape(tensor, spec.shape, name=spec.name)


def _checked_num_samples(num_samples: tf.Tensor, max_samples: int) -> tf.Tensor:
    """Returns `num_samples`, made to fail at run time unless in 1..`max_samples`.

    `sample` and `log_weights` allocate in proportion to num_samples: without
    a bound, one request for millions of samples takes a whole TF Serving
    process down (std::bad_alloc aborts it). The bound is fixed at export
    time (`--export_max_samples`, reported by `metadata` as max_samples).
    """
    num_samples = _checked(num_samples, _NUM_SAMPLES_SPEC)
    checks = [
        tf.debugging.assert_positive(
            num_samples, message="num_samples must be a positive int32 scalar"
        ),
        tf.debugging.assert_less_equal(
            num_samples,
            max_samples,
            # No quotes: TF escapes them in the error message.
            message=f"num_samples must be at most {max_samples}, the max_samples "
            "of this export (set by --export_max_samples when it was exported): "
            "request fewer, and concatenate requests with other seeds",
        ),
    ]
    # Without the dependency, the ops drawing the samples could run (and
    # allocate) first, or fail first with a vaguer message.
    with tf.control_dependencies(checks):
        return tf.identity(num_samples)


def _signature_functions(
    vae: model.VAE, config: Config, info: data.DatasetInfo
) -> dict[str, tuple]:
    """Returns {name: (function, input specs)}, one per signature but serving_default.

    In signature order: `encode` first. The functions close over `vae`; the
    archive saves their traces and the variables they read, not `vae`.
    """
    latent_dim = vae.latent_dim
    likelihood = vae.likelihood
    description = describe(config, info)
    max_samples = config.export_max_samples
    image_spec = tf.TensorSpec([None, *info.image_shape], tf.uint8, name="images")
    z_spec = tf.TensorSpec([None, latent_dim], tf.float32, name="z")

    def checked_labels(labels, batch_of):
        """Returns `labels` checked against `batch_of`'s batch (None if unconditional).

        `batch_of` is the images or z of the call, or sample's num_samples.
        """
        if not vae.conditional:
            return None
        labels = _checked(labels, _LABELS_SPEC)
        expected = tf.shape(batch_of)[0] if batch_of.shape.rank else batch_of
        checks = [
            tf.debugging.assert_equal(
                tf.size(labels),
                tf.cast(expected, tf.int32),
                message="labels must hold one class per image (per sample for "
                "sample's num_samples)",
            ),
            tf.debugging.assert_non_negative(
                labels, message="labels must be classes 0 .. num_classes - 1"
            ),
            tf.debugging.assert_less(
                labels,
                tf.constant(vae.num_classes, tf.int64),
                message=f"labels must be classes 0 .. {vae.num_classes - 1}",
            ),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(labels)

    def observe_and_encode(images, labels):
        observe_seeds, _ = noise.split_seed(noise.export_seeds(images, config.seed))
        return vae.observe_and_encode(images, observe_seeds, labels)

    def encode(images, labels=None):
        images = _checked(images, image_spec)
        labels = checked_labels(labels, images)
        # The same x and z that score's `neg_elbo_terms` evaluates.
        _, chain = vae.posterior_sample(
            images, noise.export_seeds(images, config.seed), labels
        )
        q = chain.qs[0]
        outputs = {"mean": q.mean(), **vae.encoder.head.parameters(q), "z": chain.zs[0]}
        # Layers above the bottom one: "z_2", "mean_2", "stddev_2", ...
        for layer in range(1, len(chain.zs)):
            q = chain.qs[layer]
            head = vae.upper_encoders[layer - 1].head
            layer_outputs = {
                "mean": q.mean(),
                **head.parameters(q),
                "z": chain.zs[layer],
            }
            outputs.update(
                {f"{name}_{layer + 1}": value for name, value in layer_outputs.items()}
            )
        return outputs

    def decode(z, labels=None):
        z = _checked(z, z_spec)
        p = vae.decode(z, checked_labels(labels, z))
        return {"mean": likelihood.mean_image(p), **likelihood.parameters(p)}

    def sample(num_samples, seed, labels=None):
        num_samples = _checked_num_samples(num_samples, max_samples)
        labels = checked_labels(labels, num_samples)
        z = vae.sample_latent(num_samples, _checked(seed, _SEED_SPEC))
        return {"images": vae.decode_mean(z, labels)}

    def score(images, labels=None):
        images = _checked(images, image_spec)
        reconstruction, kl = vae.neg_elbo_terms(
            images,
            noise.export_seeds(images, config.seed),
            checked_labels(labels, images),
        )
        return {
            "neg_elbo": reconstruction + kl,
            "reconstruction": reconstruction,
            "kl": kl,
        }

    def reconstruct(images, labels=None):
        images = _checked(images, image_spec)
        labels = checked_labels(labels, images)
        _, q = observe_and_encode(images, labels)
        return {"images": vae.decode_mean(q.mean(), labels)}

    def log_weights(images, num_samples, seed, labels=None):
        images = _checked(images, image_spec)
        labels = checked_labels(labels, images)
        x, q = observe_and_encode(images, labels)
        weights = vae.log_weights(
            x,
            q,
            _checked_num_samples(num_samples, max_samples),
            # Per image as well, so a row's z do not depend on the batch.
            noise.example_seeds(images, _checked(seed, _SEED_SPEC)),
            labels,
        )
        return {"log_weights": tf.transpose(weights)}

    def metadata():
        return {
            "latent_dim": tf.constant(latent_dim, tf.int32),
            "image_shape": tf.constant(info.image_shape, tf.int32),
            "likelihood": tf.constant(config.likelihood),
            "posterior": tf.constant(config.posterior),
            "prior": tf.constant(config.prior),
            "latent_dims": tf.constant(config.latent_dim, tf.int32),
            # 0 for a VAE that takes no labels.
            "num_classes": tf.constant(vae.num_classes or 0, tf.int32),
            "dataset": tf.constant(info.name),
            "seed": tf.constant(config.seed, tf.int64),
            "max_samples": tf.constant(config.export_max_samples, tf.int32),
            "fixed_seed": fixed_seed(config.seed),
            "json": tf.constant(_to_json(description)),
        }

    # A conditional VAE's signatures take the classes last.
    labels = [_LABELS_SPEC] if vae.conditional else []
    return {
        "encode": (encode, [image_spec, *labels]),
        "decode": (decode, [z_spec, *labels]),
        "sample": (sample, [_NUM_SAMPLES_SPEC, _SEED_SPEC, *labels]),
        "score": (score, [image_spec, *labels]),
        "reconstruct": (reconstruct, [image_spec, *labels]),
        "log_weights": (
            log_weights,
            [image_spec, _NUM_SAMPLES_SPEC, _SEED_SPEC, *labels],
        ),
        "metadata": (metadata, []),
    }


def _archive(
    vae: model.VAE, config: Config, info: data.DatasetInfo
) -> tuple[keras.export.ExportArchive, dict]:
    """Returns (archive, {signature name: concrete function}) of `vae`."""
    archive = keras.export.ExportArchive()
    archive.track(vae)
    concrete = {}
    for name, (fn, specs) in _signature_functions(vae, config, info).items():
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
    signature: tf.types.experimental.ConcreteFunction,
) -> dict[str, np.ndarray]:
    """Returns a small valid input of `signature`: zeros, batch 1, 1 sample."""
    values = {
        spec.name: np.zeros(
            [1 if size is None else size for size in spec.shape],
            spec.dtype.as_numpy_dtype,
        )
        for spec in tf.nest.flatten(signature.structured_input_signature)
        # An unconditional VAE's functions keep their `labels=None` default.
        if spec is not None
    }
    if "num_samples" in values:
        values["num_samples"] = np.ones([], np.int32)
    return values


def _write_warmup(path: str, model_name: str, signatures: dict) -> None:
    """Writes one PredictRequest per signature as TF Serving warmup records."""
    os.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for name, signature in signatures.items():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=name)
            )
            for input_name, value in _warmup_inputs(signature).items():
                request.inputs[input_name].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())


def check_export_base(export_base: str) -> None:
    """Raises `UsageError` if `export_base` exists and is not a folder."""
    if os.path.exists(export_base) and not os.path.isdir(export_base):
        raise errors.UsageError(
            f"--export_dir={export_base} is a file, not a folder (a TF Serving "
            "model base path, holding one folder per version). Pass a folder, "
            "or move the file away."
        )


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
    vae: model.VAE, config: Config, info: data.DatasetInfo, export_base: str
) -> str:
    """Exports `vae` to `<export_base>/<next version>/`; returns that folder's path.

    `vae` may come from any strategy: its weights are copied into a fresh
    model built outside any strategy, so the SavedModel holds plain variables
    and loads on any number of devices. Call it outside `strategy.scope()`.
    The export is written under a hidden name and renamed when complete, so
    a TF Serving process watching `export_base` never loads half of one.
    """
    if tf.distribute.has_strategy():
        raise ValueError(
            "export() must be called outside a tf.distribute strategy scope, so "
            "the SavedModel holds plain variables that load on any device count. "
            f"Received: strategy={tf.distribute.get_strategy()!r}"
        )
    check_export_base(export_base)
    fresh = model.build_vae(
        info.image_shape,
        seed=config.seed,
        num_classes=info.num_classes,
        **config.model_settings(),
    )
    fresh.set_weights(vae.get_weights())
    archive, signatures = _archive(fresh, config, info)

    os.makedirs(export_base, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-export-", dir=export_base)
    try:
        # mkdtemp makes the folder private; the model server may be another user.
        os.chmod(staging, 0o755)
        archive.write_out(staging, verbose=False)
        # ExportArchive has no public way to add a tf.saved_model.Asset to the
        # saved object, so the file is written into the folder's assets/
        # directly: the same place, but not listed in the SavedModel's asset
        # table (nothing reads it from there; TF Serving keeps the folder).
        assets = os.path.join(staging, "assets")
        os.makedirs(assets, exist_ok=True)
        with open(os.path.join(assets, METADATA_FILENAME), "w") as f:
            f.write(_to_json(describe(config, info)))
        _write_warmup(
            os.path.join(staging, "assets.extra", WARMUP_FILENAME),
            os.path.basename(os.path.normpath(export_base)),
            signatures,
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
