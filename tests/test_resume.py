"""Claiming a run directory (its lock) and resuming it; backups are tested
in test_reliability.py and test_training.py."""

import fcntl
import os
import socket
import subprocess
import sys

import pytest

from tests.conftest import REPO, tiny_config
from tfvae import errors, history, iwae, resume, run_dir, training

# Claims the run directory of tiny_config(root), says so, then holds it
# until its stdin closes.
_HOLDER = """
import pathlib, sys
from tests.conftest import tiny_config
from tfvae import resume
resume.claim(tiny_config(pathlib.Path(sys.argv[1])))
print("claimed", flush=True)
sys.stdin.read()
"""


def test_a_second_training_in_the_same_folder_is_refused_naming_the_first(tmp_path):
    config = tiny_config(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout.readline().strip() == "claimed"
        before = sorted(os.listdir(config.model_dir))
        with pytest.raises(
            errors.UsageError,
            match=rf"--model_dir=.* is in use: another training runs in it \(pid "
            rf"{holder.pid} on host {socket.gethostname()}\)",
        ):
            resume.claim(config)
        assert sorted(os.listdir(config.model_dir)) == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    # Its process ended: the folder is free again.
    resume.claim(config)
    resume.release(config.model_dir)


def test_the_lock_of_a_dead_process_does_not_block(tmp_path):
    config = tiny_config(tmp_path)
    os.makedirs(config.model_dir)
    lock = run_dir.path(config.model_dir, run_dir.LOCK)
    with open(lock, "w") as f:
        f.write("pid 999999 on host gone\n")
    resume.claim(config)
    try:
        with open(lock) as f:
            assert f.read() == f"pid {os.getpid()} on host {socket.gethostname()}\n"
        assert os.path.exists(run_dir.path(config.model_dir, run_dir.CONFIG))
    finally:
        resume.release(config.model_dir)
    # Released: another open file description may take it.
    with open(lock) as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_refused_claim_leaves_the_folder_as_it_was(tmp_path):
    config = tiny_config(tmp_path)
    os.makedirs(config.model_dir)
    with open(os.path.join(config.model_dir, "notes.txt"), "w") as f:
        f.write("mine")
    with pytest.raises(errors.UsageError, match="is not empty and holds no"):
        resume.claim(config)
    assert os.listdir(config.model_dir) == ["notes.txt"]
    # A new folder that cannot be claimed is not left behind either.
    config = tiny_config(tmp_path / "other", export=True)
    os.makedirs(os.path.dirname(config.export_base), exist_ok=True)
    with open(config.export_base, "w") as f:
        f.write("a file")
    with pytest.raises(errors.UsageError, match="is a file"):
        resume.claim(config)
    assert not os.path.exists(config.model_dir)


def test_a_kill_during_the_iwae_pass_keeps_its_row(tmp_path, monkeypatch):
    """The IWAE pass runs before the epoch's backup: a kill during it leaves an
    epoch to train again, with its row, never a backed-up epoch without one."""
    config = tiny_config(tmp_path, iwae_every_epochs=1)
    evaluate_batches = iwae.evaluate_batches

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # As Ctrl-C during epoch 1's IWAE pass.

    monkeypatch.setattr(iwae, "evaluate_batches", killed)
    with pytest.raises(KeyboardInterrupt):
        training.train_and_evaluate(config)
    monkeypatch.setattr(iwae, "evaluate_batches", evaluate_batches)
    training.train_and_evaluate(config)
    assert sorted(history.read_iwae_history(config.model_dir)) == [1, 2]
    assert sorted(history.read_history_rows(config.model_dir)) == [1, 2]
