"""Tests for tfvae.memory: the memory a model and a step will take, and the refusal."""

import numpy as np
import pytest

from tfvae import builder, errors, memory, table_model


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
        assert memory.estimate_bytes((8, 8, 1), **settings) == 4 * weights, settings
    assert memory.estimate_bytes((8, 8, 1), 32) > 4 * memory.estimate_bytes((8, 8, 1))
    assert memory.estimate_bytes(
        (8, 8, 1), 32, train_samples=10
    ) > memory.estimate_bytes((8, 8, 1), 32)


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
    problem = memory.memory_problem(shape, batch, available=2**34, **settings)
    assert "GiB of memory, more than the 16.0 GiB available" in problem
    assert culprit in problem
    assert memory.memory_problem((28, 28, 1), 256, available=2**34) is None


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
        estimate = memory.estimate_bytes(None, schema=schema, num_classes=4, **settings)
        assert estimate == 4 * weights, settings


def test_a_table_too_wide_for_memory_is_refused_naming_its_width():
    schema = _table_schema(categories=100_000)
    problem = memory.memory_problem(None, schema=schema, available=2**28)
    assert "more than the 0.2 GiB available" in problem
    # Inputs: 2 numbers, 100,000 one-hots, 3 presence flags; parameters: 2
    # for the real column, 2 for the negative binomial, one logit a category.
    assert "the table's width (100005 encoder inputs, 100004 likelihood" in problem
    assert memory.memory_problem(None, 64, schema=_table_schema()) is None
    with pytest.raises(errors.UsageError, match="hidden_units=\\(1000000000,\\)"):
        table_model.build_table_vae(_table_schema(), hidden_units=(10**9,))
    with pytest.raises(ValueError, match="an image's .image_shape. or a table's"):
        memory.estimate_bytes((8, 8, 1), schema=schema)
