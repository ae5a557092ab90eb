"""Where a `train` run is, for whoever listens: its phases (reading the corpus, loading the base,
mining negatives, each epoch with its steps, saving), so a log of a long run names what it is doing.

Library code does not print: a phase goes to `logging` (INFO) and to the listener a caller installs
with `listening` (the CLI's heartbeat). `trainer_callback()` reports a Hugging Face Trainer's epochs
and steps the same way.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

log = logging.getLogger(__name__)

#: Called as `listener(message, minor=...)`: `minor` for a step count within a phase (a terminal shows
#: it at once, a log at its next heartbeat), not minor for a new phase (a log line at once).
Listener = Callable[..., None]

_listener: ContextVar[Listener | None] = ContextVar("r2r_synth_train_listener", default=None)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Send the phases of the training run inside the block to `listener`."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def phase(message: str, *, minor: bool = False) -> None:
    """Report that training is now at `message` (e.g. ``mining hard negatives``)."""
    (log.debug if minor else log.info)("%s", message)
    listener = _listener.get()
    if listener is not None:
        listener(message, minor=minor)


def trainer_callback(label: str = "") -> Any:
    """A `transformers.TrainerCallback` that reports ``[label: ]epoch i/N, step s/S`` at each epoch's
    start (a phase) and after each step (minor)."""
    from transformers import TrainerCallback

    prefix = f"{label}: " if label else ""

    def where(args: Any, state: Any, epoch: int) -> str:
        epochs = max(1, math.ceil(state.num_train_epochs or args.num_train_epochs or 1))
        return f"{prefix}epoch {min(max(epoch, 1), epochs)}/{epochs}, step {state.global_step}/{state.max_steps}"

    class Steps(TrainerCallback):
        # `state.epoch` is the epochs done, fractional within one: 0 as the first begins, 0.5 halfway.
        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            phase(where(args, state, math.floor(state.epoch or 0) + 1))

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            phase(where(args, state, math.ceil(state.epoch or 0)), minor=True)

    return Steps()
