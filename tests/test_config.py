"""Tests for tfvae.config: round trips and the resume compatibility check."""

import dataclasses

import pytest

from tests.conftest import tiny_config
from tfvae import config as config_lib


def test_round_trip(tmp_path):
    config = tiny_config(tmp_path, hidden_units=(32, 16))
    config_lib.save(config, str(tmp_path))
    assert config_lib.load(str(tmp_path)) == config


def test_compatible_changes_are_accepted(tmp_path):
    old = tiny_config(tmp_path)
    new = dataclasses.replace(
        old, epochs=50, data_dir="/elsewhere", strategy="mirrored"
    )
    config_lib.check_compatible(old, new)


def test_incompatible_changes_are_listed(tmp_path):
    old = tiny_config(tmp_path)
    new = dataclasses.replace(old, latent_dim=7, likelihood="gaussian")
    with pytest.raises(ValueError) as error:
        config_lib.check_compatible(old, new)
    message = str(error.value)
    assert "--latent_dim: run has 2, requested 7" in message
    assert "--likelihood: run has 'bernoulli', requested 'gaussian'" in message
    assert "new --model_dir" in message


def test_missing_and_foreign_configs(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a tfvae run directory"):
        config_lib.load(str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown keys \['colour'\]"):
        config_lib.Config.from_dict(
            {**dataclasses.asdict(tiny_config(tmp_path)), "colour": "blue"}
        )
