"""`auto`'s timed trial: the executions a run's flags leave open, each timed on
the run's own model and training batches, and the fastest kept (`pick`).

`devices.fastest` is a rule by device kind and network, measured on the CPUs
here, and a CPU it was not measured on can differ: bfloat16 products ran at
half float32's rate on one AVX512-BF16 CPU here and 1.6x faster on another.
So `choose` times every open execution (`devices.candidates`) before a run
long enough to pay for it: one compiled call of `--steps_per_execution`
steps to compile, then `TIMED_CALLS` timed ones, each in a model of its own
(the run's starts from the same seed, untouched). Under several replicas
(where Keras compiles no XLA, and every worker must take the same) and for
a short run it keeps the rule; a resumed run keeps the execution it started
with (the run directory's execution.json), so it continues exactly.

Example:

    choice = choose(config, rule, recorded=None, network="mlp", replicas=1,
                    run_steps=23_400, steps_per_execution=18,
                    measure=time_one_execution)
    choice.execution, choice.seconds_per_step
"""

import dataclasses
import time
from collections.abc import Callable

import keras
from absl import logging

from tfvae import config as config_lib
from tfvae import devices

# Timed compiled calls per candidate, after the one that compiles.
TIMED_CALLS = 2
# A run shorter than this many times the trial's steps keeps the rule: the
# trial would cost more than a quarter of it.
RUN_OVER_TRIAL = 4
# The trial leaves the rule's execution for another only when that one is
# faster by more than this factor, and float32 for a 16-bit format likewise:
# closer than that, its noise cannot tell them apart, and a run that keeps the
# rule's choice reruns as one on another machine would.
SWITCH_MARGIN = 1.05


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


def pick(
    seconds: dict[devices.Execution, float], rule: devices.Execution
) -> devices.Execution:
    """Returns a trial's pick: the rule's execution unless another is faster by
    more than `SWITCH_MARGIN`; float32 ones are weighed before 16-bit ones,
    so a 16-bit format must beat float32's pick by that much too.

    Args:
        seconds: the trial's seconds per step by execution.
        rule: `devices.resolve`'s execution for the run.

    Example:
        >>> xla, plain = devices.Execution("float32", True), devices.Execution(
        ...     "float32", False)
        >>> pick({xla: 0.10, plain: 0.098}, rule=xla)  # Within the margin.
        Execution(mixed_precision='float32', jit_compile=True)
    """
    order = sorted(seconds, key=lambda e: (e != rule, e.mixed_precision != "float32"))
    chosen = order[0]
    for execution in order[1:]:
        if SWITCH_MARGIN * seconds[execution] < seconds[chosen]:
            chosen = execution
    return chosen


def choose(
    config: config_lib.Config,
    rule: devices.Execution,
    *,
    recorded: devices.Execution | None,
    network: str,
    replicas: int,
    run_steps: float,
    steps_per_execution: int,
    measure: Callable[[devices.Execution], float],
) -> Choice:
    """Returns the run's execution: as the flags give it, as a resumed run
    recorded it, by the rule, or by a timed trial.

    Args:
        config: the run's settings (`--mixed_precision`, `--jit_compile`).
        rule: `devices.resolve`'s execution for the run.
        recorded: the execution a resumed run started with
            (`run_dir.load_execution`), or None.
        network: the run's network (`devices.candidates`).
        replicas: the strategy's replicas in sync.
        run_steps: the run's training steps, every epoch's (`math.inf`:
            time the trial whatever the run's length).
        steps_per_execution: the steps of each compiled call.
        measure: an execution -> the seconds per step of the run's model in
            it (`seconds_per_step` on a model built and compiled in it).

    Returns:
        The `Choice`, logged with the trial's figures.
    """
    open_ = devices.candidates(
        config.mixed_precision, config.jit_compile, devices.device_kind(), network
    )
    if len(open_) == 1:
        return Choice(open_[0], "flags")
    if replicas > 1:
        # Every worker must take the same; Keras compiles no XLA here anyway.
        logging.info(
            "No timed trial under %d replicas: the rule's %s.", replicas, rule.name
        )
        return Choice(rule, "rule")
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
    trial_steps = len(open_) * (1 + TIMED_CALLS) * steps_per_execution
    if run_steps < RUN_OVER_TRIAL * trial_steps:
        logging.info(
            "No timed trial of %s: the run's %s steps are fewer than %dx the "
            "trial's %d; the rule's %s.",
            ", ".join(e.name for e in open_),
            run_steps,
            RUN_OVER_TRIAL,
            trial_steps,
            rule.name,
        )
        return Choice(rule, "rule")
    seconds = {}
    for execution in open_:
        seconds[execution] = measure(execution)
        logging.info(
            "Timed trial: %s, %.4f s per step.", execution.name, seconds[execution]
        )
    chosen = pick(seconds, rule)
    logging.info("The timed trial chose %s (the rule: %s).", chosen.name, rule.name)
    return Choice(
        chosen,
        "trial",
        {e.name: round(s, 6) for e, s in seconds.items()},
    )
