"""Tests for tfvae.fitting: the fit image and table runs share.

The fit itself runs in every training test (tests/test_training.py for
images, tests/test_table_training.py for tables); here, its rules.
"""

import pytest

from tfvae import fitting


@pytest.mark.parametrize(
    "requested, steps_per_epoch, expected",
    [
        (16, 234, 18),  # 18/16 is nearer than 16/13.
        (16, 159, 53),  # 3 x 53: not 3 steps per call.
        (16, 157, 157),  # A prime: the whole epoch, nearer than 1.
        (16, 6, 6),
        (4, 6, 3),  # 4/3 is nearer than 6/4.
        (2, 8, 2),
        (1, 7, 1),
        (8, 11 * 1_000_003, 11),  # Divisors found up to the square root: fast.
    ],
)
def test_steps_per_execution_divides_the_epoch(requested, steps_per_epoch, expected):
    assert fitting.steps_per_execution(requested, steps_per_epoch) == expected
