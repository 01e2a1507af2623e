r"""The table rows of `scripts/benchmark.py --model=table`: a table VAE's speed.

    python scripts/benchmark.py --model=table --table_cache=/tmp/tfvae-tables \
        --model_dir=/tmp/table_bench \
        --hidden_units=128,128 --latent_dim=16 --batch_size=500 --epochs=3 \
        --tvae_python=/tmp/tvae-venv/bin/python \
        --tvae_script=../shared/bench/tvae_peer.py

Measures, each training in a fresh process (so its peak RSS is its own):

- a generated table of --table_rows rows and --table_columns mixed columns
  (real, positive, count, binary and categorical in turn, every third column
  with 5% missing cells, all correlated through 5 factors), written once as
  Parquet under --table_cache: training examples/s of a table VAE of the
  flags' sizes, with the table in memory (`tables.read_table`,
  `tables.table_batches`' endless stream, the command line's) and streamed
  (`table_streaming.streamed_table`, blocks of --shuffle_buffer rows), each
  with its peak RSS and the seconds from start to the first trained epoch;
  and the fraction of the float32 product floor (`benchmark._ProductFloor`)
  each reaches;
- with --tvae_python and --tvae_script: the tabular peer, ctgan's TVAE
  (`tvae_peer.py`, run by that interpreter: a virtualenv with ctgan), on its
  own generated table of --tvae_rows rows and --tvae_columns columns, and
  tfvae on the same table (its `table()` function, written to Parquet) with
  TVAE's network: batch 500, 128-128 ReLU networks, a 128-d latent
  (`speedup_vs_tvae`, and `first_epoch_speedup_vs_tvae`: the seconds to a
  first trained epoch, counting the table's preparation; TVAE's is its
  preparation and one steady epoch), and at the same sizes with the flags'
  `--activation` (`softplus_speedup_vs_tvae` at the default).

Each trains on full batches and compiles as `python -m tfvae.train` does
(`--jit_compile` resolved by `devices.resolve`, `--steps_per_execution`);
the figures' `jit_compile` is what Keras resolved. --compare_xla does not
apply here.

Every figure is a ratio within one run: compare ratios, not absolute
figures across runs on a shared machine.
"""

import importlib.util
import json
import os
import resource
import subprocess
import sys
import time

import keras
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf
from absl import flags, logging

from tfvae import devices, errors, fitting, table_model, table_streaming, tables

flags.DEFINE_string(
    "table_cache", None, "Folder for the generated tables (written once, reused)."
)
flags.DEFINE_integer(
    "table_rows", 1_000_000, "Rows of the generated table.", lower_bound=100
)
flags.DEFINE_integer(
    "table_columns", 50, "Columns of the generated table.", lower_bound=5
)
flags.DEFINE_string("tvae_python", None, "A Python with ctgan, for the TVAE peer.")
flags.DEFINE_string("tvae_script", None, "Path of the peer's tvae_peer.py.")
flags.DEFINE_integer("tvae_rows", 100_000, "Rows of the peer's table.", lower_bound=100)
flags.DEFINE_integer("tvae_columns", 20, "Columns of the peer's table.", lower_bound=4)
flags.DEFINE_integer("tvae_epochs", 3, "Timed epochs of the peer.", lower_bound=1)

FLAGS = flags.FLAGS

# The generated table's column kinds, in turn, and its factors.
_KINDS = ("real", "positive", "count", "binary", "categorical")
_FACTORS = 5
_MISSING = 0.05
_GENERATED_CHUNK = 100_000
# TVAE's defaults (ctgan.TVAE): tfvae trains the peer's table at these sizes.
# ReLU is its networks' activation (tfvae's default is softplus).
TVAE_SETTINGS = {
    "batch_size": 500,
    "hidden_units": (128, 128),
    "latent_dim": 128,
    "activation": "relu",
}


def check_flags() -> None:
    """Refuses table flags `measure` cannot run with, before any work (the
    model's own, such as --epochs, `benchmark.main` checks)."""
    if not FLAGS.table_cache:
        raise errors.UsageError(
            "--model=table writes its generated table once: add "
            "--table_cache=FOLDER (outside the repository, e.g. /tmp/tfvae-tables)."
        )
    if bool(FLAGS.tvae_python) != bool(FLAGS.tvae_script):
        raise errors.UsageError("--tvae_python and --tvae_script go together.")


def _generated_chunk(rng, loadings, rows):
    """Returns `rows` rows of the generated table: its columns in turn."""
    z = rng.normal(size=(rows, _FACTORS))
    values = z @ loadings + 0.5 * rng.normal(size=(rows, loadings.shape[1]))
    scale = np.sqrt((loadings**2).sum(axis=0) + 0.25)
    columns = {}
    for j in range(loadings.shape[1]):
        v = values[:, j] / scale[j]
        kind = _KINDS[j % len(_KINDS)]
        if kind == "real":
            cells = 3.0 * v + 10.0
        elif kind == "positive":
            cells = np.exp(0.7 * v)
        elif kind == "count":
            cells = rng.poisson(np.exp(0.6 * v + 1.0)).astype(np.float64)
        elif kind == "binary":
            cells = (v > 0.3).astype(np.float64)
        else:
            codes = np.digitize(v, [-0.84, -0.25, 0.25, 0.84])
            cells = np.array(["k0", "k1", "k2", "k3", "k4"], dtype=object)[codes]
        if j % 3 == 2:
            missing = rng.random(rows) < _MISSING
            cells = cells.copy()
            cells[missing] = None if kind == "categorical" else np.nan
        columns[f"{kind}_{j}"] = cells
    return pd.DataFrame(columns)


def generated_table(folder: str, rows: int, columns: int, seed: int = 0) -> str:
    """Returns the path of the generated table, writing it once (by chunks).

    Args:
        folder: the cache folder.
        rows, columns: its size.
        seed: seeds the loadings and the cells.

    Returns:
        `<folder>/table_<rows>x<columns>_seed<seed>.parquet`.
    """
    path = os.path.join(folder, f"table_{rows}x{columns}_seed{seed}.parquet")
    if os.path.exists(path):
        return path
    os.makedirs(folder, exist_ok=True)
    loadings = np.random.default_rng(seed).normal(size=(_FACTORS, columns))
    partial = f"{path}.partial-{os.getpid()}"
    logging.info("Writing the generated table, once, to %s.", path)
    writer = None
    for index, start in enumerate(range(0, rows, _GENERATED_CHUNK)):
        rng = np.random.default_rng([seed, index])
        frame = _generated_chunk(rng, loadings, min(_GENERATED_CHUNK, rows - start))
        batch = pa.Table.from_pandas(frame, preserve_index=False)
        writer = writer or pq.ParquetWriter(partial, batch.schema)
        writer.write_table(batch)
    writer.close()
    os.replace(partial, path)
    return path


class _Timer(keras.callbacks.Callback):
    """Records each epoch's end."""

    def __init__(self):
        super().__init__()
        self.ends = []

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(time.perf_counter())


def train_table(path: str, streamed: bool, settings: dict) -> dict:
    """Reads a table (in memory or streamed), trains a table VAE; returns figures.

    Run in a fresh process by `measure`, so that its peak RSS is its own.

    Args:
        path: the table.
        streamed: stream it (`table_streaming`) rather than read it whole.
        settings: batch_size, hidden_units, latent_dim, activation,
            learning_rate, epochs, seed, shuffle_buffer, mixed_precision,
            jit_compile (as the flag), steps_per_execution (as the flag).

    Returns:
        {"schema", "num_train", "prepare_s", "to_first_epoch_s",
        "first_epoch_s", "seconds_per_epoch", "train_examples_per_s",
        "peak_rss_mb", "mixed_precision", "jit_compile" (as Keras resolved
        it)}; examples/s counts the full batches trained.
    """
    start = time.perf_counter()
    keras.utils.set_random_seed(settings["seed"])
    batch_size, seed = settings["batch_size"], settings["seed"]
    if streamed:
        table = table_streaming.streamed_table(path, seed=seed)
        schema, num_train = table.schema, table.num_train
        steps = table.steps_per_epoch(batch_size)
        batches = table.train_batches(batch_size, seed, settings["shuffle_buffer"])
    else:
        schema, train, _ = tables.read_table(path, seed=seed)
        num_train, steps = len(train), len(train) // batch_size
        batches = tables.table_batches(
            train, schema, batch_size, shuffle_seed=seed, first_epoch=0
        )
    prepared = time.perf_counter()
    execution = devices.resolve(
        settings["mixed_precision"], settings["jit_compile"], devices.TABLE
    )
    with devices.dtype_policy(execution.mixed_precision):
        vae = table_model.build_table_vae(
            schema,
            latent_dim=settings["latent_dim"],
            hidden_units=tuple(settings["hidden_units"]),
            activation=settings["activation"],
            seed=seed,
        )
    # As `python -m tfvae.train` compiles it (`fitting.fit_run`).
    vae.compile(
        optimizer=keras.optimizers.Adam(settings["learning_rate"]),
        jit_compile=fitting.jit_compile(
            execution.jit_compile, tf.distribute.get_strategy()
        ),
        steps_per_execution=fitting.steps_per_execution(
            settings["steps_per_execution"], steps
        ),
    )
    timer = _Timer()
    vae.fit(
        batches,
        epochs=settings["epochs"],
        steps_per_epoch=steps,
        verbose=0,
        callbacks=[timer],
    )
    del batches  # A live generator can hang the interpreter's exit.
    epochs = np.diff([prepared, *timer.ends])
    steady = float(np.mean(epochs[1:]))
    return {
        "schema": schema,
        "num_train": num_train,
        "prepare_s": round(prepared - start, 3),
        "to_first_epoch_s": round(timer.ends[0] - start, 3),
        "first_epoch_s": round(float(epochs[0]), 3),
        "seconds_per_epoch": round(steady, 3),
        "train_examples_per_s": round(steps * batch_size / steady, 1),
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        ),
        "mixed_precision": execution.mixed_precision,
        # What Keras resolved: it turns XLA off for a model that lacks it.
        "jit_compile": bool(vae.jit_compile),
    }


def _in_a_process(path: str, streamed: bool, settings: dict) -> dict:
    """Runs `train_table` in a fresh Python; returns its figures."""
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
        "import table_benchmark\n"
        f"figures = table_benchmark.train_table({path!r}, {streamed!r}, {settings!r})\n"
        "print(json.dumps(figures))\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    if ran.returncode:
        raise RuntimeError(f"Training on {path} failed:\n{ran.stderr[-3000:]}")
    return json.loads(ran.stdout.strip().splitlines()[-1])


def _with_floor(bench, figures: dict, settings: dict) -> dict:
    """Adds the product floor's figures (`bench._floor_figures`) to a run's."""
    schema = figures.pop("schema")
    vae = table_model.build_table_vae(
        schema,
        latent_dim=settings["latent_dim"],
        hidden_units=tuple(settings["hidden_units"]),
        seed=settings["seed"],
    )
    steps = figures["num_train"] // settings["batch_size"]
    floor = bench._ProductFloor(vae, settings["batch_size"], steps)
    before = floor.seconds_per_epoch(FLAGS.repeats)
    execution = devices.Execution(figures["mixed_precision"], figures["jit_compile"])
    bench._floor_figures(figures, floor, before, execution)
    return figures


def _peer_table(script: str, rows: int, columns: int, folder: str) -> str:
    """Writes the peer's own generated table (its `table()`) as Parquet, once."""
    path = os.path.join(folder, f"tvae_table_{rows}x{columns}.parquet")
    if not os.path.exists(path):
        spec = importlib.util.spec_from_file_location("tvae_peer", script)
        peer = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(peer)
        os.makedirs(folder, exist_ok=True)
        peer.table(rows, columns).to_parquet(f"{path}.partial")
        os.replace(f"{path}.partial", path)
    return path


def _tvae(settings: dict) -> dict:
    """TVAE on its table, then tfvae on the same table: TVAE's network, and
    the same sizes with the flags' activation."""
    command = [
        FLAGS.tvae_python,
        FLAGS.tvae_script,
        f"--rows={FLAGS.tvae_rows}",
        f"--columns={FLAGS.tvae_columns}",
        f"--epochs={FLAGS.tvae_epochs}",
    ]
    logging.info("Running the peer: %s", " ".join(command))
    ran = subprocess.run(command, capture_output=True, text=True, check=False)
    if ran.returncode:
        raise RuntimeError(f"The TVAE peer failed:\n{ran.stderr[-3000:]}")
    peer = json.loads(ran.stdout.strip().splitlines()[-1])
    path = _peer_table(
        FLAGS.tvae_script, FLAGS.tvae_rows, FLAGS.tvae_columns, FLAGS.table_cache
    )
    ours_settings = {**settings, **TVAE_SETTINGS, "epochs": FLAGS.tvae_epochs + 1}
    ours = _in_a_process(path, False, ours_settings)
    ours.pop("schema")
    activation = settings["activation"]
    # The same sizes with the flags' activation (tfvae's default, softplus),
    # unless that is TVAE's, trained above.
    own = (
        ours
        if activation == TVAE_SETTINGS["activation"]
        else _in_a_process(path, False, {**ours_settings, "activation": activation})
    )
    # TVAE's first trained epoch: its preparation, then one steady epoch.
    peer_first = peer["preprocess_s"] + peer["seconds_per_epoch"]
    return {
        "tvae": peer,
        "tfvae": {**ours, **TVAE_SETTINGS},
        # TVAE trains on all rows; tfvae on its training split.
        "speedup_vs_tvae": round(
            ours["train_examples_per_s"] / peer["examples_per_s"], 2
        ),
        "first_epoch_speedup_vs_tvae": round(peer_first / ours["to_first_epoch_s"], 2),
        f"{activation}_examples_per_s": own["train_examples_per_s"],
        f"{activation}_speedup_vs_tvae": round(
            own["train_examples_per_s"] / peer["examples_per_s"], 2
        ),
    }


def measure(config, bench) -> dict:
    """Runs every table measurement; returns the report.

    Args:
        config: the benchmark's `Config` (the model's sizes, batch, epochs,
            seed, shuffle_buffer, execution).
        bench: the `scripts/benchmark.py` module, whose product floor this
            reuses.

    Returns:
        The JSON-able report.
    """
    settings = {
        "batch_size": config.batch_size,
        "hidden_units": list(config.hidden_units),
        "latent_dim": config.latent_dim,
        "activation": config.activation,
        "learning_rate": config.learning_rate,
        "epochs": config.epochs,
        "seed": config.seed,
        "shuffle_buffer": config.shuffle_buffer,
        "mixed_precision": config.mixed_precision,
        "jit_compile": config.jit_compile,
        "steps_per_execution": config.steps_per_execution,
    }
    report = {
        "model": "table",
        **{k: settings[k] for k in ("batch_size", "hidden_units", "latent_dim")},
        "epochs": config.epochs,
        "cpus": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }
    if FLAGS.tvae_python:
        report["tvae_table"] = _tvae(settings)
    path = generated_table(FLAGS.table_cache, FLAGS.table_rows, FLAGS.table_columns)
    report["table"] = {
        "rows": FLAGS.table_rows,
        "columns": FLAGS.table_columns,
        "table_mb": round(table_streaming.table_bytes(path) / 2**20, 1),
    }
    for name, streamed in (("in_memory", False), ("streamed", True)):
        figures = _in_a_process(path, streamed, settings)
        report[name] = _with_floor(bench, figures, settings)
    report["streamed_vs_in_memory"] = round(
        report["streamed"]["train_examples_per_s"]
        / report["in_memory"]["train_examples_per_s"],
        3,
    )
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return report
