"""The frozen run configuration, and how a run directory remembers it.

`tfvae.train` turns its flags into one `Config` and writes it to
`<model_dir>/config.json`. Everything downstream (evaluation, export, a resumed
run) reads that file instead of re-declaring the model's settings, so a model
is always rebuilt exactly as it was trained. Defaults live in the flag
definitions only: every field here is required.
"""

import dataclasses
import json
import os

CONFIG_FILENAME = "config.json"
# Per-epoch CSVs in a run directory: training's Keras CSVLogger writes the
# first (train and val_ metrics), `tfvae.evaluation.IWAECallback` the second.
HISTORY_FILENAME = "history.csv"
IWAE_HISTORY_FILENAME = "iwae_history.csv"

# Fields that may change between invocations on the same `model_dir` without
# changing what is being trained: where the data lives, how many epochs to run
# in total, and how the computation is placed on devices.
_RESUMABLE_FIELDS = frozenset(
    {
        "data_dir",
        "manual_dir",
        "epochs",
        "strategy",
        "jit_compile",
        "steps_per_execution",
        "model_dir",
        "export_dir",
        "export",
        "iwae_every_epochs",
        "iwae_samples",
    }
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines one training run."""

    # Data.
    dataset: str
    data_dir: str | None
    manual_dir: str | None
    # Model.
    likelihood: str
    binarize: bool
    gaussian_scale: float | None
    posterior: str
    latent_dim: int
    network: str
    hidden_units: tuple[int, ...]
    conv_filters: tuple[int, ...]
    activation: str
    kl: str
    # Optimization.
    learning_rate: float
    batch_size: int
    epochs: int
    seed: int
    # Execution.
    strategy: str
    jit_compile: bool
    steps_per_execution: int
    mixed_precision: str
    # Evaluation during training.
    iwae_every_epochs: int
    iwae_samples: int
    model_dir: str
    export_dir: str
    export: bool

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        missing = sorted(names - set(values))
        if unknown or missing:
            raise ValueError(
                "Not a tfvae configuration: "
                f"unknown keys {unknown}, missing keys {missing}."
            )
        values = dict(values)
        values["hidden_units"] = tuple(values["hidden_units"])
        values["conv_filters"] = tuple(values["conv_filters"])
        return cls(**values)


def save(config: Config, model_dir: str) -> str:
    """Writes `config` to `<model_dir>/config.json`; returns the file's path."""
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, CONFIG_FILENAME)
    with open(path, "w") as f:
        f.write(config.to_json() + "\n")
    return path


def load(model_dir: str) -> Config:
    """Reads the `Config` a training run saved in `model_dir`."""
    path = os.path.join(model_dir, CONFIG_FILENAME)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist: {model_dir!r} is not a tfvae run directory. "
            "Pass the --model_dir that `python -m tfvae.train` wrote to."
        )
    with open(path) as f:
        return Config.from_dict(json.load(f))


def check_compatible(previous: Config, requested: Config) -> None:
    """Raises ValueError if `requested` cannot continue the run `previous` began.

    Only data locations, the epoch budget and device placement may differ;
    anything else would silently mix two different trainings in one directory.
    """
    old, new = dataclasses.asdict(previous), dataclasses.asdict(requested)
    changed = [
        f"--{name}: run has {old[name]!r}, requested {new[name]!r}"
        for name in old
        if name not in _RESUMABLE_FIELDS and old[name] != new[name]
    ]
    if changed:
        raise ValueError(
            f"--model_dir={requested.model_dir} holds a run with a different "
            "configuration, so it cannot be resumed:\n  "
            + "\n  ".join(changed)
            + "\nUse a new --model_dir, or repeat the run's original flags "
            f"(see {os.path.join(requested.model_dir, CONFIG_FILENAME)})."
        )
