"""SavedModel export: a trained VAE as plain TF graphs for TF Serving.

`export(vae, config, info, export_base)` writes `<export_base>/<version>/`, the
next free integer version (TF Serving's model base path layout). Loading it
needs TensorFlow only (`tf.saved_model.load(path)`, `tensorflow_model_server`,
`saved_model_cli`): no tfvae, Keras or TFP code. Signatures, all
`tensorflow/serving/predict` and batch-major, where H, W, C is the image shape
and L the latent_dim:

  encode (also serving_default)
      images uint8 [batch, H, W, C] -> mean float32 [batch, L],
      stddev [batch, L] (diag posterior) or scale_tril [batch, L, L] (full),
      z [batch, L] (one posterior sample)
  decode
      z float32 [batch, L] -> mean float32 [batch, H, W, C] (E[x|z] in [0, 1])
      plus p(x|z)'s parameters: logits [batch, H, W, C] (bernoulli,
      continuous_bernoulli) or [batch, H, W, C, 256] (categorical), or loc and
      scale [batch, H, W, C] (gaussian)
  sample
      num_samples int32 [], seed int64 [2] -> images float32
      [num_samples, H, W, C]: E[x|z] for z ~ N(0, I) drawn with the stateless
      `seed` (same seed, same images)
  score
      images -> neg_elbo, reconstruction, kl float32 [batch], in nats
  reconstruct
      images -> images float32 [batch, H, W, C]: E[x|z] at z = the posterior mean
  log_weights
      images, num_samples int32 [], seed int64 [2] -> log_weights float32
      [batch, num_samples]: log p(x, z_k) - log q(z_k|x) for z_k ~ q(z|x)
      drawn with `seed`. logmeanexp over the k of several calls with
      different seeds is the IWAE bound on log p(x).
  metadata
      no inputs -> latent_dim int32, image_shape int32 [3], likelihood,
      posterior, dataset (strings), seed int64, fixed_seed int64 [2] and json
      (all of `describe`, one string). TF Serving serves it over gRPC only:
      its REST API rejects signatures without inputs.

Images are raw pixels as TFDS gives them; the likelihood's preprocessing
(binarizing, scaling) happens inside. The image signatures draw their noise
from one fixed stateless seed, so their outputs are deterministic:

  fixed_seed = [config.seed, FIXED_SEED_STREAM]                 # int64 [2]
  observe_seed, z_seed = tf.random.experimental.stateless_split(fixed_seed, 2)

`observe_seed` drives the observation (dynamic binarization) in encode,
reconstruct, score and log_weights, so all four see the same x. encode's z is
mean + scale @ tf.random.stateless_normal([batch, L], z_seed): the z that
score evaluates, as score is `VAE.neg_elbo_terms(images, fixed_seed)`, which
splits its seed the same way. An example's noise depends on its row in the
batch. `sample` with seed [config.seed, 1] decodes the z of the run's
samples.png.

The version folder also holds `assets/tfvae.json` (what `metadata` returns as
json) and `assets.extra/tf_serving_warmup_requests`, one PredictRequest per
signature, which TF Serving replays when it loads the model.
"""

import dataclasses
import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from tfvae import data, model
from tfvae.config import Config

# Training draws its noise from (seed, step) with step = 1, 2, ... and
# `VAE.call` from (seed, 0); the export's fixed noise has a stream of its own.
FIXED_SEED_STREAM = -1

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
    """Returns the stateless seed of the export's image signatures, int64 `[2]`."""
    return tf.constant([seed, FIXED_SEED_STREAM], tf.int64)


def describe(config: Config, info: data.DatasetInfo) -> dict:
    """Returns what an export says about itself (`metadata`, `assets/tfvae.json`)."""
    return {
        "latent_dim": config.latent_dim,
        "image_shape": list(info.image_shape),
        "likelihood": config.likelihood,
        "posterior": config.posterior,
        "dataset": info.name,
        "seed": config.seed,
        "fixed_seed": [config.seed, FIXED_SEED_STREAM],
        "signatures": list(SIGNATURES),
        "config": dataclasses.asdict(config),
        "dataset_info": dataclasses.asdict(info),
    }


def _to_json(description: dict) -> str:
    return json.dumps(description, indent=2, sort_keys=True) + "\n"


_NUM_SAMPLES_SPEC = tf.TensorSpec([], tf.int32, name="num_samples")
_SEED_SPEC = tf.TensorSpec([2], tf.int64, name="seed")


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


def _checked_num_samples(num_samples: tf.Tensor) -> tf.Tensor:
    """Returns `num_samples`, made to fail at run time unless a positive scalar."""
    num_samples = _checked(num_samples, _NUM_SAMPLES_SPEC)
    check = tf.debugging.assert_positive(
        num_samples, message="num_samples must be a positive int32 scalar"
    )
    # Without the dependency, the op drawing -1 samples could fail first, with
    # a vaguer message.
    with tf.control_dependencies([check]):
        return tf.identity(num_samples)


def _signature_functions(
    vae: model.VAE, config: Config, info: data.DatasetInfo
) -> dict[str, tf.types.experimental.PolymorphicFunction]:
    """Returns one tf.function per signature (serving_default aside), by name.

    They close over `vae` instead of holding it, so the SavedModel's object
    graph has no Keras objects (whose traced calls return TFP distributions,
    which would need TFP to load).
    """
    latent_dim = config.latent_dim
    likelihood = vae.likelihood
    description = describe(config, info)
    image_spec = tf.TensorSpec([None, *info.image_shape], tf.uint8, name="images")
    z_spec = tf.TensorSpec([None, latent_dim], tf.float32, name="z")

    def observe_and_encode(images):
        observe_seed, _ = vae.split_seed(fixed_seed(config.seed))
        return vae.observe_and_encode(_checked(images, image_spec), observe_seed)

    def encode(images):
        # The same x and z that score's `neg_elbo_terms` evaluates.
        _, q, z = vae.posterior_sample(
            _checked(images, image_spec), fixed_seed(config.seed)
        )
        return {"mean": q.mean(), **vae.encoder.head.parameters(q), "z": z}

    def decode(z):
        p = vae.decoder(_checked(z, z_spec))
        return {"mean": likelihood.mean_image(p), **likelihood.parameters(p)}

    def sample(num_samples, seed):
        z = tf.random.stateless_normal(
            [_checked_num_samples(num_samples), latent_dim],
            _checked(seed, _SEED_SPEC),
        )
        return {"images": vae.decode_mean(z)}

    def score(images):
        reconstruction, kl = vae.neg_elbo_terms(
            _checked(images, image_spec), fixed_seed(config.seed)
        )
        return {
            "neg_elbo": reconstruction + kl,
            "reconstruction": reconstruction,
            "kl": kl,
        }

    def reconstruct(images):
        _, q = observe_and_encode(images)
        return {"images": vae.decode_mean(q.mean())}

    def log_weights(images, num_samples, seed):
        x, q = observe_and_encode(images)
        weights = vae.log_weights(
            x,
            q,
            _checked_num_samples(num_samples),
            _checked(seed, _SEED_SPEC),
        )
        return {"log_weights": tf.transpose(weights)}

    def metadata():
        return {
            "latent_dim": tf.constant(latent_dim, tf.int32),
            "image_shape": tf.constant(info.image_shape, tf.int32),
            "likelihood": tf.constant(config.likelihood),
            "posterior": tf.constant(config.posterior),
            "dataset": tf.constant(info.name),
            "seed": tf.constant(config.seed, tf.int64),
            "fixed_seed": fixed_seed(config.seed),
            "json": tf.constant(_to_json(description)),
        }

    functions = {
        "encode": (encode, [image_spec]),
        "decode": (decode, [z_spec]),
        "sample": (sample, [_NUM_SAMPLES_SPEC, _SEED_SPEC]),
        "score": (score, [image_spec]),
        "reconstruct": (reconstruct, [image_spec]),
        "log_weights": (log_weights, [image_spec, _NUM_SAMPLES_SPEC, _SEED_SPEC]),
        "metadata": (metadata, []),
    }
    # No autograph: the functions have no tensor-dependent Python control flow.
    return {
        name: tf.function(fn, input_signature=specs, autograph=False)
        for name, (fn, specs) in functions.items()
    }


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
    fresh = model.build_vae(config, info.image_shape)
    fresh.set_weights(vae.get_weights())
    root = tf.Module(name="tfvae")
    # What the functions read; tracked so that the SavedModel saves them.
    root.model_variables = [weight.value for weight in fresh.weights]
    functions = _signature_functions(fresh, config, info)
    for name, function in functions.items():
        setattr(root, name, function)
    signatures = {name: functions[name].get_concrete_function() for name in functions}
    signatures["serving_default"] = signatures["encode"]

    os.makedirs(export_base, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-export-", dir=export_base)
    try:
        # mkdtemp makes the folder private; the model server may be another user.
        os.chmod(staging, 0o755)
        with tempfile.TemporaryDirectory() as scratch:
            metadata_path = os.path.join(scratch, METADATA_FILENAME)
            with open(metadata_path, "w") as f:
                f.write(_to_json(describe(config, info)))
            root.metadata_file = tf.saved_model.Asset(metadata_path)
            tf.saved_model.save(root, staging, signatures=signatures)
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
