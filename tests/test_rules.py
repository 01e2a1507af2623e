"""Tests for tfvae.rules: one rule, written once, in a Python and a flag form."""

import pytest

from tfvae import fields, rules


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
        ({"prior": "vamp", "kl": "monte_carlo", "latent_dim": (4, 2)}, "needs one"),
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
