"""Tests for tfvae.table_training: `--table` runs train, resume, evaluate, export.

A tiny generated CSV (mixed columns, a missing cell, a label column) keeps
each run to a few seconds; one slow test trains on the real wine table.
"""

import dataclasses
import json
import pathlib
import shutil

import numpy as np
import pandas as pd
import pytest
from absl import flags

from tests.conftest import REPO, tiny_table_settings
from tfvae import errors, fields, run_dir, run_eval, tables, training
from tfvae.config import Config

WINE = REPO.parent / "shared" / "datasets" / "tabular" / "wine.csv"
requires_wine = pytest.mark.skipif(
    not WINE.exists(),
    reason=f"{WINE} is absent: the real-table tests need ../shared/datasets/tabular.",
)


def tiny_table(path: pathlib.Path, rows: int = 96, seed: int = 0) -> pathlib.Path:
    """Writes a CSV of `rows` correlated mixed rows to `path`; returns `path`.

    Columns: temp (real), rain (positive), visits (count), weather
    (categorical), kind (the label: a, b or c), one missing temp.
    """
    rng = np.random.default_rng(seed)
    z = rng.normal(size=rows)
    frame = pd.DataFrame(
        {
            "temp": 10 + 3 * z + rng.normal(size=rows),
            "rain": np.exp(0.5 * z + 0.3 * rng.normal(size=rows)),
            "visits": rng.poisson(np.exp(1 + 0.5 * z)),
            "weather": np.where(z > 0, "sun", "rain"),
            "kind": np.array(["a", "b", "c"])[np.arange(rows) % 3],
        }
    )
    frame.loc[3, "temp"] = np.nan
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def table_config(root: pathlib.Path, **overrides) -> Config:
    """Returns a fast `--table` Config on `tiny_table(root / "tiny.csv")`."""
    table = root / "tiny.csv"
    if not table.exists():
        tiny_table(table)
    settings = {**tiny_table_settings(root), "table": str(table), "epochs": 2}
    return Config(**{**settings, **overrides})


def _epochs(model_dir) -> list[str]:
    text = (pathlib.Path(model_dir) / run_dir.HISTORY).read_text()
    return [line.split(",")[0] for line in text.split()[1:]]


def _flags_config(*args: str) -> Config:
    """Returns the Config `python -m tfvae.train args...` runs, read in this
    process (a fresh one costs seconds of imports; the command line itself is
    run by test_table_datasets' slow test)."""
    values = flags.FlagValues()
    fields.define_flags(Config, values)
    values(["train", *args])
    return fields.from_flags(Config, values)


def test_the_flags_train_record_and_export_a_conditional_table(tmp_path):
    table = tiny_table(tmp_path / "tiny.csv")
    config = _flags_config(
        f"--table={table}",
        "--label_column=kind",
        "--column_types=visits:count",
        f"--model_dir={tmp_path / 'run'}",
        "--epochs=1",
        "--batch_size=16",
        "--latent_dim=2",
        "--hidden_units=16",
        # A conditional VAE on the labels, with the IWAE bound every epoch.
        "--conditional",
        "--iwae_every_epochs=1",
        "--iwae_samples=2",
        f"--export_dir={tmp_path / 'export'}",
    )
    metrics = training.train_and_evaluate(config)
    run = tmp_path / "run"
    assert metrics["epochs"] == 1 and metrics["dataset"] == "tiny"
    # `auto` compiles a table VAE with XLA: its step trains on rows.
    assert metrics["jit_compile"] is True
    # The export at the end of training, with the run's table in its metadata.
    assert metrics["export_path"] == str(tmp_path / "export" / "1")
    exported = json.loads(
        (tmp_path / "export" / "1" / "assets" / "tfvae.json").read_text()
    )
    assert exported["dataset_info"]["labels"] == ["a", "b", "c"]
    assert exported["config"]["table"] == str(table)
    assert np.isfinite(metrics["test_neg_elbo"])
    schema = json.loads((run / "schema.json").read_text())
    # The label is not modelled.
    assert [c["name"] for c in schema["columns"]] == [
        "temp",
        "rain",
        "visits",
        "weather",
    ]
    split = json.loads((run / "split.json").read_text())
    info = json.loads((run / "dataset.json").read_text())
    assert split["rows"] == 96
    assert len(split["test_rows"]) == info["num_test"]
    assert info["num_train"] + info["num_test"] == 96
    assert info["labels"] == ["a", "b", "c"]
    iwae_rows = (run / run_dir.IWAE_HISTORY).read_text().split()[1:]
    assert [row.split(",")[0] for row in iwae_rows] == ["0"]
    _, loaded, vae = run_dir.load_run(str(run))
    assert vae.conditional and loaded.num_classes == 3


def test_an_interrupted_table_run_resumes_on_its_recorded_split_and_table(
    tmp_path, monkeypatch
):
    whole = table_config(tmp_path / "whole", epochs=3)
    training.train_and_evaluate(whole)
    resumed = table_config(tmp_path / "resumed", epochs=2)
    training.train_and_evaluate(resumed)
    # The resumed run reads its split from split.json, not from the rule.
    with monkeypatch.context() as patch:
        patch.setattr(tables, "split_table", None)
        metrics = training.train_and_evaluate(dataclasses.replace(resumed, epochs=3))
    assert metrics["epochs"] == 3
    assert _epochs(resumed.model_dir) == ["0", "1", "2"]
    config, info, vae = run_dir.load_run(resumed.model_dir)
    assert isinstance(info, run_dir.TableInfo) and config.table == resumed.table
    expected = run_dir.load_run(whole.model_dir)[2]
    for a, b in zip(vae.weights, expected.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    # A changed table is refused, and the run left as it was.
    run = pathlib.Path(resumed.model_dir)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    tiny_table(pathlib.Path(resumed.table), seed=1)
    with pytest.raises(errors.UsageError, match="is not the table this run began"):
        training.train_and_evaluate(dataclasses.replace(resumed, epochs=4))
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_an_anomaly_label_leaves_training_and_is_scored_on_the_test_split(tmp_path):
    config = table_config(tmp_path, anomaly_label="c")
    training.train_and_evaluate(config)
    info = run_dir.load_run(config.model_dir)[1]
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    test_rows = set(split["test_rows"])
    train_c = sum(1 for row in range(96) if row % 3 == 2 and row not in test_rows)
    assert train_c > 0
    assert info.num_train == 96 - len(test_rows) - train_c
    metrics = run_eval.evaluate_run(
        run_eval.EvalConfig(model_dir=config.model_dir, num_importance_samples=5)
    )
    assert 0 <= metrics["test_anomaly/roc_auc"] <= 1
    assert metrics["test_nll"] <= metrics["test_nll_k1"] + 1e-3
    assert (tmp_path / "run" / "eval" / "metrics.json").exists()


@pytest.mark.slow
@requires_wine
def test_wine_trains_and_evaluates_from_its_flagfile(tmp_path):
    # configs/wine.flags as `python -m tfvae.train` reads it, in this process
    # (a fresh one costs seconds of imports), for 40 of its 300 epochs.
    values = flags.FlagValues()
    fields.define_flags(Config, values)
    values(
        [
            "train",
            "--flagfile=configs/wine.flags",
            f"--table={WINE}",
            f"--model_dir={tmp_path / 'run'}",
            "--epochs=40",
            "--noexport",
        ]
    )
    config = fields.from_flags(Config, values)
    training.train_and_evaluate(config)
    metrics = run_eval.evaluate_run(
        run_eval.EvalConfig(model_dir=config.model_dir, num_importance_samples=100)
    )
    # Measured: 20.2 nats per row against 24.4 for independent columns.
    assert metrics["test_nll"] < metrics["test_independent/nll"] - 1
    assert {"marginals.png", "correlations.png", "latent.png"} <= {
        path.name for path in (tmp_path / "run" / "eval").iterdir()
    }


def test_a_resume_streamed_keeps_the_schema_the_run_began_with_in_memory(tmp_path):
    config = table_config(tmp_path, label_column=None, epochs=1)
    training.train_and_evaluate(config)
    run = pathlib.Path(config.model_dir)
    # A mean off in its last digits, as typing chunk by chunk may give.
    schema = json.loads((run / run_dir.SCHEMA).read_text())
    schema["columns"][0]["mean"] += 1e-9
    (run / run_dir.SCHEMA).write_text(json.dumps(schema))
    recorded = (run / run_dir.SCHEMA).read_bytes()
    streamed = dataclasses.replace(config, memory_budget="0", epochs=2)
    metrics = training.train_and_evaluate(streamed)
    assert metrics["input"] == "streamed" and _epochs(run) == ["0", "1"]
    assert np.isfinite(metrics["test_neg_elbo"])
    assert (run / run_dir.SCHEMA).read_bytes() == recorded
    # Other split sizes than the run's (dataset.json) are refused.
    info = json.loads((run / run_dir.DATASET_INFO).read_text())
    info["num_train"] += 1
    (run / run_dir.DATASET_INFO).write_text(json.dumps(info))
    with pytest.raises(errors.UsageError, match="splits into .* when streamed"):
        training.train_and_evaluate(dataclasses.replace(streamed, epochs=3))


def test_a_resume_checks_its_flags_against_the_run_before_reading_the_table(
    tmp_path,
):
    config = table_config(tmp_path, epochs=1)
    training.train_and_evaluate(config)
    # Not the table's "columns must be the schema's": the flag that changed.
    with pytest.raises(errors.UsageError, match="--drop_columns: run has None"):
        training.train_and_evaluate(
            dataclasses.replace(config, drop_columns="weather", epochs=2)
        )
    # A moved table: tfvae.evaluate has no --table, so it says to restore the
    # file or to rerun the training with the new path.
    pathlib.Path(config.table).rename(tmp_path / "moved.csv")
    with pytest.raises(errors.UsageError, match="Restore it there, or rerun"):
        run_eval.evaluate_run(run_eval.EvalConfig(model_dir=config.model_dir))
    with pytest.raises(errors.UsageError, match="--jit_compile does not apply"):
        run_eval.evaluate_run(
            run_eval.EvalConfig(model_dir=config.model_dir, jit_compile=True)
        )
    moved = dataclasses.replace(config, table=str(tmp_path / "moved.csv"))
    # A run stopped before its first backup starts over, whatever it recorded.
    run = pathlib.Path(config.model_dir)
    shutil.rmtree(run / run_dir.BACKUP)
    (run / run_dir.SPLIT).unlink()
    assert training.train_and_evaluate(moved)["epochs"] == 1
    assert (run / run_dir.SPLIT).exists()
    assert run_dir.load_config(config.model_dir).table == moved.table


def test_a_table_in_an_image_runs_folder_is_refused_by_the_flag(tmp_path):
    image_run = tmp_path / "run"
    image_run.mkdir()
    images = Config(model_dir=str(image_run), dataset="mnist")
    run_dir.save_config(images, str(image_run))
    info = run_dir.data.DatasetInfo("mnist", (28, 28, 1), 60_000, 10_000, 10)
    run_dir.save_info(info, str(image_run))
    with pytest.raises(errors.UsageError, match="--table: run has None"):
        training.train_and_evaluate(table_config(tmp_path))
