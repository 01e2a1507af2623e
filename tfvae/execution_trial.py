"""`auto`'s timed trial: the executions a run's flags leave open, each timed on
the run's own model and training batches, and the fastest kept.

`devices.fastest` is a rule by device kind and network, measured on the CPUs
here, and a CPU it was not measured on can differ: bfloat16 products ran at
half float32's rate on one AVX512-BF16 CPU here and 1.6x faster on another.
So `choose` times every open execution (`devices.candidates`) before a run
long enough to pay for it: one compiled call of `--steps_per_execution`
steps to compile, then `TIMED_CALLS` timed ones. It keeps the rule when
nothing is open, under several replicas (where Keras does not compile with
XLA) and for a short run; a resumed run keeps the execution it started with
(recorded in the run directory's execution.json), so it continues exactly.

Example:

    choice = choose(config, rule, network="mlp", replicas=1, run_steps=23_400,
                    steps_per_execution=13, measure=time_one_execution)
    choice.execution, choice.seconds_per_step
"""

import dataclasses
import time
from collections.abc import Callable

import keras
from absl import logging

from tfvae import config as config_lib
from tfvae import devices, run_dir

# Timed compiled calls per candidate, after the one that compiles.
TIMED_CALLS = 2
# A run shorter than this many times the trial's steps keeps the rule: the
# trial would cost more than a quarter of it.
RUN_OVER_TRIAL = 4
# A 16-bit format is kept only when it beats float32's fastest by more than
# this factor: closer than that, the trial's noise cannot tell them apart,
# and float32 is the more exact.
SIXTEEN_BIT_MARGIN = 1.05


@dataclasses.dataclass(frozen=True)
class Choice:
    """A run's execution and how it was chosen.

    Args:
        execution: the number format and compiler the run uses.
        chosen_by: "flags" (nothing left open), "recorded" (a resumed run's),
            "rule" (`devices.fastest`) or "trial".
        seconds_per_step: the trial's figures by `Execution.name`; empty
            without a trial.
    """

    execution: devices.Execution
    chosen_by: str
    seconds_per_step: dict[str, float] = dataclasses.field(default_factory=dict)

    def record(self) -> dict:
        """Returns the choice as execution.json (`run_dir.save_execution`) and
        metrics.json hold it."""
        return {
            "mixed_precision": self.execution.mixed_precision,
            "jit_compile": self.execution.jit_compile,
            "chosen_by": self.chosen_by,
            "seconds_per_step": self.seconds_per_step,
        }


class _CallEnds(keras.callbacks.Callback):
    """Notes the time at the end of every compiled call (Keras calls
    `on_train_batch_end` once per call of `steps_per_execution` steps)."""

    def __init__(self, timer: Callable[[], float]):
        super().__init__()
        self._timer = timer
        self.times = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(self._timer())


def seconds_per_step(
    vae: keras.Model,
    batches,
    steps_per_execution: int,
    timer: Callable[[], float] = time.perf_counter,
) -> float:
    """Trains a compiled `vae` for 1 + `TIMED_CALLS` calls; returns the timed calls'
    seconds per step.

    Args:
        vae: a compiled model to spend: its weights change.
        batches: an endless training stream it takes.
        steps_per_execution: the steps of each compiled call, as compiled.
        timer: returns the time in seconds.

    Returns:
        The seconds per step from the end of the first call, which compiles,
        to the end of the last.
    """
    ends = _CallEnds(timer)
    vae.fit(
        batches,
        steps_per_epoch=(1 + TIMED_CALLS) * steps_per_execution,
        epochs=1,
        verbose=0,
        callbacks=[ends],
    )
    return (ends.times[-1] - ends.times[0]) / (TIMED_CALLS * steps_per_execution)


def fastest(seconds: dict[devices.Execution, float]) -> devices.Execution:
    """Returns the fastest execution of a trial, float32 unless a 16-bit one
    beats float32's fastest by more than `SIXTEEN_BIT_MARGIN`.

    Example:
        >>> fastest({devices.Execution("float32", True): 0.10,
        ...          devices.Execution("mixed_bfloat16", False): 0.098})
        Execution(mixed_precision='float32', jit_compile=True)
    """
    best = min(seconds, key=seconds.get)
    exact = {e: s for e, s in seconds.items() if e.mixed_precision == "float32"}
    if best.mixed_precision != "float32" and exact:
        best_exact = min(exact, key=exact.get)
        if exact[best_exact] <= SIXTEEN_BIT_MARGIN * seconds[best]:
            return best_exact
    return best


def choose(
    config: config_lib.Config,
    rule: devices.Execution,
    *,
    network: str,
    replicas: int,
    run_steps: int,
    steps_per_execution: int,
    measure: Callable[[devices.Execution], float],
) -> Choice:
    """Returns the run's execution: as the flags give it, as a resumed run
    recorded it, by the rule, or by a timed trial.

    Args:
        config: the run's settings (`--mixed_precision`, `--jit_compile`,
            `--model_dir`).
        rule: `devices.resolve`'s execution for the run.
        network: the run's network (`devices.candidates`).
        replicas: the strategy's replicas in sync.
        run_steps: the run's training steps, every epoch's.
        steps_per_execution: the steps of each compiled call.
        measure: an execution -> the seconds per step of the run's model in
            it (`seconds_per_step` on a model built and compiled in it).

    Returns:
        The `Choice`, logged with the trial's figures.
    """
    open_ = devices.candidates(
        config.mixed_precision, config.jit_compile, devices.device_kind(), network
    )
    recorded = run_dir.load_execution(config.model_dir)
    trial_steps = len(open_) * (1 + TIMED_CALLS) * steps_per_execution
    if len(open_) == 1:
        return Choice(open_[0], "flags")
    if recorded is not None:
        # Only what the flags left open: an explicit --jit_compile on resume wins.
        return Choice(
            devices.Execution(
                recorded.mixed_precision
                if config.mixed_precision == "auto"
                else config.mixed_precision,
                recorded.jit_compile
                if config.jit_compile is None
                else config.jit_compile,
            ),
            "recorded",
        )
    if replicas > 1 or run_steps < RUN_OVER_TRIAL * trial_steps:
        logging.info(
            "No timed trial of %s: %s; the rule's %s.",
            ", ".join(e.name for e in open_),
            f"{replicas} replicas"
            if replicas > 1
            else f"the run's {run_steps} steps are fewer than {RUN_OVER_TRIAL}x "
            f"the trial's {trial_steps}",
            rule.name,
        )
        return Choice(rule, "rule")
    seconds = {}
    for execution in open_:
        seconds[execution] = measure(execution)
        logging.info(
            "Timed trial: %s, %.4f s per step.", execution.name, seconds[execution]
        )
    chosen = fastest(seconds)
    logging.info("The timed trial chose %s (the rule: %s).", chosen.name, rule.name)
    return Choice(
        chosen,
        "trial",
        {e.name: round(s, 6) for e, s in seconds.items()},
    )
