"""Tests for scripts/table_benchmark.py: what its table runs report."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
import table_benchmark  # noqa: E402


@pytest.mark.slow  # Trains (a few seconds, mostly tracing the step).
@pytest.mark.parametrize("jit_compile, resolved", [(None, True), (False, False)])
def test_reports_the_xla_keras_used(tmp_path, jit_compile, resolved):
    path = table_benchmark.generated_table(str(tmp_path), rows=100, columns=5)
    settings = {
        "batch_size": 32,
        "hidden_units": [8],
        "latent_dim": 2,
        "activation": "relu",
        "learning_rate": 1e-3,
        "epochs": 2,  # A steady epoch after the first.
        "seed": 0,
        "shuffle_buffer": 100,
        "mixed_precision": "float32",
        "jit_compile": jit_compile,  # None: `auto`, XLA for a table.
        "steps_per_execution": 16,
        "network": "mlp",
    }
    figures = table_benchmark.train_table(path, False, settings)
    assert figures["jit_compile"] is resolved  # As Keras resolved it.
    assert figures["train_examples_per_s"] > 0
