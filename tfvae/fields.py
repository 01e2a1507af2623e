"""Settings declared once: a dataclass field that is also an absl flag.

`setting(default, help, kind, ...)` makes a field that holds everything about
one setting: the default, the flag's help, its kind and choices, the check of
its value, whether a resumed run may change it, and which other setting it
belongs to (`--binarize` only means something with `--likelihood=bernoulli`).
For a dataclass of such fields (`model_settings.ModelSettings`, `config.Config`,
`run_eval.EvalConfig`):

- `define_flags(cls)` defines the absl flags; `from_flags(cls)` reads them
  back, refusing an option given for a setting it does not belong to;
- `check_values(instance, name)` (called by the dataclass's `__post_init__`)
  checks every value, however the instance is made, and raises
  `errors.UsageError` naming the setting and the fix: as a flag
  (`flag_name`, "--beta=inf") or as a Python argument (`python_name`,
  "beta=inf");
- `from_dict(cls, values)` remakes an instance from a saved dict.
"""

import dataclasses
import math
from collections.abc import Callable

from absl import flags, logging

from tfvae import errors

_KEY = "tfvae_setting"


@dataclasses.dataclass(frozen=True)
class Setting:
    """How one field is a flag: see `setting`."""

    help: str
    kind: str
    choices: tuple[str, ...] | None
    minimum: float | None
    check: Callable[[object], str | None] | None
    applies_to: tuple[str, frozenset[str]] | None
    resumable: bool


def setting(
    default,
    help: str,
    kind: str,
    *,
    choices=None,
    minimum: float | None = None,
    check: Callable[[object], str | None] | None = None,
    applies_to: tuple[str, set[str]] | None = None,
    resumable: bool = False,
):
    """Returns a dataclass field that is also a flag.

    `kind` is one of "string", "bool", "integer", "float", "enum" (one of
    `choices`) or "integers" (a comma-separated list of positive integers).
    `minimum` bounds numbers from below (inclusive); `check(value)` returns
    what is wrong with a value, or None. `applies_to=(flag, values)` refuses
    the flag unless `flag` has one of `values`. `resumable` settings may change
    between runs on one `--model_dir`.
    """
    if kind == "integers":
        default = tuple(default)
    meta = Setting(
        help=help,
        kind=kind,
        choices=tuple(choices) if choices is not None else None,
        minimum=minimum,
        check=check,
        applies_to=(applies_to[0], frozenset(applies_to[1])) if applies_to else None,
        resumable=resumable,
    )
    return dataclasses.field(default=default, metadata={_KEY: meta})


def settings_of(cls) -> dict[str, tuple[dataclasses.Field, Setting]]:
    """Returns {name: (field, Setting)} of a settings dataclass, in order."""
    return {f.name: (f, f.metadata[_KEY]) for f in dataclasses.fields(cls)}


_MISSING = object()


def flag_name(name: str, value=_MISSING) -> str:
    """Returns a setting as a command line writes it: `--name`, `--name=value`.

    Lists are comma-separated, a bool is `--name` or `--noname`.
    """
    if value is _MISSING:
        return f"--{name}"
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    if isinstance(value, tuple | list):
        return f"--{name}={','.join(map(str, value))}"
    return f"--{name}={'' if value is None else value}"


def python_name(name: str, value=_MISSING) -> str:
    """Returns a setting as a Python call writes it: `name`, `name=value`."""
    return name if value is _MISSING else f"{name}={value!r}"


def check_values(instance, name: Callable[..., str] = flag_name) -> None:
    """Normalizes and checks every setting of `instance`; raises `UsageError`.

    Args:
        instance: a dataclass of `setting` fields.
        name: how the message names a setting (`flag_name` or `python_name`).
    """
    for field_name, (_, meta) in settings_of(type(instance)).items():
        value = getattr(instance, field_name)
        if meta.kind == "integers":
            # A single size (as runs saved before lists were allowed hold it);
            # anything else that is not a list stays as it is, to be refused.
            if isinstance(value, int):
                value = (value,)
            elif isinstance(value, list | tuple):
                value = tuple(value)
            object.__setattr__(instance, field_name, value)
        check_value(field_name, meta, value, name)


def check_value(
    field_name: str, meta: Setting, value, name: Callable[..., str] = flag_name
) -> None:
    """Raises `UsageError` naming the setting if `value` does not suit `meta`.

    Args:
        field_name: the setting's name.
        meta: its declaration (`settings_of(cls)[field_name][1]`).
        value: the value to check.
        name: how the message names the setting.
    """
    problem = value_problem(meta, value)
    if problem:
        raise errors.UsageError(
            f"{name(field_name)} {problem}. Received: {name(field_name, value)}"
        )


def value_problem(meta: Setting, value) -> str | None:
    """Returns what is wrong with one value of the setting `meta`, or None."""
    if value is None:
        return meta.check(value) if meta.check else None
    if meta.kind == "integers":
        if not isinstance(value, tuple) or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value
        ):
            return "must list positive integers"
    if meta.kind == "integer" and (
        isinstance(value, bool) or not isinstance(value, int)
    ):
        return "must be an integer"
    if meta.kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a number"
        # inf and nan pass every comparison check below (or fail it with a
        # misleading message), then poison the loss: refuse them by name.
        if not math.isfinite(value):
            return "must be a finite number"
    if meta.kind == "enum" and value not in meta.choices:
        return f"must be one of {', '.join(meta.choices)}"
    if meta.minimum is not None and value < meta.minimum:
        return f"must be at least {meta.minimum}"
    return meta.check(value) if meta.check else None


def from_dict(cls, values: dict):
    """Returns `cls(**values)`, refusing unknown keys.

    A missing key is a setting added after the dict was saved: it takes its
    default, which is what the tfvae that saved the dict did (each new
    setting's default keeps the earlier behavior), and a log line names it.
    """
    names = set(settings_of(cls))
    unknown, missing = sorted(set(values) - names), sorted(names - set(values))
    if unknown:
        raise errors.UsageError(f"Not a tfvae {cls.__name__}: unknown keys {unknown}.")
    if missing:
        logging.info(
            "The saved %s predates the settings %s; they take their defaults.",
            cls.__name__,
            missing,
        )
    return cls(**values)


_DEFINE = {
    "string": flags.DEFINE_string,
    "bool": flags.DEFINE_bool,
    "integer": flags.DEFINE_integer,
    "float": flags.DEFINE_float,
}


def define_flags(cls, flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines one absl flag per field of the settings dataclass `cls`."""
    for name, (field, meta) in settings_of(cls).items():
        if meta.kind == "enum":
            flags.DEFINE_enum(
                name, field.default, meta.choices, meta.help, flag_values=flag_values
            )
        elif meta.kind == "integers":
            flags.DEFINE_list(
                name,
                [str(v) for v in field.default],
                meta.help,
                flag_values=flag_values,
            )
        else:
            _DEFINE[meta.kind](name, field.default, meta.help, flag_values=flag_values)


def check_applies(cls, given, values: dict, name: Callable[..., str] = flag_name):
    """Refuses a setting given where it does not apply: it would be ignored.

    Args:
        cls: the settings dataclass.
        given: the names of the settings the user gave.
        values: every setting's value, by name (defaults for those not given).
        name: how the message names a setting (`flag_name` or `python_name`).

    Raises:
        errors.UsageError: e.g. `--binarize` given with `--likelihood=gaussian`.
    """
    known = settings_of(cls)
    for setting_name in given:
        applies_to = known[setting_name][1].applies_to
        if applies_to and values[applies_to[0]] not in applies_to[1]:
            owner, allowed = applies_to
            raise errors.UsageError(
                f"{name(setting_name)} only applies to "
                f"{name(owner, '/'.join(sorted(allowed)))}; this one has "
                f"{name(owner, values[owner])}. Remove {name(setting_name)}."
            )


def from_flags(cls, flag_values: flags.FlagValues = flags.FLAGS):
    """Returns `cls` made from the parsed flags `define_flags(cls)` defined.

    Raises `UsageError` for a bad value, and for an option given on the
    command line for a setting it does not belong to (`--binarize` with
    `--likelihood=gaussian`): it would be ignored.
    """
    values = {}
    given = [name for name in settings_of(cls) if flag_values[name].present]
    check_applies(cls, given, {n: flag_values[n].value for n in settings_of(cls)})
    for name, (_, meta) in settings_of(cls).items():
        value = flag_values[name].value
        if meta.kind == "integers":
            try:
                value = tuple(int(v) for v in value)
            except ValueError:
                raise errors.UsageError(
                    f"--{name} must be a comma-separated list of positive integers. "
                    f"Received: --{name}={','.join(value)}"
                ) from None
        values[name] = value
    return cls(**values)
