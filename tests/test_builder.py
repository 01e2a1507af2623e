"""Tests for tfvae.builder: build_vae's defaults and checks, and the memory estimate."""

import dataclasses
import re

import keras
import numpy as np
import pytest
from absl import flags

from tfvae import builder, errors, fields, table_model
from tfvae import config as config_lib
from tfvae.model_settings import ModelSettings


def _flag_defaults() -> dict:
    values = flags.FlagValues()
    fields.define_flags(config_lib.Config, values)
    values(["prog", "--model_dir=/tmp/r"])
    return fields.from_flags(config_lib.Config, values).model_settings()


def test_every_model_setting_defaults_to_its_flags_default():
    flag_defaults = _flag_defaults()
    for field in dataclasses.fields(ModelSettings):
        default = ModelSettings().model_settings().get(field.name, field.default)
        assert flag_defaults.get(field.name, field.default) == default, field.name


def test_build_vae_with_no_settings_is_the_command_lines_model():
    keras.utils.set_random_seed(0)
    plain = builder.build_vae((8, 8, 1))
    keras.utils.set_random_seed(0)
    flagged = builder.build_vae((8, 8, 1), seed=0, **_flag_defaults())
    settings = ("image_shape", "kl", "objective", "beta", "free_bits", "num_classes")
    assert [plain.get_config()[n] for n in settings] == [
        flagged.get_config()[n] for n in settings
    ]
    for a, b in zip(plain.weights, flagged.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert (plain.kl, plain.seed, plain.latent_dims) == ("analytic", 0, (50,))


@pytest.mark.parametrize("latent_dim", [(4,), 4])
def test_build_vae_needs_only_the_image_shape(latent_dim):
    vae = builder.build_vae((8, 8, 1), latent_dim=latent_dim)
    assert vae.latent_dims == (4,) and vae.image_shape == (8, 8, 1)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"latent_dim": (0,)}, "Received: latent_dim=(0,)"),
        ({"latent_dim": 2.5}, "Received: latent_dim=2.5"),
        ({"latent_dims": (4,)}, "Unknown model settings ['latent_dims']. The settings"),
        ({"beta": float("inf")}, "beta must be a finite number. Received: beta=inf"),
        ({"free_bits": float("nan")}, "free_bits must be a finite number"),
        ({"likelihood": "poisson"}, "likelihood must be one of bernoulli,"),
        (
            {"likelihood": "gaussian", "binarize": False},
            "binarize only applies to likelihood='bernoulli'; this one has "
            "likelihood='gaussian'. Remove binarize.",
        ),
        ({"latent_dim": (4, 2)}, "kl='analytic' needs one stochastic layer"),
        ({"conditional": True}, "needs the number of classes"),
        ({"seed": 2**32}, "seed must be in [0, 2**32)"),
        (
            {"count_likelihood": "poisson"},
            "count_likelihood applies to table VAEs only; an image's likelihood is "
            "likelihood. Remove count_likelihood. Received: "
            "count_likelihood='poisson'",
        ),
    ],
)
def test_bad_settings_are_refused_naming_the_argument(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        builder.build_vae((8, 8, 1), **settings)


@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 0), (8.0, 8, 1)])
def test_an_image_shape_must_be_three_sizes(shape):
    with pytest.raises(ValueError, match="image_shape must be three positive sizes"):
        builder.build_vae(shape)


def test_the_unknown_setting_message_lists_the_valid_ones():
    with pytest.raises(errors.UsageError) as error:
        builder.build_vae((8, 8, 1), latnt_dim=4)
    assert all(f.name in str(error.value) for f in dataclasses.fields(ModelSettings))


def test_the_estimate_counts_the_parameters_of_the_built_model():
    for settings in [
        {},
        {"network": "conv", "hidden_units": (8,), "conv_filters": (4, 8)},
        {"latent_dim": (6, 3), "kl": "monte_carlo", "posterior": "full"},
        {"prior": "mog", "prior_components": 7, "kl": "monte_carlo"},
        {"prior": "vamp", "prior_components": 7, "kl": "monte_carlo"},
        {"likelihood": "logistic_mixture", "mixture_components": 2},
    ]:
        vae = builder.build_vae((8, 8, 1), **settings)
        weights = sum(int(np.prod(w.shape)) for w in vae.trainable_weights)
        assert builder.estimate_bytes((8, 8, 1), **settings) == 4 * weights, settings
    assert builder.estimate_bytes((8, 8, 1), 32) > 4 * builder.estimate_bytes((8, 8, 1))
    assert builder.estimate_bytes(
        (8, 8, 1), 32, train_samples=10
    ) > builder.estimate_bytes((8, 8, 1), 32)


@pytest.mark.parametrize(
    "shape, batch, settings, culprit",
    [
        ((28, 28, 1), None, {"latent_dim": 200_000_000}, "latent_dim=(200000000,)"),
        (
            (28, 28, 1),
            256,
            {"prior": "mog", "kl": "monte_carlo", "prior_components": 20_000_000},
            "prior_components=20000000",
        ),
        ((30_000, 30_000, 3), None, {}, "the image size 30000x30000x3"),
        ((28, 28, 1), 256, {"train_samples": 100_000}, "train_samples=100000"),
        ((28, 28, 1), None, {"hidden_units": (10**9,)}, "hidden_units=(1000000000,)"),
        (
            (32, 32, 3),
            None,
            {"network": "conv", "conv_filters": (8, 10**6)},
            "conv_filters=(8, 1000000)",
        ),
        (
            (28, 28, 1),
            None,
            {"likelihood": "logistic_mixture", "mixture_components": 10**8},
            "mixture_components=100000000",
        ),
    ],
)
def test_a_model_too_large_for_memory_is_refused_naming_the_setting(
    shape, batch, settings, culprit
):
    problem = builder.memory_problem(shape, batch, available=2**34, **settings)
    assert "GiB of memory, more than the 16.0 GiB available" in problem
    assert culprit in problem
    assert builder.memory_problem((28, 28, 1), 256, available=2**34) is None


def test_build_vae_refuses_parameters_beyond_this_machines_memory():
    with pytest.raises(errors.UsageError, match=r"latent_dim=\(200000000,\)"):
        builder.build_vae((28, 28, 1), latent_dim=200_000_000)


def _table_schema(categories=3):
    return {
        "columns": [
            {"name": "x", "type": "real", "mean": 0.0, "std": 1.0},
            {"name": "n", "type": "count", "mean": 1.0, "std": 0.5},
            {
                "name": "kind",
                "type": "categorical",
                "categories": [f"c{i}" for i in range(categories)],
            },
        ]
    }


def test_the_estimate_counts_the_parameters_of_a_built_table_vae():
    schema = _table_schema()
    for settings in [
        {"latent_dim": 3, "hidden_units": (8, 4)},
        {"latent_dim": (6, 3), "kl": "monte_carlo", "posterior": "full"},
        {"prior": "mog", "prior_components": 7, "kl": "monte_carlo"},
        {"prior": "vamp", "prior_components": 7, "kl": "monte_carlo"},
        {"count_likelihood": "zero_inflated_negative_binomial", "conditional": True},
    ]:
        vae = table_model.build_table_vae(schema, num_classes=4, **settings)
        weights = sum(int(np.prod(w.shape)) for w in vae.trainable_weights)
        estimate = builder.estimate_bytes(
            None, schema=schema, num_classes=4, **settings
        )
        assert estimate == 4 * weights, settings


def test_a_table_too_wide_for_memory_is_refused_naming_its_width():
    schema = _table_schema(categories=100_000)
    problem = builder.memory_problem(None, schema=schema, available=2**28)
    assert "more than the 0.2 GiB available" in problem
    # Inputs: 2 numbers, 100,000 one-hots, 3 presence flags; parameters: 2
    # for the real column, 2 for the negative binomial, one logit a category.
    assert "the table's width (100005 encoder inputs, 100004 likelihood" in problem
    assert builder.memory_problem(None, 64, schema=_table_schema()) is None
    with pytest.raises(errors.UsageError, match="hidden_units=\\(1000000000,\\)"):
        table_model.build_table_vae(_table_schema(), hidden_units=(10**9,))
    with pytest.raises(ValueError, match="an image's .image_shape. or a table's"):
        builder.estimate_bytes((8, 8, 1), schema=schema)
