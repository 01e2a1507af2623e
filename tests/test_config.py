"""Tests for tfvae.config: settings declared once, checked once, resumable or not."""

import dataclasses
import re
import tempfile

import pytest
from absl import flags

from tests.conftest import REPO, tiny_config
from tfvae import config as config_lib
from tfvae import errors, fields, run_dir


def _flag_values(*argv):
    values = flags.FlagValues()
    fields.define_flags(config_lib.Config, values)
    values(["prog", *argv])
    return values


def test_every_field_is_a_flag_with_the_fields_default():
    values = _flag_values()
    for field in dataclasses.fields(config_lib.Config):
        default = values[field.name].default
        if isinstance(field.default, tuple):
            default = tuple(int(v) for v in default)
        assert default == field.default, field.name
        assert values[field.name].help


def test_flags_become_a_config():
    values = _flag_values("--model_dir=/tmp/r", "--hidden_units=32,16", "--nobinarize")
    config = fields.from_flags(config_lib.Config, values)
    assert config.hidden_units == (32, 16) and config.binarize is False
    assert config == config_lib.Config(
        model_dir="/tmp/r", hidden_units=(32, 16), binarize=False
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--likelihood=gaussian", "--binarize"], "--binarize only applies to"),
        (["--conv_filters=8"], "--conv_filters only applies to --network=conv"),
        (["--hidden_units=400,x"], "Received: --hidden_units=400,x"),
        (["--hidden_units=400,0"], "Received: --hidden_units=400,0"),
        (["--seed=-1"], "--seed must be at least 0. Received: --seed=-1"),
        (["--learning_rate=0"], "--learning_rate must be positive"),
        (["--model_dir="], "--model_dir is required"),
        (["--image_folder=faces"], "--image_folder=faces needs --image_size=H,W"),
        (
            ["--image_folder=faces", "--image_size=8,8", "--dataset=cifar10"],
            "--image_folder replaces --dataset: remove --dataset=cifar10",
        ),
        (
            ["--image_folder=faces", "--image_size=8,8", "--manual_dir=m"],
            "--manual_dir only applies to a TFDS --dataset",
        ),
        (["--image_size=8,8"], "--image_size and --image_channels only apply to"),
        (["--image_channels=3"], "--image_size and --image_channels only apply to"),
        (["--image_folder=f", "--image_size=8"], "--image_size must be two sizes"),
        (
            ["--image_folder=f", "--image_size=8,8", "--image_channels=2"],
            "--image_channels must be 1 or 3",
        ),
        (
            ["--likelihood=categorical", "--mixture_components=3"],
            "--mixture_components only applies to --likelihood=logistic_mixture",
        ),
        (["--prior=vamp"], "--kl=analytic needs one stochastic layer"),
        (["--latent_dim=100,50"], "add --kl=monte_carlo"),
        (["--latent_dim=100,,50"], "Received: --latent_dim=100,,50"),
        (["--prior_components=5"], "--prior_components only applies to --prior"),
        (["--gradient=dreg"], "--gradient only applies to --objective=iwae"),
        (["--objective=iwae", "--beta=2"], "--beta only applies to --objective=elbo"),
        (["--beta=-1"], "--beta must be at least 0"),
        (
            ["--objective=iwae", "--gradient=dreg", "--kl_warmup_epochs=5"],
            "--gradient=dreg needs the true importance weights",
        ),
        (["--memory_budget=lots"], "--memory_budget must be a share of memory"),
        (["--shuffle_buffer=0"], "--shuffle_buffer must be at least 1"),
        (["--train_samples=0"], "--train_samples must be at least 1"),
        (
            ["--objective=iwae", "--gradient=dreg", "--prior=vamp", "--kl=monte_carlo"],
            "--gradient=dreg supports one stochastic layer",
        ),
        (
            ["--conditional", "--prior=vamp", "--kl=monte_carlo"],
            "--conditional cannot use --prior=vamp",
        ),
        (
            ["--conditional", "--strategy=multi_worker"],
            "--conditional does not train under --strategy=multi_worker",
        ),
        # A table run's flags (tfvae/table_flags.py).
        (["--label_column=y"], "--label_column=y only applies to --table"),
        (["--test_fraction=0.5"], "--test_fraction=0.5 only applies to --table"),
        (["--table=t.csv", "--test_fraction=1"], "--test_fraction must be between"),
        (
            ["--table=t.csv", "--image_folder=f", "--image_size=8,8"],
            "--table=t.csv is the dataset: remove --image_folder=f",
        ),
        (
            ["--table=t.csv", "--binarize=false"],
            "--binarize applies to image VAEs",
        ),
        (
            ["--count_likelihood=poisson"],
            "--count_likelihood applies to table VAEs only",
        ),
        (["--table=t.csv", "--column_types=x"], "--column_types must list name:type"),
        (
            ["--table=t.csv", "--column_types=a:real,a:count"],
            "--column_types types 'a' twice (a:real and a:count)",
        ),
        (
            ["--table=t.csv", "--max_categories=1"],
            "--max_categories must be at least 2",
        ),
        # A folder's train.* and test.* are its split.
        (
            [f"--table={tempfile.gettempdir()}", "--test_fraction=0.3"],
            "--test_fraction=0.3 does not apply to --table=",
        ),
        (
            ["--table=t.csv", "--anomaly_label=9"],
            "--anomaly_label=9 needs --label_column=NAME",
        ),
        (["--table=t.csv", "--conditional"], "--conditional with --table needs"),
        (
            ["--table=t.csv", "--label_column=y", "--conditional", "--anomaly_label=9"],
            "--conditional cannot use --anomaly_label",
        ),
        (
            ["--table=t.csv", "--strategy=multi_worker"],
            "--table is not supported under --strategy=multi_worker",
        ),
    ],
)
def test_bad_flags_are_refused_naming_the_flag(argv, message):
    values = _flag_values("--model_dir=/tmp/r", *argv)
    with pytest.raises(errors.UsageError, match=re.escape(message)):
        fields.from_flags(config_lib.Config, values)


def _shown(default) -> str:
    """Returns a default as the README's flag table writes it."""
    if isinstance(default, bool):
        return "on" if default else "off"
    if default is None or default == ():
        return "unset"
    if isinstance(default, tuple):
        return ",".join(map(str, default))
    return str(default)


def test_the_readme_lists_every_flag_with_its_default():
    readme = (REPO / "README.md").read_text()
    rows = dict(re.findall(r"^\| `--(\w+)` \| `([^`]*)` \|", readme, re.MULTILINE))
    for field in dataclasses.fields(config_lib.Config):
        assert field.name in rows, f"README's flag table lacks --{field.name}"
        assert rows[field.name] == _shown(field.default), field.name


def test_round_trip(tmp_path):
    config = tiny_config(tmp_path, hidden_units=(32, 16))
    run_dir.save_config(config, str(tmp_path))
    assert run_dir.load_config(str(tmp_path)) == config


def test_compatible_changes_are_accepted(tmp_path):
    old = tiny_config(tmp_path)
    new = dataclasses.replace(
        old, epochs=50, data_dir="/elsewhere", strategy="mirrored"
    )
    config_lib.check_compatible(old, new)


def test_a_table_may_move_but_a_table_run_stays_one(tmp_path):
    old = config_lib.Config(model_dir=str(tmp_path), table="a/t.csv")
    config_lib.check_compatible(old, dataclasses.replace(old, table="b/t.csv"))
    with pytest.raises(errors.UsageError, match="--table: run has 'a/t.csv'"):
        config_lib.check_compatible(old, dataclasses.replace(old, table=None))


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
    with pytest.raises(errors.UsageError, match="not a tfvae run directory"):
        run_dir.load_config(str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown keys \['colour'\]"):
        config_lib.Config.from_dict(
            {**dataclasses.asdict(tiny_config(tmp_path)), "colour": "blue"}
        )


def test_a_saved_config_from_before_a_setting_existed_takes_its_default(tmp_path):
    saved = dataclasses.asdict(tiny_config(tmp_path, beta=0.5))
    del saved["learning_rate_decay"], saved["prior"]
    config = config_lib.Config.from_dict(saved)
    assert config.learning_rate_decay == 1.0 and config.prior == "standard"
    assert config.beta == 0.5


@pytest.mark.parametrize(
    "flagfile",
    [
        "mnist.flags",
        *sorted(p.relative_to(REPO).as_posix() for p in REPO.glob("configs/*.flags")),
    ],
)
def test_every_shipped_flagfile_is_a_valid_config(flagfile, monkeypatch):
    # A config names the one it extends by its path from the repository's root.
    monkeypatch.chdir(REPO)
    config = fields.from_flags(
        config_lib.Config, _flag_values(f"--flagfile={flagfile}")
    )
    assert config.model_dir, flagfile
