"""Shared test fixtures: a tiny configuration, a tiny real TFDS dataset, MNIST.

`TinyImages` is a genuine TFDS builder (registered as `tiny_images`) that
generates 8x8 grayscale images of bars, so unit tests exercise the real
prepare -> as_dataset path in about a second, without any download.
"""

import contextlib
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow.core.protobuf import config_pb2

from tfvae import builder
from tfvae.config import Config

REPO = pathlib.Path(__file__).resolve().parent.parent
# The four original MNIST files; CI points this at ../shared/datasets/mnist.
MNIST_MANUAL_DIR = pathlib.Path(
    os.environ.get(
        "TFVAE_MNIST_MANUAL_DIR", REPO.parent / "shared" / "datasets" / "mnist"
    )
)
MNIST_FILES = [
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
]

requires_mnist = pytest.mark.skipif(
    not all((MNIST_MANUAL_DIR / name).exists() for name in MNIST_FILES),
    reason=f"the original MNIST files are not in {MNIST_MANUAL_DIR} (set "
    "TFVAE_MNIST_MANUAL_DIR to the folder holding them); real-data tests need them.",
)

TINY_SHAPE = (8, 8, 1)


class TinyImages(tfds.core.GeneratorBasedBuilder):
    """8x8 uint8 images: one bright horizontal or vertical bar plus noise."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=TINY_SHAPE),
                    "label": tfds.features.ClassLabel(num_classes=16),
                }
            )
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {
            "train": self._generate_examples(96, seed=0),
            "test": self._generate_examples(40, seed=1),
        }

    def _generate_examples(self, count, seed):
        rng = np.random.default_rng(seed)
        for index in range(count):
            label = int(rng.integers(16))
            image = rng.integers(0, 40, size=TINY_SHAPE, dtype=np.uint8)
            if label < 8:
                image[label, :, 0] = 255
            else:
                image[:, label - 8, 0] = 255
            yield index, {"image": image, "label": label}


def tiny_table_settings(root: pathlib.Path) -> dict:
    """Returns the settings of a fast table run in `root`, its data not named:
    the `Config` fields `--table` and table `--dataset` tests share."""
    return {
        "label_column": "kind",
        "latent_dim": 2,
        "hidden_units": (16,),
        "learning_rate": 1e-2,
        "batch_size": 16,
        "mixed_precision": "float32",
        "steps_per_execution": 1,
        "model_dir": str(root / "run"),
        "export_dir": str(root / "export"),
        "export": False,
    }


def tiny_config(tmp_path: pathlib.Path, **overrides) -> Config:
    """Returns a fast Config for `tiny_images`; `overrides` replace fields.

    Only what differs from the flags' defaults is listed.
    """
    settings = {
        "dataset": "tiny_images",
        "data_dir": str(tmp_path / "tfds"),
        "latent_dim": 2,
        "hidden_units": (16,),
        "conv_filters": (4, 8),
        "learning_rate": 1e-2,
        "batch_size": 16,
        "epochs": 2,
        "jit_compile": False,
        # Not "auto": tests check float32 numbers, whatever the CPU has.
        "mixed_precision": "float32",
        "steps_per_execution": 1,
        "iwae_samples": 10,
        "model_dir": str(tmp_path / "run"),
        "export_dir": str(tmp_path / "export"),
        "export": False,
    }
    return Config(**{**settings, **overrides})


def tiny_images(count, seed=0):
    """Returns `count` random raw images of `TINY_SHAPE`, uint8."""
    rng = np.random.default_rng(seed)
    return tf.constant(rng.integers(0, 256, (count, *TINY_SHAPE)), tf.uint8)


def tiny_vae(tmp_path: pathlib.Path, image_shape=TINY_SHAPE, **overrides):
    """Returns the VAE of `tiny_config(tmp_path, **overrides)` for `image_shape`.

    A conditional one has the 16 classes of `tiny_images`.
    """
    config = tiny_config(tmp_path, **overrides)
    return builder.build_vae(
        image_shape, seed=config.seed, num_classes=16, **config.model_settings()
    )


def run_command(
    command: list[str],
    timeout: float = 300,
    env: dict | None = None,
    cwd: pathlib.Path = REPO,
):
    """Runs `command` in `cwd` (the repo root); returns the CompletedProcess (text)."""
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
    )


SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")


def saved_model_cli(*args) -> subprocess.CompletedProcess:
    """Runs TF's `saved_model_cli` (the serving contract's SignatureDef path)."""
    return run_command([SAVED_MODEL_CLI, *args])


def saved_model_cli_run(path, signature, outdir, *input_args):
    """Runs `saved_model_cli run` on `signature`; outputs go to `outdir` as .npy."""
    return saved_model_cli(
        "run",
        "--dir",
        path,
        "--tag_set",
        "serve",
        "--signature_def",
        signature,
        "--outdir",
        str(outdir),
        *input_args,
    )


def run_python(code: str, timeout: float = 300, env: dict | None = None):
    """Runs `code` in a fresh interpreter; returns the CompletedProcess."""
    return run_command([sys.executable, "-c", code], timeout, env)


def tiny_training_command(root: pathlib.Path, prelude: str = "", **overrides):
    """Returns a command training `tiny_config(root, **overrides)` in a fresh process.

    `prelude` is code run first (set up devices, patch the model); the
    process prints metrics.json's dict as its last line of stdout.
    """
    code = (
        f"{prelude}\n"
        "import json, pathlib\n"
        "from tests.conftest import tiny_config\n"
        "from tfvae import training\n"
        f"config = tiny_config(pathlib.Path({str(root)!r}), **{overrides!r})\n"
        "print(json.dumps(training.train_and_evaluate(config)))\n"
    )
    return [sys.executable, "-c", code]


def run_module(module: str, *args: str, timeout: float = 600):
    """Runs `python -m module args...` as a user would; returns the CompletedProcess."""
    return run_command([sys.executable, "-m", module, *args], timeout)


def wait_for_first_backup(run_dir: pathlib.Path, timeout: float = 300) -> pathlib.Path:
    """Waits until a training run in `run_dir` has backed up an epoch.

    Returns the path of its BackupAndRestore metadata; fails after `timeout` s.
    """
    metadata = run_dir / "backup" / "training_metadata.json"
    deadline = time.monotonic() + timeout
    while not metadata.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metadata.exists(), f"no epoch finished in {run_dir} within {timeout} s"
    return metadata


@contextlib.contextmanager
def session_signatures(export_path: str):
    """Yields run(signature name, feeds) -> outputs, through a TF1 session.

    TF Serving's path: `Session.run` checks feeds against the placeholders'
    shapes in Python, so a callable feeds them unchecked instead, as TF
    Serving's C++ Session::Run does.
    """
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta_graph = tf.compat.v1.saved_model.loader.load(
            session, ["serve"], export_path
        )

    def run(signature_name, feeds):
        signature = meta_graph.signature_def[signature_name]
        names = sorted(signature.outputs)
        options = config_pb2.CallableOptions(
            feed=[signature.inputs[key].name for key in feeds],
            fetch=[signature.outputs[name].name for name in names],
        )
        outputs = session._make_callable_from_options(options)(*feeds.values())
        return dict(zip(names, outputs, strict=True))

    try:
        yield run
    finally:
        session.close()
