"""A model's settings, declared once: `build_vae`'s arguments and the model's flags.

`ModelSettings` is a frozen dataclass of `fields.setting` fields: each one's
default, help, choices (from the registries of `tfvae.likelihoods`,
`tfvae.table_likelihood`, `tfvae.posteriors`, `tfvae.networks`,
`tfvae.priors` and `tfvae.objective`) and check. `builder.build_vae` and
`table_model.build_table_vae` take these settings by name with these
defaults (each only those that apply to its data, `rules.data_problem`); the
training `Config` extends the class, so each is also a
`python -m tfvae.train` flag with the same default. Made from Python, a bad
value is refused naming the argument (`latent_dim=(0,)`); made from flags,
naming the flag (`--latent_dim=0`).

Example:

    >>> ModelSettings(latent_dim=4).latent_dim
    (4,)
"""

import dataclasses
import inspect
from collections.abc import Callable

import keras

from tfvae import (
    errors,
    fields,
    likelihoods,
    networks,
    posteriors,
    priors,
    rules,
    table_likelihood,
)
from tfvae.chain import HIERARCHIES
from tfvae.fields import setting
from tfvae.objective import GRADIENTS, KL_ESTIMATORS, OBJECTIVES


def _activation_problem(name: str) -> str | None:
    try:
        keras.activations.get(name)
    except ValueError:
        return "is not a Keras activation name (e.g. relu, softplus, gelu, tanh)"
    return None


def _default(head: type, argument: str):
    """Returns the default of `head`'s argument: the head owns it, the flag reads it."""
    return inspect.signature(head).parameters[argument].default


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """The settings of one VAE; see the module docstring."""

    likelihood: str = setting(
        "bernoulli",
        "Observation model p(x|z).",
        "enum",
        choices=likelihoods.LIKELIHOODS,
    )
    binarize: bool = setting(
        _default(likelihoods.BernoulliHead, "binarize"),
        "bernoulli only: observe pixels as fresh Bernoulli(pixel/255) draws "
        "(dynamic binarization); --nobinarize scores gray pixels as the Pyro "
        "tutorial does.",
        "bool",
        applies_to=("likelihood", {"bernoulli"}),
    )
    gaussian_scale: float | None = setting(
        _default(likelihoods.GaussianHead, "scale"),
        "gaussian only: fixed per-pixel standard deviation; unset learns it per pixel.",
        "float",
        check=lambda v: None if v is None or v > 0 else "must be positive",
        applies_to=("likelihood", {"gaussian"}),
    )
    mixture_components: int = setting(
        _default(likelihoods.LogisticMixtureHead, "components"),
        "logistic_mixture only: logistic components per pixel value (10 in "
        "PixelCNN++).",
        "integer",
        minimum=1,
        applies_to=("likelihood", {"logistic_mixture"}),
    )
    count_likelihood: str = setting(
        _default(table_likelihood.TableHead, "count_likelihood"),
        "Tables only: p(cell|z) of every count column (a table's other "
        "columns' likelihoods come from their types).",
        "enum",
        choices=table_likelihood.COUNT_LIKELIHOODS,
    )
    posterior: str = setting(
        "diag",
        "q(z|x): diagonal or full-covariance normal.",
        "enum",
        choices=posteriors.POSTERIORS,
    )
    latent_dim: tuple[int, ...] = setting(
        (50,),
        "Size of z; one size per stochastic layer, bottom first (100,50 is the "
        "IWAE paper's two-layer model: q(z1|x) q(z2|z1), p(z2) p(z1|z2) p(x|z1)).",
        "integers",
        check=lambda v: None if v else "must list at least one size",
    )
    hierarchy: str = setting(
        "iwae",
        "How two stochastic layers condition on x: iwae, the IWAE paper's "
        "q(z1|x) q(z2|z1), p(x|z1); or vampprior, Tomczak & Welling's HVAE: "
        "q(z2|x) q(z1|x,z2), p(z2) p(z1|z2) p(x|z1,z2), whose --prior=vamp "
        "components are q(z2|u_k). Images only.",
        "enum",
        choices=HIERARCHIES,
    )
    network: str = setting(
        "mlp",
        "Encoder/decoder bodies: dense layers, gated dense layers "
        "((xW + b) * sigmoid(xV + c), the VampPrior paper's; no --activation, "
        "and the layers between stochastic layers are gated too), or stride-2 "
        "convolutions.",
        "enum",
        choices=networks.NETWORKS,
    )
    hidden_units: tuple[int, ...] = setting(
        (400,),
        "Dense layer sizes, encoder order (the decoder mirrors them); may be "
        "empty with --network=conv.",
        "integers",
    )
    conv_filters: tuple[int, ...] = setting(
        (32, 64),
        "conv only: filters per stride-2 convolution.",
        "integers",
        check=lambda v: None if v else "must list at least one size",
        applies_to=("network", {"conv"}),
    )
    activation: str = setting(
        "softplus",
        "Hidden activation (a Keras name); gated networks have none, their "
        "gate is the nonlinearity.",
        "string",
        check=_activation_problem,
        applies_to=("network", set(networks.NETWORKS) - set(networks.GATED)),
    )
    kl: str = setting(
        "analytic",
        "KL(q||p): closed form (one layer, --prior=standard), or log q(z) - "
        "log p(z) at the sampled z.",
        "enum",
        choices=KL_ESTIMATORS,
    )
    prior: str = setting(
        "standard",
        "p(z) of the top layer: N(0, I), a learned mixture of diagonal normals, "
        "or the VampPrior (the encoder at learned pseudo-inputs); the last two "
        "need --kl=monte_carlo.",
        "enum",
        choices=priors.PRIORS,
    )
    prior_components: int = setting(
        500,
        "mog/vamp only: mixture components (pseudo-inputs for vamp).",
        "integer",
        minimum=1,
        applies_to=("prior", {"mog", "vamp"}),
    )
    conditional: bool = setting(
        False,
        "Condition the encoder and decoder on the dataset's class label (a "
        "conditional VAE); the exported signatures then take `labels`.",
        "bool",
    )
    # Objective.
    objective: str = setting(
        "elbo",
        "What training minimizes: the negative ELBO averaged over "
        "--train_samples samples, or the negative IWAE bound with "
        "k=--train_samples (Burda et al. 2015).",
        "enum",
        choices=OBJECTIVES,
    )
    train_samples: int = setting(
        1,
        "Latent samples per example in the objective (the IWAE paper's k).",
        "integer",
        minimum=1,
    )
    gradient: str = setting(
        "standard",
        "iwae only: the encoder's gradient as is, or doubly reparameterized "
        "(DReG, Tucker et al. 2018; one stochastic layer, not with vamp).",
        "enum",
        choices=GRADIENTS,
        applies_to=("objective", {"iwae"}),
    )
    beta: float = setting(
        1.0,
        "elbo only: weight of the KL term (beta-VAE); metrics still report "
        "the true -ELBO.",
        "float",
        minimum=0,
        applies_to=("objective", {"elbo"}),
    )
    free_bits: float = setting(
        0.0,
        "elbo only: floor, in nats, of each stochastic layer's KL per example "
        "in the objective (free bits, Kingma et al. 2016).",
        "float",
        minimum=0,
        applies_to=("objective", {"elbo"}),
    )

    def __post_init__(self):
        fields.check_values(self, fields.python_name)
        self.check_combination(fields.python_name)

    def check_combination(
        self, name: Callable[..., str], kl_warmup_epochs: int = 0
    ) -> None:
        """Raises `errors.UsageError` if the settings do not fit together.

        Args:
            name: how the message names a setting (`fields.python_name` or
                `fields.flag_name`).
            kl_warmup_epochs: the training's KL warm-up (a training setting
                that one rule also reads).
        """
        if self.network != "conv" and not self.hidden_units:
            raise errors.UsageError(
                f"{name('hidden_units')} may be empty only with "
                f"{name('network', 'conv')}. Received: {name('network', self.network)} "
                f"{name('hidden_units', self.hidden_units)}"
            )
        problem = rules.combination_problem(
            self.latent_dim,
            self.prior,
            kl=self.kl,
            objective=self.objective,
            beta=self.beta,
            free_bits=self.free_bits,
            gradient=self.gradient,
            kl_warmup_epochs=kl_warmup_epochs,
            conditional=self.conditional,
            hierarchy=self.hierarchy,
            name=name,
        )
        if problem:
            raise errors.UsageError(problem)

    def model_settings(self, tabular: bool = False) -> dict:
        """Returns the model settings by name: `builder.build_vae`'s arguments.

        Only those that apply: `binarize` only with `likelihood="bernoulli"`,
        and so on (`fields.setting`'s `applies_to`), and only those of the
        data's kind (`rules.not_for`).

        Args:
            tabular: for a table's VAE (`table_model.build_table_vae`'s
                arguments) instead of an image's.

        Returns:
            {setting name: value}.
        """
        values = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(ModelSettings)
        }
        known = fields.settings_of(ModelSettings)
        return {
            name: value
            for name, value in values.items()
            if name not in rules.not_for(tabular)
            and (
                not known[name][1].applies_to
                or values[known[name][1].applies_to[0]] in known[name][1].applies_to[1]
            )
        }


def checked(settings: dict, tabular: bool = False) -> ModelSettings:
    """Returns the checked settings with defaults, refusing unknown names.

    And settings that do not apply to the data's kind (`rules.data_problem`)
    or to the other settings (`binarize` with `likelihood="gaussian"`).

    Example:
        >>> checked({"latent_dim": 4}).latent_dim
        (4,)
    """
    valid = [f.name for f in dataclasses.fields(ModelSettings)]
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise errors.UsageError(
            f"Unknown model settings {unknown}. The settings are: {', '.join(valid)}"
        )
    values = ModelSettings(**settings)
    problem = rules.data_problem(settings, tabular)
    if problem:
        raise errors.UsageError(problem)
    fields.check_applies(
        ModelSettings, settings, dataclasses.asdict(values), fields.python_name
    )
    return values
