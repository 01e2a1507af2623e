"""Tests for tfvae.rules: one rule, written once, in a Python and a flag form."""

import pytest

from tfvae import fields, rules
from tfvae.model_settings import ModelSettings


def test_a_rule_names_python_arguments_or_flags():
    python = rules.combination_problem((4, 2), "standard", kl="analytic")
    flag = rules.combination_problem(
        (4, 2), "standard", kl="analytic", name=fields.flag_name
    )
    assert python.startswith("kl='analytic' needs one stochastic layer")
    assert (
        "add kl='monte_carlo'. Received: latent_dim=(4, 2) prior='standard'" in python
    )
    assert flag.startswith("--kl=analytic needs one stochastic layer")
    assert "add --kl=monte_carlo. Received: --latent_dim=4,2 --prior=standard" in flag


@pytest.mark.parametrize(
    "facts, problem",
    [
        (
            {"prior": "vamp", "kl": "monte_carlo", "latent_dim": (4, 2)},
            "needs --hierarchy=vampprior",
        ),
        (
            {"hierarchy": "vampprior", "kl": "monte_carlo", "latent_dim": (4,)},
            "--hierarchy=vampprior is Tomczak & Welling's two-layer HVAE",
        ),
        ({"objective": "iwae", "beta": 2.0}, "drop --beta and --free_bits"),
        ({"gradient": "dreg"}, "--gradient=dreg is a gradient of the IWAE bound"),
        (
            {"gradient": "dreg", "objective": "iwae", "kl_warmup_epochs": 3},
            "drop --kl_warmup_epochs",
        ),
        (
            {"conditional": True, "prior": "vamp", "kl": "monte_carlo"},
            "--conditional cannot use --prior=vamp",
        ),
    ],
)
def test_each_rule_refuses_its_combination(facts, problem):
    facts = {"latent_dim": (4,), "prior": "standard", **facts}
    message = rules.combination_problem(
        facts.pop("latent_dim"), facts.pop("prior"), name=fields.flag_name, **facts
    )
    assert problem in message


def test_settings_that_fit_have_no_problem():
    assert rules.combination_problem((4,), "standard") is None
    assert (
        rules.combination_problem(
            (4, 2), "mog", kl="monte_carlo", objective="iwae", gradient="standard"
        )
        is None
    )


def test_settings_of_the_other_kind_of_data_are_refused_by_name():
    table = rules.data_problem(
        {"likelihood": "gaussian", "latent_dim": (4,)}, True, name=fields.flag_name
    )
    # The flag, what a table uses instead, the fix, the value.
    assert table.startswith("--likelihood applies to image VAEs")
    assert "--network=mlp" in table and "Remove --likelihood" in table
    assert table.endswith("Received: --likelihood=gaussian")
    image = rules.data_problem({"count_likelihood": "poisson"}, False)
    assert image.startswith("count_likelihood applies to table VAEs only")
    assert "Received: count_likelihood='poisson'" in image
    conv = rules.data_problem({"network": "conv"}, True)
    assert "Received: network='conv'" in conv
    assert rules.data_problem({"network": "mlp"}, True) is None
    assert rules.data_problem({"network": "conv", "binarize": False}, False) is None


@pytest.mark.parametrize("tabular", [False, True])
def test_each_kind_of_data_gets_only_its_settings(tabular):
    settings = ModelSettings().model_settings(tabular=tabular)
    assert not set(settings) & set(rules.not_for(tabular))
    assert set(rules.not_for(not tabular)) & set(settings)
    assert ("count_likelihood" in settings) == tabular
