"""Tests for tfvae.table_training: `--table` runs train, resume, evaluate, export.

A tiny generated CSV (mixed columns, a missing cell, a label column) keeps
each run to a few seconds; one slow test trains on the real wine table.
"""

import dataclasses
import json
import pathlib

import numpy as np
import pandas as pd
import pytest
from absl import flags

from tests.conftest import REPO, run_module
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
    settings = {
        "table": str(table),
        "label_column": "kind",
        "latent_dim": 2,
        "hidden_units": (16,),
        "learning_rate": 1e-2,
        "batch_size": 16,
        "epochs": 2,
        "mixed_precision": "float32",
        "steps_per_execution": 1,
        "model_dir": str(root / "run"),
        "export_dir": str(root / "export"),
        "export": False,
    }
    return Config(**{**settings, **overrides})


def _epochs(model_dir) -> list[str]:
    text = (pathlib.Path(model_dir) / run_dir.HISTORY).read_text()
    return [line.split(",")[0] for line in text.split()[1:]]


def test_the_command_line_trains_records_and_exports_a_conditional_table(tmp_path):
    table = tiny_table(tmp_path / "tiny.csv")
    result = run_module(
        "tfvae.train",
        f"--table={table}",
        "--label_column=kind",
        "--column_types=visits:count",
        f"--model_dir={tmp_path / 'run'}",
        "--epochs=2",
        "--batch_size=16",
        "--latent_dim=2",
        "--hidden_units=16",
        # A conditional VAE on the labels, with the IWAE bound every epoch.
        "--conditional",
        "--iwae_every_epochs=1",
        "--iwae_samples=5",
        f"--export_dir={tmp_path / 'export'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["dataset"] == "tiny"
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
    assert [row.split(",")[0] for row in iwae_rows] == ["0", "1"]
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


def test_a_table_past_the_memory_budget_is_streamed_with_the_same_schema(tmp_path):
    config = table_config(tmp_path, label_column=None, memory_budget="0", epochs=1)
    metrics = training.train_and_evaluate(config)
    assert metrics["input"] == "streamed"
    assert np.isfinite(metrics["test_neg_elbo"])
    streamed = run_dir.load_run(config.model_dir)[1]
    schema, train, test = tables.read_table(config.table, seed=config.seed)
    assert streamed.schema == schema
    assert (streamed.num_train, streamed.num_test) == (len(train), len(test))


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
