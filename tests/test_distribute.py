"""Tests for tfvae.distribute: replicas' batches, mirrored and multi-worker runs.

Every test with several devices or processes runs in subprocesses: logical
CPU devices and a MultiWorkerMirroredStrategy must be set up before
TensorFlow runs its first op.
"""

import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import textwrap
import time

import h5py
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import (
    REPO,
    run_command,
    run_python,
    tiny_training_command,
    wait_for_first_backup,
)
from tfvae import data, distribute, errors
from tfvae import run_dir as run_dir_lib

_TWO_CPUS = """
import tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * 2,
)
"""


def test_multi_worker_without_tf_config_is_a_usage_error(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(
        errors.UsageError, match="TF_CONFIG environment variable, which is not set"
    ):
        distribute.make_strategy("multi_worker")


@pytest.mark.parametrize(
    "tf_config, message",
    [
        ("worker 0", "which is not JSON"),
        ("[]", "needs a 'cluster' and this worker's 'task'"),
        ('{"cluster": {"worker": ["h:1"]}}', "needs a 'cluster' and this worker's"),
        (
            '{"cluster": {"worker": ["h:1"]}, "task": {"type": "chief", "index": 0}}',
            r"whose 'type' is a job of the cluster \(\['worker'\]\)",
        ),
        (
            '{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": 1}}',
            "names task 1 of 'worker', which has 1 host",
        ),
    ],
)
def test_a_bad_tf_config_is_refused_naming_the_problem(monkeypatch, tf_config, message):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(errors.UsageError, match=message):
        distribute.make_strategy("multi_worker")


def test_unknown_strategy_is_named():
    with pytest.raises(ValueError, match="strategy='tpu'"):
        distribute.make_strategy("tpu")


def test_each_replica_gets_its_consecutive_block_of_every_batch():
    result = run_python(
        _TWO_CPUS
        + textwrap.dedent(
            """
            import json
            from tfvae import distribute
            strategy = distribute.make_strategy("mirrored")
            batches = tf.data.Dataset.range(14).batch(8)  # 8 rows, then 6.
            seen = []
            dataset = strategy.experimental_distribute_dataset(batches)  # As Keras.
            for per_replica in dataset:
                seen.append([
                    t.numpy().tolist()
                    for t in strategy.experimental_local_results(per_replica)
                ])
            print(json.dumps(seen))
            """
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == [[[0, 1, 2, 3], [4, 5, 6, 7]], [[8, 9, 10], [11, 12, 13]]]


def test_a_worker_keeps_its_replicas_blocks_of_images_and_labels():
    rows = tf.data.Dataset.range(14)
    pairs = tf.data.Dataset.zip(
        rows.map(lambda i: tf.cast(tf.fill([1], i), tf.uint8)), rows
    ).batch(8)  # 8 rows, then 6: blocks of 2 for 4 replicas.
    # The second of two workers, each with two of the four replicas.
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=4
    )
    blocks = list(distribute.worker_blocks(pairs, context, cardinality=2))
    assert [labels.numpy().tolist() for _, labels in blocks] == [
        [4, 5],
        [6, 7],
        [12, 13],
        [],
    ]
    for images, labels in blocks:
        # Collective ops cannot reduce uint8; labels keep their dtype.
        assert images.dtype == tf.int32 and labels.dtype == tf.int64
        np.testing.assert_array_equal(images.numpy()[:, 0], labels.numpy())


def _weights(run_dir) -> list[np.ndarray]:
    values = []
    with h5py.File(os.path.join(run_dir, run_dir_lib.WEIGHTS), "r") as f:
        f.visititems(
            lambda name, item: (
                values.append(item[()]) if isinstance(item, h5py.Dataset) else None
            )
        )
    return values


def _assert_same_weights(a_dir, b_dir):
    a, b = _weights(a_dir), _weights(b_dir)
    assert len(a) == len(b) > 4
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=2e-5)


def _train_command(root, strategy, epochs, data_dir, prelude="", **overrides):
    return tiny_training_command(
        root,
        prelude,
        strategy=strategy,
        epochs=epochs,
        data_dir=str(data_dir),
        **overrides,
    )


@pytest.fixture
def tiny_data_dir(tmp_path):
    data.prepare("tiny_images", str(tmp_path / "tfds"), None)
    return tmp_path / "tfds"


# The ELBO, and the K-sample objectives with their own noise per sample and
# layer: the IWAE bound with the DReG gradient, and two stochastic layers
# under a learned prior, conditional on the class.
_FAMILY = [
    {},
    {"objective": "iwae", "train_samples": 3, "kl": "monte_carlo", "gradient": "dreg"},
    {
        "latent_dim": (3, 2),
        "kl": "monte_carlo",
        "prior": "mog",
        "prior_components": 3,
        "conditional": True,
        "train_samples": 2,
    },
    # The streaming input path: the same global batches on any replica count.
    {"memory_budget": "0"},
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "settings", _FAMILY, ids=["elbo", "iwae-dreg", "two-layer-cvae", "streaming"]
)
def test_mirrored_training_matches_one_device(tmp_path, tiny_data_dir, settings):
    one = run_command(
        _train_command(tmp_path / "one", "one_device", 2, tiny_data_dir, **settings)
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_command(
        _train_command(
            tmp_path / "two", "mirrored", 2, tiny_data_dir, _TWO_CPUS, **settings
        )
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads(two.stdout.strip().splitlines()[-1])["replicas"] == 2
    assert "ran out of data" not in two.stderr
    _assert_same_weights(tmp_path / "one" / "run", tmp_path / "two" / "run")


def _free_ports(count):
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def _start_workers(root, epochs, data_dir, ports, prelude="", logs=None, **overrides):
    """Starts one process per port as the workers of one job; returns them."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes = []
    for index in range(len(ports)):
        # Before the worker starts: it makes its scratch folder in TMPDIR.
        (root / f"tmp{index}").mkdir(parents=True, exist_ok=True)
        tf_config = json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}
        )
        processes.append(
            subprocess.Popen(
                _train_command(
                    root, "multi_worker", epochs, data_dir, prelude, **overrides
                ),
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=logs[index] if logs else subprocess.DEVNULL,
                text=True,
                env={
                    **os.environ,
                    "TF_CPP_MIN_LOG_LEVEL": "2",
                    "TF_CONFIG": tf_config,
                    "TMPDIR": str(root / f"tmp{index}"),
                },
            )
        )
    return processes


def _run_job_to_end(root, epochs, data_dir, prelude="", **overrides):
    """Runs a 2-worker job until it ends; returns (exit codes, workers' stderr)."""
    paths = [root.parent / f"{root.name}.worker{i}.log" for i in range(2)]
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(open(path, "w")) for path in paths]
        workers = _start_workers(
            root, epochs, data_dir, _free_ports(2), prelude, logs, **overrides
        )
        try:
            for worker in workers:
                worker.communicate(timeout=300)
        finally:
            _stop(workers)
    return [w.returncode for w in workers], [path.read_text() for path in paths]


def _stop(processes):
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
    for process in processes:
        process.wait(timeout=60)


@pytest.mark.slow
def test_two_workers_match_one_process_and_only_the_chief_writes(
    tmp_path, tiny_data_dir
):
    single = run_command(
        _train_command(tmp_path / "single", "one_device", 2, tiny_data_dir)
    )
    assert single.returncode == 0, single.stderr[-3000:]

    root = tmp_path / "job"
    workers = _start_workers(root, 2, tiny_data_dir, _free_ports(2))
    try:
        outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    finally:
        _stop(workers)
    assert [w.returncode for w in workers] == [0, 0]
    chief, other = (json.loads(o.strip().splitlines()[-1]) for o in outputs)
    assert chief["test_neg_elbo"] == pytest.approx(other["test_neg_elbo"], rel=1e-5)
    _assert_same_weights(tmp_path / "single" / "run", root / "run")
    # The second worker wrote to a scratch folder and removed it.
    assert os.listdir(root / "tmp1") == []
    assert (root / "run" / "metrics.json").exists()


@pytest.mark.slow
def test_two_streaming_workers_read_their_own_shares_and_stay_in_sync(
    tmp_path, tiny_data_dir
):
    """Streaming, each worker reads its own share of the split, so the global
    batches differ from one process's (tests/test_streaming.py checks the
    shares are disjoint); the all-reduce keeps the workers' models equal."""
    root = tmp_path / "job"
    returncodes, errors = _run_job_to_end(root, 2, tiny_data_dir, memory_budget="0")
    assert returncodes == [0, 0], errors[0][-3000:] + errors[1][-3000:]
    chief = json.loads((root / "run" / "metrics.json").read_text())
    assert chief["epochs"] == 2 and chief["input"] == "streamed"
    # 96 examples, 48 per worker, 8 rows of each global batch of 16: 6 steps.
    assert chief["steps_per_epoch"] == 6


@pytest.mark.slow
def test_a_killed_worker_job_resumes_without_lost_or_repeated_epochs(
    tmp_path, tiny_data_dir
):
    # Slow the steps down so that a kill lands mid-epoch.
    slow = textwrap.dedent(
        """
        import time
        from tfvae import callbacks
        callbacks.Throughput.on_train_batch_end = lambda self, batch, logs=None: (
            time.sleep(0.3))
        """
    )
    root = tmp_path / "job"
    workers = _start_workers(root, 4, tiny_data_dir, _free_ports(2), slow)
    try:
        metadata = wait_for_first_backup(root / "run")
        time.sleep(0.6)  # Into the next epoch.
        workers[1].send_signal(signal.SIGKILL)  # A worker is lost...
        time.sleep(1.0)
    finally:
        _stop(workers)  # ...and the job is restarted, as a cluster manager does.
    completed = json.loads(metadata.read_text())["epoch"]
    assert 1 <= completed < 4

    returncodes, errors = _run_job_to_end(root, 4, tiny_data_dir)  # The restart.
    assert returncodes == [0, 0], errors[0][-3000:]
    assert json.loads(metadata.read_text())["epoch"] == 4
    with open(root / "run" / "history.csv") as f:
        epochs = [row["epoch"] for row in csv.DictReader(f)]
    assert epochs == ["0", "1", "2", "3"]


@pytest.mark.slow
def test_a_nan_loss_stops_every_worker_with_the_step(tmp_path, tiny_data_dir):
    # Step logs are synced across workers, so every worker sees the NaN at the
    # same step and stops; the chief's backup of epoch 1 stays as it was.
    poison = textwrap.dedent(
        """
        import numpy as np
        import tensorflow as tf
        from tfvae import model
        real = model.VAE.objective_terms
        def poisoned(self, images, seed, labels=None, num_samples=1):
            terms, chain = real(self, images, seed, labels, num_samples)
            # 6 training + 3 validation steps per epoch: step 12 is in epoch 2.
            bad = tf.where(seed[1] >= 12, np.nan, 0.0)
            return {name: value + bad for name, value in terms.items()}, chain
        model.VAE.objective_terms = poisoned
        """
    )
    root = tmp_path / "job"
    returncodes, errors = _run_job_to_end(root, 3, tiny_data_dir, poison)
    assert returncodes == [1, 1]
    for log in errors:
        assert "FloatingPointError" in log
        assert "training step 9 (epoch 2, batch 3)" in log
    backup = json.loads(
        (root / "run" / "backup" / "training_metadata.json").read_text()
    )
    assert backup["epoch"] == 1
