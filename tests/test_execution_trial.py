"""Tests for tfvae.execution_trial: `auto`'s timed choice of an execution."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import tiny_config, tiny_vae
from tfvae import devices, errors, execution_trial, run_dir, training

XLA = devices.Execution("float32", True)
NO_XLA = devices.Execution("float32", False)
BF16 = devices.Execution("mixed_bfloat16", False)


def _choose(
    config,
    seconds,
    *,
    replicas=1,
    run_steps=10_000,
    rule=XLA,
    network="mlp",
    recorded=None,
):
    """`choose` with a stubbed measurement: `seconds` by execution."""
    timed = []

    def measure(execution):
        timed.append(execution)
        return seconds[execution]

    choice = execution_trial.choose(
        config,
        rule,
        recorded=recorded,
        network=network,
        replicas=replicas,
        run_steps=run_steps,
        steps_per_execution=4,
        measure=measure,
    )
    return choice, timed


@pytest.mark.parametrize("faster", [XLA, NO_XLA])
def test_the_trial_picks_the_faster_of_two_executions(tmp_path, monkeypatch, faster):
    monkeypatch.setattr(devices, "device_kind", lambda: "cpu")
    config = tiny_config(tmp_path, jit_compile=None)
    slower = NO_XLA if faster == XLA else XLA
    choice, timed = _choose(config, {faster: 0.01, slower: 0.03})
    assert choice.execution == faster
    assert choice.chosen_by == "trial"
    assert set(timed) == {XLA, NO_XLA}
    assert choice.seconds_per_step == {faster.name: 0.01, slower.name: 0.03}


def test_auto_precision_times_bfloat16_only_where_it_is_native_and_kept_quality(
    tmp_path, monkeypatch
):
    config = tiny_config(tmp_path, jit_compile=False, mixed_precision="auto")
    seconds = {NO_XLA: 0.03, BF16: 0.01}
    monkeypatch.setattr(devices, "device_kind", lambda: "cpu_bf16")
    assert _choose(config, seconds)[0].execution == BF16
    # Nothing left open on a CPU without bfloat16 products, nor for a
    # network that lost quality in bfloat16: no trial.
    for kind, network in (("cpu", "mlp"), ("cpu_bf16", "conv")):
        monkeypatch.setattr(devices, "device_kind", lambda kind=kind: kind)
        choice, timed = _choose(config, seconds, network=network)
        assert (choice.execution, choice.chosen_by, timed) == (NO_XLA, "flags", [])


@pytest.mark.parametrize(
    "seconds, chosen",
    [
        # Within SWITCH_MARGIN of the rule's (XLA): the rule's.
        ({XLA: 0.100, NO_XLA: 0.099}, XLA),
        ({XLA: 0.100, NO_XLA: 0.090}, NO_XLA),
        # A 16-bit format must beat float32's pick by the margin too.
        ({XLA: 0.100, NO_XLA: 0.090, BF16: 0.087}, NO_XLA),
        ({XLA: 0.100, NO_XLA: 0.090, BF16: 0.080}, BF16),
        ({XLA: 0.100, BF16: 0.090}, BF16),
    ],
)
def test_the_pick_leaves_the_rule_and_float32_only_by_the_margin(seconds, chosen):
    assert execution_trial.pick(seconds, rule=XLA) == chosen


def test_a_short_run_and_several_replicas_keep_the_rule(tmp_path, monkeypatch):
    monkeypatch.setattr(devices, "device_kind", lambda: "cpu")
    config = tiny_config(tmp_path, jit_compile=None)
    seconds = {XLA: 0.03, NO_XLA: 0.01}
    # Two candidates of 1 + TIMED_CALLS calls of 4 steps.
    trial_steps = 2 * (1 + execution_trial.TIMED_CALLS) * 4
    short = execution_trial.RUN_OVER_TRIAL * trial_steps - 1
    for kwargs in ({"run_steps": short}, {"replicas": 2}):
        choice, timed = _choose(config, seconds, **kwargs)
        assert (choice.execution, choice.chosen_by, timed) == (XLA, "rule", [])
    assert _choose(config, seconds, run_steps=short + 1)[0].chosen_by == "trial"


def test_a_resumed_run_keeps_its_recorded_execution(tmp_path, monkeypatch):
    monkeypatch.setattr(devices, "device_kind", lambda: "cpu_bf16")
    config = tiny_config(tmp_path, jit_compile=None, mixed_precision="auto")
    (tmp_path / "run").mkdir()
    run_dir.save_execution(
        execution_trial.Choice(BF16, "trial").record(), config.model_dir
    )
    recorded = run_dir.load_execution(config.model_dir)
    choice, timed = _choose(config, {}, recorded=recorded)
    assert (choice.execution, choice.chosen_by, timed) == (BF16, "recorded", [])
    # An explicit --jit_compile on resume wins over the recorded one.
    config = tiny_config(tmp_path, jit_compile=True, mixed_precision="auto")
    choice = _choose(config, {}, recorded=recorded)[0]
    assert choice.execution == devices.Execution("mixed_bfloat16", True)


@pytest.mark.parametrize("text", ["{not json", '{"mixed_precision": "float8"}'])
def test_a_damaged_execution_record_is_refused_naming_the_fix(tmp_path, text):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / run_dir.EXECUTION).write_text(text)
    with pytest.raises(errors.UsageError, match="execution.json .*Delete it"):
        run_dir.load_execution(str(tmp_path / "run"))


def test_seconds_per_step_times_the_calls_after_the_compiling_one(tmp_path):
    vae = tiny_vae(tmp_path)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3), steps_per_execution=2)
    images = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 1), np.uint8)
    batches = tf.data.Dataset.from_tensor_slices(images).batch(4).repeat()
    # Each call's end, by a fake clock: the first (compiling) call ends at
    # 100 s, the timed ones 3 s and 5 s later.
    ends = iter([100.0, 103.0, 108.0])
    seconds = execution_trial.seconds_per_step(vae, batches, 2, timer=ends.__next__)
    assert seconds == pytest.approx(8.0 / (execution_trial.TIMED_CALLS * 2))


@pytest.mark.slow
def test_a_run_times_its_executions_and_trains_as_the_chosen_one(tmp_path, monkeypatch):
    monkeypatch.setattr(devices, "device_kind", lambda: "cpu")
    monkeypatch.setattr(execution_trial, "RUN_OVER_TRIAL", 0)
    # The trial really trains and times both; a stub clock would hide that.
    timed = tiny_config(tmp_path / "a", jit_compile=None, epochs=1)
    metrics = training.train_and_evaluate(timed)
    record = json.loads((tmp_path / "a" / "run" / run_dir.EXECUTION).read_text())
    assert record == metrics["execution"]
    assert record["chosen_by"] == "trial"
    seconds = record["seconds_per_step"]
    assert set(seconds) == {XLA.name, NO_XLA.name}
    assert all(s > 0 for s in seconds.values())
    chosen = devices.Execution("float32", record["jit_compile"])
    timed_by = {XLA.name: XLA, NO_XLA.name: NO_XLA}
    assert chosen == execution_trial.pick(
        {timed_by[name]: s for name, s in seconds.items()},
        rule=devices.fastest("cpu", timed.network),
    )
    # The trial leaves no trace: the run trains as one given that execution.
    given = tiny_config(tmp_path / "b", jit_compile=chosen.jit_compile, epochs=1)
    assert training.train_and_evaluate(given)["test_neg_elbo"] == pytest.approx(
        metrics["test_neg_elbo"], rel=1e-6
    )
