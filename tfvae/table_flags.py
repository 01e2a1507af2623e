"""Which training flags fit a table run, and `--column_types`' form.

`config.Config` calls `table_problem(config)` when it is made. A table run
(`Config.table_run`: `--table=PATH`, or a TFDS `--dataset` of scalar
features) refuses the image-only model settings (`rules.data_problem`);
`--table` is the dataset, so `--dataset` and `--image_folder` are refused
beside it. `TABLE_ONLY`'s settings and `--count_likelihood` are refused
without a table, `--anomaly_label` without `--label_column`, and
`--test_fraction` beside a folder's own `train.*` and `test.*`. Each
refusal names the flags and the fix, before any work.

Example:

    >>> parse_column_types("proline:real,magnesium:real")
    {'proline': 'real', 'magnesium': 'real'}
"""

import os

from tfvae import errors, rules, table_typing
from tfvae.fields import flag_name, settings_of
from tfvae.model_settings import ModelSettings

# The settings that only a table run takes.
TABLE_ONLY = (
    "column_types",
    "drop_columns",
    "label_column",
    "anomaly_label",
    "max_categories",
    "test_fraction",
)
# The image dataset's settings, refused beside --table.
_IMAGE_DATA = ("dataset", "image_folder", "manual_dir", "image_size", "image_channels")


def parse_column_types(spec: str | None) -> dict[str, str]:
    """Returns `--column_types=name:type,...` as {name: type}.

    Args:
        spec: the flag's value; None or "" gives {}.

    Returns:
        {column name: type}, each type one of `table_typing.COLUMN_TYPES`.

    Raises:
        errors.UsageError: an item that is not name:type with a known type,
            or a column named twice.

    Example:
        >>> parse_column_types("n:count")
        {'n': 'count'}
    """
    types = {}
    for item in spec.split(",") if spec else ():
        name, _, kind = item.rpartition(":")
        if not name or kind not in table_typing.COLUMN_TYPES:
            raise errors.UsageError(
                "--column_types must list name:type pairs, each type one of "
                f"{', '.join(table_typing.COLUMN_TYPES)} (e.g. --column_types=proline:"
                f"real). Received: --column_types={spec} (the item {item!r})"
            )
        if name in types:
            raise errors.UsageError(
                f"--column_types types {name!r} twice ({name}:{types[name]} and "
                f"{item}): give each column one type. Received: "
                f"--column_types={spec}"
            )
        types[name] = kind
    return types


def table_problem(config) -> str | None:
    """Returns what is wrong with a `Config`'s table settings, or None."""
    defaults = {n: f.default for n, (f, _) in settings_of(type(config)).items()}

    def given(names):
        return [
            flag_name(n, getattr(config, n))
            for n in names
            if getattr(config, n) != defaults[n]
        ]

    # An image's settings with a table, a table's without one.
    model = {
        n: getattr(config, n)
        for n in settings_of(ModelSettings)
        if getattr(config, n) != defaults[n]
    }
    problem = rules.data_problem(model, config.table_run, flag_name)
    if problem:
        return problem
    if not config.table_run:
        extra = given(TABLE_ONLY)
        if extra:
            return (
                f"{extra[0]} only applies to --table or a TFDS --dataset of scalar "
                "features: add --table=PATH, or remove it."
            )
        return None
    # The table's flag in messages.
    table = "--table" if config.table else f"--dataset={config.dataset}"
    images = given(_IMAGE_DATA) if config.table else []
    if images:
        return (
            f"--table={config.table} is the dataset: remove {' '.join(images)}, or "
            "remove --table to train on images."
        )
    parse_column_types(config.column_types)
    if config.table and os.path.isdir(config.table):
        fraction = given(["test_fraction"])
        if fraction:
            return (
                f"{fraction[0]} does not apply to --table={config.table}: the "
                "folder's train.* and test.* are the split. Remove --test_fraction."
            )
    if config.anomaly_label is not None and not config.label_column:
        return (
            f"--anomaly_label={config.anomaly_label} needs --label_column=NAME, the "
            "column holding the labels."
        )
    if config.conditional and not config.label_column:
        return (
            f"--conditional with {table} needs --label_column=NAME: its classes "
            "are what the VAE is conditioned on."
        )
    if config.conditional and config.anomaly_label is not None:
        return (
            "--conditional cannot use --anomaly_label: a conditional VAE scores a "
            "row given its label, and the anomalous label is never trained on. "
            "Remove one of them."
        )
    if config.strategy == "multi_worker":
        return (
            f"{table} is not supported under --strategy=multi_worker (it has not "
            "been tested there). Train a table on one machine (--strategy=auto "
            "or mirrored)."
        )
    return None
