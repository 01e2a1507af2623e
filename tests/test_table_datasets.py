"""Tests for tfvae.table_datasets: TFDS datasets of scalar features train as tables.

`TinyTable` is a genuine TFDS builder (registered as `tiny_table`) of 120
generated rows: a nested `FeaturesDict` of numbers, a `ClassLabel`, a
string with empty cells, and a fixed-length vector. Its `one_split` config
has only a train split (as wine_quality), `two_splits` a train and a test
split. No TFDS table dataset can be downloaded here.
"""

import dataclasses
import json
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests.conftest import run_module, tiny_table_settings
from tfvae import errors, run_dir, run_eval, run_table, saved_model, table_datasets
from tfvae.config import Config

ROWS = 120


class TinyTable(tfds.core.GeneratorBasedBuilder):
    """Mixed scalar features of 120 rows, correlated through one factor."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="one_split"),
        tfds.core.BuilderConfig(name="two_splits"),
    ]

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "features": {"temp": np.float32, "visits": np.int32},
                    "kind": tfds.features.ClassLabel(names=["a", "b", "c"]),
                    "weather": tfds.features.Text(),
                    "vector": tfds.features.Tensor(shape=(2,), dtype=np.float32),
                }
            )
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        if self.builder_config.name == "one_split":
            return {"train": self._generate_examples(ROWS, 0)}
        return {
            "train": self._generate_examples(80, 0),
            "test": self._generate_examples(40, 1),
        }

    def _generate_examples(self, count, seed):
        rng = np.random.default_rng(seed)
        for index in range(count):
            z = rng.normal()
            yield (
                index,
                {
                    "features": {
                        "temp": 10 + 3 * z + rng.normal(),
                        "visits": rng.poisson(np.exp(1 + 0.5 * z)),
                    },
                    "kind": index % 3,
                    # Every seventh cell empty: a missing category.
                    "weather": "" if index % 7 == 0 else ("sun" if z > 0 else "rain"),
                    "vector": [z + rng.normal(), -z + rng.normal()],
                },
            )


class RaggedTable(tfds.core.GeneratorBasedBuilder):
    """A table but for one variable-length feature (its metadata only is read)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "x": np.float32,
                    "events": tfds.features.Tensor(shape=(None,), dtype=np.float32),
                }
            )
        )

    def _split_generators(self, dl_manager):
        raise NotImplementedError  # Never prepared.

    def _generate_examples(self):
        raise NotImplementedError


COLUMNS = [
    "features/temp",
    "features/visits",
    "kind",
    "vector/0",
    "vector/1",
    "weather",
]


def table_dataset_config(root: pathlib.Path, **overrides) -> Config:
    """Returns a fast Config training on `tiny_table/one_split` in `root`."""
    settings = {
        **tiny_table_settings(root),
        "dataset": "tiny_table/one_split",
        "data_dir": str(root / "tfds"),
        "epochs": 1,
    }
    return Config(**{**settings, **overrides})


def test_a_scalar_dataset_is_a_table_and_an_image_dataset_is_not(tmp_path):
    builder = tfds.builder("tiny_table/one_split", data_dir=str(tmp_path))
    assert table_datasets.is_table_dataset(builder)
    assert table_datasets.feature_problem(builder) is None
    # Metadata only: MNIST need not be prepared.
    mnist = tfds.builder("mnist", data_dir=str(tmp_path))
    assert not table_datasets.is_table_dataset(mnist)
    assert "'image'" in table_datasets.feature_problem(mnist)
    assert not Config(model_dir=str(tmp_path / "run")).table_run
    assert table_dataset_config(tmp_path).table_run


def test_a_variable_shape_feature_is_refused_naming_it(tmp_path):
    with pytest.raises(errors.UsageError, match="the feature 'events'.*variable"):
        Config(dataset="ragged_table", model_dir=str(tmp_path / "run"))


def test_the_table_flags_apply_to_a_table_dataset_and_image_flags_do_not(tmp_path):
    config = table_dataset_config(
        tmp_path,
        column_types="features/visits:count",
        drop_columns="vector/1",
        anomaly_label="c",
        max_categories=5,
        test_fraction=0.3,
    )
    assert config.table_run and config.dataset_name == "tiny_table/one_split"
    with pytest.raises(errors.UsageError, match="--likelihood applies to image"):
        table_dataset_config(tmp_path, likelihood="logistic_mixture")
    with pytest.raises(errors.UsageError, match="--dataset=tiny_table/one_split"):
        table_dataset_config(tmp_path, label_column=None, conditional=True)
    # An image dataset still refuses them.
    with pytest.raises(errors.UsageError, match="--label_column=kind only applies"):
        Config(model_dir=str(tmp_path / "run"), label_column="kind")


def test_a_split_reads_as_the_columns_tfds_as_dataframe_names(tmp_path):
    builder = tfds.builder("tiny_table/one_split", data_dir=str(tmp_path))
    builder.download_and_prepare()
    frame = table_datasets.read_split(builder, "train")
    assert list(frame.columns) == COLUMNS and len(frame) == ROWS
    reference = tfds.as_dataframe(builder.as_dataset(split="train"))
    scalars = [c for c in reference.columns if c != "vector"]
    assert scalars == [c for c in COLUMNS if not c.startswith("vector/")]
    np.testing.assert_array_equal(frame["features/temp"], reference["features/temp"])
    vectors = np.stack(reference["vector"].to_numpy())
    np.testing.assert_array_equal(frame[["vector/0", "vector/1"]], vectors)
    # Class names for ClassLabel codes, str for bytes, "" missing.
    names = np.array(["a", "b", "c"])[reference["kind"].to_numpy()]
    np.testing.assert_array_equal(frame["kind"], names)
    weather = reference["weather"].map(lambda b: b.decode() or None)
    assert frame["weather"].equals(weather) and frame["weather"].isna().sum() > 0


def test_a_train_only_dataset_is_split_by_the_rule_and_recorded(tmp_path):
    config = table_dataset_config(tmp_path)
    table = run_table.read_run_table(config)
    split = table.split
    assert split["tfds"] == "tiny_table/one_split/1.0.0"
    assert split["splits"] == {"train": ROWS} and split["rows"] == ROWS
    assert len(split["test_rows"]) == table.info.num_test == len(table.test)
    assert table.info.num_train + table.info.num_test == ROWS
    assert table.info.name == "tiny_table/one_split"
    assert table.info.labels == ["a", "b", "c"] and "kind" not in table.train
    types = {c["name"]: c["type"] for c in table.info.schema["columns"]}
    assert types["weather"] == "categorical" and types["features/visits"] == "count"
    # The same rule as a table file's, with --seed.
    other = run_table.read_run_table(table_dataset_config(tmp_path, seed=1))
    assert other.split["test_rows"] != split["test_rows"]
    assert run_table.read_run_table(config, split).split == split


def test_a_dataset_with_a_test_split_keeps_it(tmp_path):
    config = table_dataset_config(tmp_path, dataset="tiny_table/two_splits")
    table = run_table.read_run_table(config)
    assert table.split["splits"] == {"train": 80, "test": 40}
    assert table.split["test_rows"] is None
    assert (table.info.num_train, table.info.num_test) == (80, 40)
    # Its test split is the run's: --test_fraction would be ignored.
    with pytest.raises(errors.UsageError, match="--test_fraction=0.3 does not"):
        run_table.read_run_table(dataclasses.replace(config, test_fraction=0.3))


def test_a_manual_dir_tfds_would_ignore_is_refused(tmp_path):
    config = table_dataset_config(tmp_path, manual_dir=str(tmp_path))
    with pytest.raises(errors.UsageError, match="TFDS registers no files for it"):
        run_table.read_run_table(config)


def test_a_dataset_past_the_memory_budget_is_refused_with_the_fix(tmp_path):
    config = table_dataset_config(tmp_path, memory_budget="1KB")
    with pytest.raises(
        errors.UsageError, match="more than --memory_budget=1KB.*--table"
    ):
        run_table.read_run_table(config)


def test_a_resumed_run_refuses_another_version_before_preparing_it(
    tmp_path, monkeypatch
):
    config = table_dataset_config(tmp_path)
    split = run_table.read_run_table(config).split
    monkeypatch.setattr(TinyTable, "VERSION", tfds.core.Version("1.0.1"))
    with pytest.raises(
        errors.UsageError, match="began with tiny_table/one_split/1.0.0"
    ):
        run_table.read_run_table(config, split)
    assert not (tmp_path / "tfds" / "tiny_table" / "one_split" / "1.0.1").exists()
    # A version prepared anew with other rows is refused too.
    monkeypatch.undo()
    with pytest.raises(errors.UsageError, match="prepared anew with other data"):
        run_table.read_run_table(config, {**split, "splits": {"train": 7}})


@pytest.mark.slow
def test_the_command_line_trains_a_table_dataset_to_evaluate_and_export(tmp_path):
    data_dir = tmp_path / "tfds"
    # Prepared here: the command finds it in --data_dir by its files.
    tfds.builder("tiny_table/one_split", data_dir=str(data_dir)).download_and_prepare()
    run = tmp_path / "run"
    result = run_module(
        "tfvae.train",
        "--dataset=tiny_table/one_split",
        f"--data_dir={data_dir}",
        "--label_column=kind",
        "--anomaly_label=c",
        f"--model_dir={run}",
        "--epochs=2",
        "--batch_size=16",
        "--latent_dim=2",
        "--hidden_units=16",
        "--noexport",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((run / run_dir.DATASET_INFO).read_text())
    # The rows labelled c left training.
    assert info["name"] == "tiny_table/one_split" and info["labels"] == ["a", "b"]
    # Evaluated and exported as `tfvae.evaluate` and `tfvae.export` do, here:
    # their processes' start alone would double the test's time.
    metrics = run_eval.evaluate_run(
        run_eval.EvalConfig(model_dir=str(run), num_importance_samples=5)
    )
    assert np.isfinite(metrics["test_nll"]) and "test_anomaly/roc_auc" in metrics
    assert metrics["dataset"] == "tiny_table/one_split"
    config, table_info, vae = run_dir.load_run(str(run))
    path = saved_model.export(
        vae, str(tmp_path / "export"), config=config, dataset_info=table_info
    )
    exported = json.loads((pathlib.Path(path) / "assets" / "tfvae.json").read_text())
    names = [column["name"] for column in exported["columns"]]
    assert names == [c for c in COLUMNS if c != "kind"]
    assert exported["config"]["dataset"] == "tiny_table/one_split"
