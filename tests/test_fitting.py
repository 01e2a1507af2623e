"""Tests for tfvae.fitting: the fit image and table runs share.

The fit itself runs in every training test (tests/test_training.py for
images, tests/test_table_training.py for tables); here, its rules.
"""

import pytest

from tfvae import fitting


@pytest.mark.parametrize(
    "requested, steps_per_epoch, expected", [(16, 234, 13), (16, 6, 6), (4, 7, 1)]
)
def test_steps_per_execution_divides_the_epoch(requested, steps_per_epoch, expected):
    assert fitting.steps_per_execution(requested, steps_per_epoch) == expected
