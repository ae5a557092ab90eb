"""A wall-clock budget for training: `--max-minutes`.

On a CPU the question is rarely "how many epochs" but "what fits in half an hour". The Hugging Face
Trainer has step and epoch limits only; this callback adds the clock, in two parts:

- **the schedule follows the clock**: the learning rate at each step is the Trainer's own schedule
  (warm-up, linear decay, ...) read at whichever is further along, the steps or the time, so a run
  the clock will cut short still warms up and decays to 0 by the deadline, instead of stopping at
  a high rate mid-schedule. Where the budget does not bind, the steps are further along and the
  schedule is exactly the Trainer's. Why: on one H100, cross-encoder runs the old clock-only stop
  cut at 16-35 % of their planned steps, the rate still at 72-94 % of its peak, ranked DL19 at
  0.43-0.59; one cut at 79 %, its rate down to 24 %, at 0.62 (one seed each; docs/benchmarks.md).
- **the stop**: training ends cleanly (the model is still saved) at the end of the first optimizer
  step past the deadline.

Under several processes (`torchrun`, `accelerate launch`) both decisions are rank 0's, sent to every
rank (`distributed.from_main`): ranks that read their own clocks could apply different rates or stop
at different steps, and a rank that stopped alone would leave the others waiting.

The logged `learning_rate` is the rate applied. Schedules that are not a `LambdaLR` (every
`--lr-scheduler-type` of transformers is one) keep their own rates; only the stop applies to them.
"""

from __future__ import annotations

import time
from typing import Any


def time_budget(max_minutes: float, *, started: float | None = None) -> Any:
    """A `TrainerCallback` that anneals the learning rate to the deadline and ends training once
    `max_minutes` have passed since `started` (default: now; time spent before training starts,
    e.g. mining, counts). `stopped_at_step` is set on the callback when it stopped the run, and
    `annealed_from_step` when the clock first ran ahead of the steps."""
    from transformers import TrainerCallback

    from r2r_synth.student.distributed import from_main

    class TimeBudget(TrainerCallback):
        def __init__(self) -> None:
            self.deadline = (started if started is not None else time.perf_counter()) + 60.0 * max_minutes
            self.train_began: float | None = None
            self.stopped_at_step: int | None = None
            self.annealed_from_step: int | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            self.train_began = time.perf_counter()
            return control

        def on_step_begin(self, args: Any, state: Any, control: Any, *, optimizer: Any = None,
                          lr_scheduler: Any = None, **kwargs: Any) -> Any:
            lr_scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate's wrapper, if any
            lambdas = getattr(lr_scheduler, "lr_lambdas", None)
            if optimizer is None or not lambdas or not state.max_steps:
                return control
            began = self.train_began if self.train_began is not None else time.perf_counter()
            window = self.deadline - began
            clock = from_main(1.0 if window <= 0 else (time.perf_counter() - began) / window)
            virtual = int(min(clock, 1.0) * state.max_steps)  # the step the clock has reached
            if virtual <= state.global_step:
                return control  # the steps are ahead: the Trainer's own schedule stands
            if self.annealed_from_step is None:
                self.annealed_from_step = state.global_step
            for group, base, fn in zip(optimizer.param_groups, lr_scheduler.base_lrs, lambdas):
                group["lr"] = base * fn(virtual)
            # what the Trainer logs as `learning_rate` (it reads the scheduler): the rate applied
            lr_scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
            return control

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if from_main(float(time.perf_counter() >= self.deadline)):
                control.should_training_stop = True
                self.stopped_at_step = state.global_step
            return control

    return TimeBudget()
