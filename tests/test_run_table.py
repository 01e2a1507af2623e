"""Tests for tfvae.run_table: a table run's splits, labels and fingerprint.

Tiny generated tables only, read without training.
"""

import pathlib

import pandas as pd
import pytest

from tests.test_table_training import table_config, tiny_table
from tfvae import errors, run_table


def test_labels_read_as_a_categorical_column_s_cells(tmp_path):
    # The same cells as a label and as a modelled category: a text "2.0"
    # stays "2.0", a number 2.0 reads as "2", a missing cell is "".
    cells = ["2.0", "3", None, "2.0"] * 6
    frame = pd.DataFrame(
        {
            "text": cells,
            "label": cells,
            "number": [2.0, 3.0, None, 2.0] * 6,
            "x": range(24),
        }
    )
    frame.to_parquet(tmp_path / "t.parquet")
    config = table_config(
        tmp_path,
        table=str(tmp_path / "t.parquet"),
        label_column="label",
        column_types="number:categorical",
    )
    table = run_table.read_run_table(config)
    categories = {c["name"]: c.get("categories") for c in table.info.schema["columns"]}
    assert categories["text"] == ["2.0", "3"]
    assert table.info.labels == ["2.0", "3"]
    assert set(table.train_labels) == {"2.0", "3", ""}
    assert categories["number"] == ["2", "3"]


def test_a_table_moved_under_another_name_is_the_same_table(tmp_path):
    table = tiny_table(tmp_path / "tiny.csv")
    split = run_table.fingerprint(str(table), None)
    moved = table.rename(tmp_path / "renamed.csv")
    assert run_table.fingerprint(str(moved), split) == split
    tiny_table(moved, seed=1)
    with pytest.raises(errors.UsageError, match="is not the table this run began"):
        run_table.fingerprint(str(moved), split)


def test_a_missing_table_is_named_with_the_fix_of_its_case(tmp_path):
    missing = str(pathlib.Path(tmp_path) / "gone.csv")
    with pytest.raises(errors.UsageError, match="Pass a CSV, Parquet"):
        run_table.check_exists(missing, resumed=False)
    with pytest.raises(errors.UsageError, match="rerun the training with --table"):
        run_table.check_exists(missing, resumed=True)
