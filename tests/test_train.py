"""Tests for the `python -m tfvae.train` command line, run as a user runs it."""

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import (
    MNIST_MANUAL_DIR,
    REPO,
    requires_mnist,
    run_module,
    wait_for_first_backup,
)


def _train(*flags):
    return run_module("tfvae.train", *flags)


@pytest.mark.parametrize(
    "flags, message",
    [
        # Each layer that refuses input: absl, the Config's checks, the
        # flag-presence check, and the dataset's metadata. The checks
        # themselves are tested in-process in test_config.py.
        (["--likelihood=poisson"], "value should be one of"),
        (
            ["--activation=sofplus"],
            "--activation is not a Keras activation name (e.g. relu, softplus, "
            "gelu, tanh). Received: --activation=sofplus",
        ),
        (
            ["--batch_size=0"],
            "--batch_size must be at least 1. Received: --batch_size=0",
        ),
        (["--likelihood=gaussian", "--binarize"], "--binarize only applies to"),
        (["--dataset=mnistt"], "Unknown dataset: --dataset=mnistt"),
    ],
)
def test_bad_flags_fail_fast_with_the_fix(tmp_path, flags, message):
    result = _train(f"--model_dir={tmp_path / 'run'}", "--noexport", *flags)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_model_dir_is_required():
    result = _train("--noexport")
    assert result.returncode != 0
    assert "--model_dir is required" in result.stderr


def test_an_empty_manual_dir_is_refused_naming_the_files(tmp_path):
    (tmp_path / "manual").mkdir()
    result = _train(
        f"--model_dir={tmp_path / 'run'}",
        f"--data_dir={tmp_path / 'tfds'}",
        f"--manual_dir={tmp_path / 'manual'}",
    )
    assert result.returncode != 0
    assert "is empty" in result.stderr
    assert "train-images-idx3-ubyte.gz" in result.stderr


@pytest.fixture(scope="module")
def mnist_data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


def _mnist_flags(data_dir, run_dir, epochs):
    return [
        "--flagfile=mnist.flags",
        f"--manual_dir={MNIST_MANUAL_DIR}",
        f"--data_dir={data_dir}",
        f"--model_dir={run_dir}",
        f"--epochs={epochs}",
        "--noexport",
    ]


@pytest.mark.slow
@requires_mnist
def test_real_mnist_one_epoch(mnist_data_dir, tmp_path):
    result = _train(*_mnist_flags(mnist_data_dir, tmp_path / "run", 1))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # Measured: 151.0 nats after one epoch (the Pyro tutorial reports ~156 on
    # gray pixels); 10 epochs reach 105.6.
    assert 120 < metrics["test_neg_elbo"] < 160
    assert metrics["train_examples_per_s"] > 1000
    assert (tmp_path / "run" / "samples.png").stat().st_size > 1000


@pytest.mark.slow
@requires_mnist
def test_real_mnist_killed_mid_epoch_resumes(mnist_data_dir, tmp_path):
    run = tmp_path / "run"
    flags = _mnist_flags(mnist_data_dir, run, 3)
    process = subprocess.Popen(
        [sys.executable, "-m", "tfvae.train", *flags],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        metadata = wait_for_first_backup(run)
        time.sleep(0.5)  # Into the second epoch.
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    completed = json.loads(metadata.read_text())["epoch"]
    assert completed in (1, 2)

    result = _train(*flags)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Epoch {completed + 1}/3" in result.stdout
    assert f"Epoch {completed}/3" not in result.stdout
    assert json.loads(metadata.read_text())["epoch"] == 3
    epochs = [
        line.split(",")[0] for line in (run / "history.csv").read_text().split()[1:]
    ]
    assert epochs == ["0", "1", "2"]
