"""A training run's settings: a field of `Config` is a `python -m tfvae.train` flag.

Each field is declared once with `fields.setting(...)` (default, help,
check, whether a resumed run may change it); `tfvae.fields` turns the
fields into flags and back. The model's settings are declared in
`model_settings.ModelSettings`, which `Config` extends, so `build_vae`'s
defaults are the flags' defaults. `Config(...)` checks every value when it is made,
from flags, from Python or from a run's `config.json`, and refuses settings
that do not fit together, raising `errors.UsageError` naming the flag and the
fix. Tests make configs with `Config(model_dir=..., **overrides)`, and a test
checks that the README's flag table lists every field with its default.
"""

import dataclasses
import json
import os

from tfvae import devices, distribute, errors, noise, streaming, table_datasets, tables
from tfvae.fields import check_values, flag_name, from_dict, setting, settings_of
from tfvae.image_folder import ImageFolder
from tfvae.model_settings import ModelSettings
from tfvae.table_flags import table_problem


def _image_folder_problem(config) -> str | None:
    """Returns what is wrong with the --image_folder settings, or None."""
    default_dataset = settings_of(type(config))["dataset"][0].default
    if not config.image_folder:
        if config.image_size or config.image_channels:
            return (
                "--image_size and --image_channels only apply to --image_folder: "
                "add --image_folder=PATH, or remove them."
            )
        return None
    if config.dataset != default_dataset:
        return (
            f"--image_folder replaces --dataset: remove --dataset={config.dataset} "
            f"(the folder {config.image_folder} is the dataset)."
        )
    if config.manual_dir:
        return (
            "--manual_dir only applies to a TFDS --dataset; remove it with "
            "--image_folder."
        )
    if not config.image_size:
        return (
            f"--image_folder={config.image_folder} needs --image_size=H,W, the "
            "size every image is cropped and resized to (e.g. --image_size=64,64)."
        )
    return None


@dataclasses.dataclass(frozen=True)
class Config(ModelSettings):
    """Everything that defines one training run; `python -m tfvae.train`'s flags.

    The model's settings are the inherited `ModelSettings` fields.
    """

    # Data.
    dataset: str = setting(
        "mnist",
        "TFDS dataset: of fixed-shape uint8 images with train/test splits, or of "
        "scalar features, trained as a table (e.g. wine_quality/red).",
        "string",
    )
    data_dir: str | None = setting(
        None, "TFDS data directory (TFDS default if unset).", "string", resumable=True
    )
    manual_dir: str | None = setting(
        None,
        "Folder holding the dataset's original downloaded files, to build it "
        "offline (tfds.download.DownloadConfig(manual_dir=...)).",
        "string",
        resumable=True,
    )
    image_folder: str | None = setting(
        None,
        "Train on your own images instead of --dataset: a folder with train/ "
        "and test/, each holding images or one subfolder of images per class "
        "(the labels). Built once into --data_dir; needs --image_size.",
        "string",
    )
    image_size: tuple[int, ...] = setting(
        (),
        "image_folder only: H,W every image is center-cropped (to that aspect "
        "ratio) and resized to.",
        "integers",
        check=lambda v: None if len(v) in (0, 2) else "must be two sizes, H,W",
    )
    image_channels: int | None = setting(
        None,
        "image_folder only: 1 converts every image to grayscale, 3 to RGB; "
        "unset keeps the files' own channels, which must then agree.",
        "integer",
        check=lambda v: None if v in (None, 1, 3) else "must be 1 or 3",
    )
    table: str | None = setting(
        None,
        "Train on a table instead of --dataset: a CSV, Parquet, .npy or .npz "
        "file (split by --test_fraction and --seed), or a folder holding "
        "train.* and test.*. Its columns are typed from the training split.",
        "string",
        # A moved file may be given anew: the run checks it is the same table.
        resumable=True,
    )
    column_types: str | None = setting(
        None,
        "table only: name:type,... overriding the inferred column types (real, "
        "positive, count, binary, categorical).",
        "string",
    )
    drop_columns: str | None = setting(
        None,
        "table only: name,... of columns left out of the model (identifiers, "
        "free text, constant columns).",
        "string",
    )
    label_column: str | None = setting(
        None,
        "table only: a class column, not modelled: --conditional's labels, and "
        "the evaluation's (latent space by label, --anomaly_label).",
        "string",
    )
    anomaly_label: str | None = setting(
        None,
        "label_column only: rows with this label are left out of training; the "
        "evaluation reports how well the score picks them out of the test split "
        "(ROC AUC, PR AUC).",
        "string",
    )
    max_categories: int = setting(
        tables.MAX_CATEGORIES,
        "table only: the most categories a categorical column may have.",
        "integer",
        minimum=tables.MIN_CATEGORIES,
    )
    test_fraction: float = setting(
        tables.TEST_FRACTION,
        "table only: the share of a single table's rows held out as the test "
        "split, drawn with --seed (a folder's train.* and test.* are kept).",
        "float",
        check=tables.test_fraction_problem,
    )
    memory_budget: str = setting(
        "25%",
        "Largest training split held in memory, decoded: a share of this "
        "machine's memory (25%) or a size (512MB, 2GB); a larger split is "
        "streamed from the dataset's record files. 0 always streams.",
        "string",
        check=streaming.budget_problem,
        resumable=True,
    )
    shuffle_buffer: int = setting(
        10_000,
        "Records the streaming path permutes together, block by block (its "
        "memory bound); the in-memory path permutes the whole split instead.",
        "integer",
        minimum=1,
        resumable=True,
    )
    # Objective (besides the model settings).
    kl_warmup_epochs: int = setting(
        0,
        "Raise the KL weight linearly to --beta over this many epochs (epoch "
        "e weighs beta * min(1, (e + 1) / N)); with --objective=iwae it weighs "
        "each importance weight's log p(z) - log q(z|x). 0 starts at --beta.",
        "integer",
        minimum=0,
    )
    # Optimization.
    learning_rate: float = setting(
        1e-3,
        "Adam learning rate.",
        "float",
        check=lambda v: None if v > 0 else "must be positive",
    )
    learning_rate_decay: float = setting(
        1.0,
        "Per-epoch factor of the learning rate (epoch e trains at "
        "learning_rate * decay**e); it follows the optimizer's step count, so "
        "a resumed run continues the schedule. 1 keeps it constant.",
        "float",
        check=lambda v: None if 0 < v <= 1 else "must be in (0, 1]",
    )
    batch_size: int = setting(256, "Global batch size.", "integer", minimum=1)
    epochs: int = setting(
        10,
        "Total epochs (a resumed run counts those done).",
        "integer",
        minimum=1,
        resumable=True,
    )
    seed: int = setting(
        0,
        "Seed of the weights, shuffling, binarization and z noise.",
        "integer",
        minimum=0,
        check=noise.seed_problem,
    )
    # Execution.
    strategy: str = setting(
        "auto",
        "tf.distribute strategy.",
        "enum",
        choices=distribute.STRATEGIES,
        resumable=True,
    )
    jit_compile: bool | None = setting(
        None,
        "Compile the train/test steps with XLA; unset: the faster, timed on "
        "the run's own model before a long run, else by the rule for the "
        "device and --network (tfvae/execution_trial.py). Off, with a log "
        "line, under a multi-replica strategy, where Keras does not support it.",
        "bool",
        resumable=True,
    )
    steps_per_execution: int = setting(
        16,
        "Training steps per compiled call, moved to the divisor of the steps "
        "per epoch nearest it by ratio: fewer Python round trips, but the "
        "progress bar and the NaN check see only each call's end.",
        "integer",
        minimum=1,
        resumable=True,
    )
    mixed_precision: str = setting(
        "auto",
        "Keras dtype policy: mixed_float16 (with loss scaling) or mixed_bfloat16 "
        "compute the networks in 16 bits; weights, distributions and the loss "
        "stay float32. auto: float32, or for --network=mlp on a CPU with "
        "native bfloat16 products mixed_bfloat16 when a timed trial finds it "
        "faster (tfvae/execution_trial.py).",
        "enum",
        choices=("auto", *devices.POLICIES),
    )
    # Evaluation during training.
    iwae_every_epochs: int = setting(
        0,
        "Every N epochs, also estimate the test log-likelihood with the IWAE "
        "bound (TensorBoard and iwae_history.csv); 0 never does.",
        "integer",
        minimum=0,
        resumable=True,
    )
    iwae_samples: int = setting(
        100,
        "Importance samples k for --iwae_every_epochs.",
        "integer",
        minimum=1,
        resumable=True,
    )
    # Where things go.
    model_dir: str | None = setting(
        None,
        "Run directory (created, or resumed). Required.",
        "string",
        check=lambda v: None if v else "is required (the run directory)",
        resumable=True,
    )
    export_dir: str | None = setting(
        None,
        "TF Serving model base path: the SavedModel goes to "
        "<export_dir>/<version>. Unset means export/<dataset>.",
        "string",
        resumable=True,
    )
    export: bool = setting(
        True, "Export a SavedModel after training.", "bool", resumable=True
    )
    export_max_samples: int = setting(
        1000,
        "The largest num_samples an export's sample and log_weights signatures "
        "accept (their memory grows with it); larger requests are refused.",
        "integer",
        minimum=1,
        check=lambda v: None if v < 2**31 else "must fit in an int32",
        resumable=True,
    )

    def __post_init__(self):
        check_values(self)
        problem = _image_folder_problem(self) or table_problem(self)
        if problem:
            raise errors.UsageError(problem)
        self.check_combination(flag_name, self.kl_warmup_epochs)
        if self.conditional and self.strategy == "multi_worker":
            raise errors.UsageError(
                "--conditional does not train under --strategy=multi_worker: "
                "Keras's multi-worker fit fails on (images, labels) batches. Train "
                "a conditional VAE on one machine (--strategy=auto or mirrored)."
            )

    @property
    def export_base(self) -> str:
        """The TF Serving model base path exports go to."""
        return self.export_dir or f"export/{self.dataset_name}"

    @property
    def image_source(self) -> ImageFolder | None:
        """The `--image_folder` to train on, or None to use `--dataset`."""
        if not self.image_folder:
            return None
        return ImageFolder(self.image_folder, self.image_size, self.image_channels)

    @property
    def table_run(self) -> bool:
        """Whether the run trains on a table: `--table`, or a TFDS `--dataset`
        of scalar features (`table_datasets.dataset_is_table`, which reads its
        metadata once). The one place that chooses the table or image path."""
        if self.table:
            return True
        return not self.image_folder and table_datasets.dataset_is_table(
            self.dataset, self.data_dir
        )

    @property
    def dataset_name(self) -> str:
        """`--dataset`, or the name of the `--image_folder` folder or `--table`."""
        if self.table:
            return os.path.splitext(os.path.basename(os.path.normpath(self.table)))[0]
        return self.image_source.name if self.image_source else self.dataset

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        """Returns the Config of a saved dict (see `from_dict`)."""
        return from_dict(cls, values)


def resumable_fields(cls=Config) -> frozenset[str]:
    """Returns the settings a resumed run may change."""
    return frozenset(n for n, (_, m) in settings_of(cls).items() if m.resumable)


def check_compatible(previous: Config, requested: Config) -> None:
    """Raises `UsageError` if `requested` cannot continue the run `previous` began.

    Only the `resumable` settings (data locations, the epoch budget, device
    placement, evaluation during training, where things go) may differ;
    anything else would mix two trainings in one directory.
    """
    old, new = dataclasses.asdict(previous), dataclasses.asdict(requested)

    def shown(value):
        return ",".join(map(str, value)) if isinstance(value, tuple) else repr(value)

    changed = [
        f"--{name}: run has {shown(old[name])}, requested {shown(new[name])}"
        for name in old
        if (name not in resumable_fields() and old[name] != new[name])
        # --table may move, but a table run stays one.
        or (name == "table" and (old[name] is None) != (new[name] is None))
    ]
    if changed:
        raise errors.UsageError(
            f"--model_dir={requested.model_dir} holds a run with a different "
            "configuration, so it cannot be resumed:\n  "
            + "\n  ".join(changed)
            + "\nUse a new --model_dir, or repeat the run's original flags "
            "(see its config.json)."
        )
