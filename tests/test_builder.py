"""Tests for tfvae.builder: build_vae's defaults and checks, and the memory estimate."""

import dataclasses
import re

import keras
import numpy as np
import pytest
from absl import flags

from tfvae import builder, errors, fields
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


def test_build_vae_refuses_parameters_beyond_this_machines_memory():
    with pytest.raises(errors.UsageError, match=r"latent_dim=\(200000000,\)"):
        builder.build_vae((28, 28, 1), latent_dim=200_000_000)
