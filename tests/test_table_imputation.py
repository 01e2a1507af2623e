"""Tests for tfvae.table_imputation: hidden test cells, filled in and scored."""

import keras
import numpy as np
import pytest

from tests.test_table_evaluation import _correlated
from tfvae import table_imputation, table_model, tables


@pytest.fixture(scope="module")
def untrained():
    """An untrained VAE of `_correlated()` (what is checked needs no training)."""
    frame, labels = _correlated()
    keras.utils.set_random_seed(0)
    schema = tables.infer_schema(frame)
    vae = table_model.build_table_vae(schema, latent_dim=2, hidden_units=(8,))
    return vae, frame.iloc[:64], frame.iloc[64:].reset_index(drop=True), labels


def test_hidden_cells_are_seeded_and_binary_guesses_are_values(untrained):
    vae, train, test, _ = untrained
    figures = table_imputation.imputation_figures(vae, train, test, hide_fraction=0.3)
    again = table_imputation.imputation_figures(vae, train, test, hide_fraction=0.3)
    assert again == figures
    other = table_imputation.imputation_figures(
        vae, train, test, hide_fraction=0.3, seed=1
    )
    assert other["impute/mean_rmse/real"] != figures["impute/mean_rmse/real"]
    # A binary cell is filled with 0 or 1, as the column holds.
    cells = tables.table_columns(test, vae.likelihood.schema)
    cells["binary"] = np.full(len(test), np.nan, np.float32)
    filled = table_model.impute(vae, cells).numpy()
    binary = [c["name"] for c in vae.likelihood.schema["columns"]].index("binary")
    assert set(np.unique(filled[:, binary])) <= {0.0, 1.0}


def test_refusals(untrained):
    vae, train, test, labels = untrained
    with pytest.raises(ValueError, match="hide_fraction must be between 0 and 1"):
        table_imputation.imputation_figures(vae, train, test, hide_fraction=1.0)
    conditional = table_model.build_table_vae(
        vae.likelihood.schema,
        latent_dim=2,
        hidden_units=(8,),
        conditional=True,
        num_classes=2,
    )
    # A label short: refused, not truncated.
    with pytest.raises(ValueError, match=r"one value per row, \[32\]"):
        table_imputation.imputation_figures(conditional, train, test, labels[65:])
    with pytest.raises(ValueError, match="needs each row's class as an int code"):
        table_imputation.imputation_figures(conditional, train, test, labels[64:] + 0.5)
