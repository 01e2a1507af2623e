"""Tests for tfvae.fields: settings that are flags, and how a setting is named."""

import dataclasses
import re

import pytest

from tfvae import errors, fields


@dataclasses.dataclass(frozen=True)
class _Settings:
    rate: float = fields.setting(0.5, "A rate.", "float", minimum=0)
    sizes: tuple[int, ...] = fields.setting((3,), "Sizes.", "integers")
    count: int = fields.setting(1, "A count.", "integer", minimum=1)

    def __post_init__(self):
        fields.check_values(self)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_a_float_setting_must_be_finite(value):
    with pytest.raises(errors.UsageError, match=re.escape(f"--rate={value}")) as e:
        _Settings(rate=value)
    assert str(e.value).startswith("--rate must be a finite number.")


def test_an_integer_setting_refuses_other_types_and_one_size_is_a_list():
    with pytest.raises(errors.UsageError, match="--count must be an integer"):
        _Settings(count=1.5)
    assert _Settings(sizes=4).sizes == (4,)


def test_names_are_written_as_flags_or_as_python_arguments():
    assert fields.flag_name("latent_dim", (100, 50)) == "--latent_dim=100,50"
    assert fields.flag_name("binarize", False) == "--nobinarize"
    assert fields.flag_name("beta") == "--beta"
    assert fields.python_name("latent_dim", (100, 50)) == "latent_dim=(100, 50)"
    assert fields.python_name("kl", "analytic") == "kl='analytic'"
