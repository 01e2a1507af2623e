"""Which model settings fit together: the one owner of the combination rules.

`combination_problem` takes plain facts about a model (its latent sizes, the
prior's name, the KL estimator, the objective, ...) and a `name` function
that writes a setting as the caller's user typed it: `fields.python_name`
for a Python caller (`kl='analytic'`), `fields.flag_name` for the command
line (`--kl=analytic`). The VAE's constructor and the training `Config` both
call it, so a rule and its message are written once.

Example:

    >>> combination_problem((4, 2), "standard", kl="analytic")
    "kl='analytic' needs one stochastic layer and prior='standard' ..."
"""

from collections.abc import Callable

from tfvae.fields import python_name

# The priors whose KL from a normal q has a closed form (`kl="analytic"`).
CLOSED_FORM_PRIORS = ("standard",)
# The prior whose components are the encoder's: it needs z1 at the top, the
# true encoder weights (no DReG) and inputs without a class.
ENCODER_PRIOR = "vamp"


def combination_problem(
    latent_dim: tuple[int, ...],
    prior: str,
    *,
    kl: str = "analytic",
    objective: str = "elbo",
    beta: float = 1.0,
    free_bits: float = 0.0,
    gradient: str = "standard",
    kl_warmup_epochs: int = 0,
    conditional: bool = False,
    name: Callable[..., str] = python_name,
) -> str | None:
    """Returns what is wrong with a combination of model settings, or None.

    Args:
        latent_dim: the size of each stochastic layer, bottom first.
        prior: the prior's name (`priors.PRIORS`' keys).
        kl, objective, beta, free_bits, gradient, kl_warmup_epochs,
            conditional: the settings of those names.
        name: writes a setting, `name("beta")`, or with its value,
            `name("beta", 2.0)`: `fields.python_name` or `fields.flag_name`.

    Returns:
        The problem and its fix, naming the settings with `name`; or None.
    """
    layers = len(latent_dim)
    received = f"Received: {name('latent_dim', latent_dim)} {name('prior', prior)}"
    if kl == "analytic" and (layers > 1 or prior not in CLOSED_FORM_PRIORS):
        return (
            f"{name('kl', 'analytic')} needs one stochastic layer and "
            f"{name('prior', 'standard')} (no other KL has a closed form); add "
            f"{name('kl', 'monte_carlo')}. {received}"
        )
    if objective == "iwae" and (beta != 1 or free_bits):
        return (
            f"{name('objective', 'iwae')} has no separate KL term to weight: drop "
            f"{name('beta')} and {name('free_bits')}, or use "
            f"{name('objective', 'elbo')}. Received: {name('beta', beta)} "
            f"{name('free_bits', free_bits)}"
        )
    if gradient == "dreg" and objective != "iwae":
        return (
            f"{name('gradient', 'dreg')} is a gradient of the IWAE bound: add "
            f"{name('objective', 'iwae')}. Received: {name('objective', objective)}"
        )
    if gradient == "dreg" and kl_warmup_epochs:
        return (
            f"{name('gradient', 'dreg')} needs the true importance weights, which "
            f"a KL warm-up anneals: drop {name('kl_warmup_epochs')} or use "
            f"{name('gradient', 'standard')}."
        )
    if gradient == "dreg" and (layers > 1 or prior == ENCODER_PRIOR):
        return (
            f"{name('gradient', 'dreg')} supports one stochastic layer and a prior "
            "that does not share the encoder (not "
            f"{name('prior', ENCODER_PRIOR)}). {received}"
        )
    if prior == ENCODER_PRIOR and layers > 1:
        return (
            f"{name('prior', ENCODER_PRIOR)} needs one stochastic layer: its "
            "components are the encoder's q(z1|u_k), over the bottom layer. Use "
            f"{name('prior', 'standard')} or mog with {name('latent_dim', latent_dim)}."
        )
    if conditional and prior == ENCODER_PRIOR:
        return (
            f"{name('conditional', True)} cannot use {name('prior', ENCODER_PRIOR)}: "
            f"the pseudo-inputs have no class label. Use {name('prior', 'standard')} "
            "or mog."
        )
    return None
