"""scripts/results.py: the results table, from the runs' metrics files."""

import json
import os
import sys

from tests.conftest import REPO, run_command


def _write(folder, metrics):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        json.dump(metrics, f)


def test_a_run_without_timing_is_shown_with_the_reason(tmp_path):
    # A rerun that trained no epoch wrote metrics.json without its timing.
    _write(tmp_path / "vae", {"epochs": 100, "test_neg_elbo": 94.8})
    _write(
        tmp_path / "vae" / "eval",
        {"test_neg_elbo": 94.79, "test_nll": 90.16, "num_importance_samples": 5000},
    )
    _write(tmp_path / "iwae", {"epochs": 100, "train_seconds": 624.0})
    _write(
        tmp_path / "iwae" / "eval",
        {"test_neg_elbo": 95.93, "test_nll": 88.44, "num_importance_samples": 5000},
    )
    result = run_command(
        [
            sys.executable,
            os.path.join(REPO, "scripts", "results.py"),
            f"--runs={tmp_path}",
            "--configs=vae,iwae",
        ],
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| `configs/vae.flags` | 100 | - | 94.79 | 90.16 |" in result.stdout
    assert "| `configs/iwae.flags` | 100 | 10.4 | 95.93 | 88.44 |" in result.stdout
    # How far each is from its published figure, on the same binarization.
    assert "IWAE k=5; 3280 epochs, batch 20) | +2.90 |" in result.stdout
    assert "holds none of train_seconds, seconds_per_epoch, first_epoch_s" in (
        result.stderr
    )
