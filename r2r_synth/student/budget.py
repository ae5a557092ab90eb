"""A wall-clock budget for training: `--max-minutes`.

On a CPU the question is rarely "how many epochs" but "what fits in half an hour". The Hugging Face
Trainer has step and epoch limits only; this callback stops it cleanly (the model is still saved)
at the end of the first optimizer step past the budget. The learning-rate schedule is planned for
the full `--epochs`/`--max-steps`, so a run that stops early ends before its rate has decayed to 0:
size the epochs to the budget when you can, and keep this as the guard.
"""

from __future__ import annotations

import time
from typing import Any


def time_budget(max_minutes: float, *, started: float | None = None) -> Any:
    """A `TrainerCallback` that ends training once `max_minutes` have passed since `started`
    (default: now). `stopped_at_step` is set on the callback when it fired."""
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def __init__(self) -> None:
            self.deadline = (started if started is not None else time.perf_counter()) + 60.0 * max_minutes
            self.stopped_at_step: int | None = None

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if time.perf_counter() >= self.deadline:
                control.should_training_stop = True
                self.stopped_at_step = state.global_step
            return control

    return TimeBudget()
