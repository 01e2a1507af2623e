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
# The prior whose components are the encoder's: it needs the encoder's layer
# at the top (one layer, or the hierarchy `TOP_DOWN`, whose encoder gives
# the top layer), the true encoder weights (no DReG) and inputs without a class.
ENCODER_PRIOR = "vamp"
TOP_DOWN = "vampprior"
# The settings that apply to one kind of data only: an image's likelihood and
# convolutions; a table's count columns' likelihood (its other columns'
# likelihoods come from its schema).
IMAGE_SETTINGS = (
    "likelihood",
    "binarize",
    "gaussian_scale",
    "mixture_components",
    "network",
    "conv_filters",
    "hierarchy",
)
TABLE_SETTINGS = ("count_likelihood",)
# A table's rows go through dense networks (`networks.vector_mlp`): this
# value of `network` is the one a table takes.
TABLE_NETWORK = "mlp"


def not_for(tabular: bool) -> tuple[str, ...]:
    """Returns the settings that do not apply to tables (True) or images (False)."""
    return IMAGE_SETTINGS if tabular else TABLE_SETTINGS


def data_problem(
    given: dict, tabular: bool, name: Callable[..., str] = python_name
) -> str | None:
    """Returns why settings given for a VAE do not apply to its data, or None.

    Args:
        given: the settings the user gave, {name: value} (not the defaults).
        tabular: the VAE is a table's (True) or an image's (False).
        name: writes a setting: `fields.python_name` or `fields.flag_name`.

    Returns:
        The settings that would be ignored and the fix; or None. A table
        takes `network` only as its own value, `TABLE_NETWORK`.

    Example:
        >>> data_problem({"binarize": False}, tabular=True)
        "binarize applies to image VAEs; a table's likelihood ..."
    """
    wrong = [
        setting
        for setting in not_for(tabular)
        if setting in given
        and not (tabular and setting == "network" and given[setting] == TABLE_NETWORK)
    ]
    if not wrong:
        return None
    names = ", ".join(name(setting) for setting in wrong)
    received = " ".join(name(setting, given[setting]) for setting in wrong)
    if tabular:
        return (
            f"{names} applies to image VAEs; a table's likelihood comes from its "
            f"schema, and its network is {name('network', TABLE_NETWORK)}. Remove "
            f"{names}. Received: {received}"
        )
    return (
        f"{names} applies to table VAEs only; an image's likelihood is "
        f"{name('likelihood')}. Remove {names}. Received: {received}"
    )


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
    hierarchy: str = "iwae",
    name: Callable[..., str] = python_name,
) -> str | None:
    """Returns what is wrong with a combination of model settings, or None.

    Args:
        latent_dim: the size of each stochastic layer, bottom first.
        prior: the prior's name (`priors.PRIORS`' keys).
        kl, objective, beta, free_bits, gradient, kl_warmup_epochs,
            conditional, hierarchy: the settings of those names.
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
    if hierarchy == TOP_DOWN and (layers != 2 or conditional):
        return (
            f"{name('hierarchy', TOP_DOWN)} is Tomczak & Welling's two-layer "
            f"HVAE, without classes: give two sizes and no {name('conditional')}, "
            f"or use {name('hierarchy', 'iwae')}. {received}"
            + (f" {name('conditional', True)}" if conditional else "")
        )
    if prior == ENCODER_PRIOR and layers > 1 and hierarchy != TOP_DOWN:
        return (
            f"{name('prior', ENCODER_PRIOR)} with more than one stochastic layer "
            f"needs {name('hierarchy', TOP_DOWN)}: its components are the "
            "encoder's q(z|u_k), over the top layer only there. Add it, or use "
            f"{name('prior', 'standard')} or mog with {name('latent_dim', latent_dim)}."
        )
    if conditional and prior == ENCODER_PRIOR:
        return (
            f"{name('conditional', True)} cannot use {name('prior', ENCODER_PRIOR)}: "
            f"the pseudo-inputs have no class label. Use {name('prior', 'standard')} "
            "or mog."
        )
    return None
