"""What a long command shows while it works, on a terminal and in a log.

On a terminal, rich draws a live bar or a spinner. When stderr is not a terminal (a log file, a
scheduler, `nohup`, `2>run.log`), rich draws nothing until the end, so a run looks hung: there, the
same state is written as plain lines instead, one every `R2R_PROGRESS_SECONDS` seconds (default 10)
and one at each change of step. A start-up line goes out before each slow step (reading a large
input, starting a model server, loading a model) in both cases.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape

DEFAULT_INTERVAL_S = 10.0

#: Columns a console assumes when its stream is not a terminal: wide enough that a table keeps its
#: natural width (rich would otherwise assume 80 and fold every long cell and message).
LOG_WIDTH = 1000


def make_console(*, stderr: bool) -> Console:
    """A console on stderr (messages, progress) or stdout (results). On a terminal it wraps at the
    terminal's width; on a pipe or in a log it never hard-wraps a line (a long message stays one
    line, so `grep` finds it) and tables keep their natural width."""
    import sys

    if (sys.stderr if stderr else sys.stdout).isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, soft_wrap=True, width=LOG_WIDTH)


class NoRedraws:
    """stderr for a log or a pipe: a write that redraws its line with a carriage return (a bar of tqdm,
    Hugging Face or sentence-transformers, some of which force their bars on) is dropped, and so is
    the newline that ends such a bar. Everything else passes unchanged; the command's own progress
    lines say where it is."""

    def __init__(self, stream: Any):
        self._stream = stream
        self._in_bar = False

    def write(self, text: str) -> int:
        if "\r" in text:
            head = text[: text.rfind("\n", 0, text.index("\r")) + 1]  # whole lines written before the redraw
            last = text[text.rindex("\r") + 1:]  # what a terminal would show in the end
            shown = head + (last if last.endswith("\n") else "")
            if shown:
                self._stream.write(shown)
            self._in_bar = not last.endswith("\n")  # a redraw: its line is not over yet
            return len(text)
        shown = text[1:] if self._in_bar and text.startswith("\n") else text
        self._in_bar = False
        if shown:
            self._stream.write(shown)
        return len(text)

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:  # flush, fileno, encoding, buffer, ...
        return getattr(self._stream, name)


def interval_s() -> float:
    """Seconds between progress lines in a log (`R2R_PROGRESS_SECONDS`, default 10)."""
    from r2r_synth.config import env

    raw = env("R2R_PROGRESS_SECONDS")
    try:
        return max(0.05, float(raw)) if raw else DEFAULT_INTERVAL_S
    except ValueError:
        return DEFAULT_INTERVAL_S


def clock(seconds: float) -> str:
    """``42 s``, ``3m05s``, ``1h02m``: elapsed or remaining time in a log line."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def say(console: Console, command: str, message: str) -> None:
    """One start-up or step line, ``command: message`` (on a terminal and in a log alike)."""
    console.print(f"[dim]{escape(command)}:[/] {escape(message)}", highlight=False, soft_wrap=True)


class Throttle:
    """Calls `emit(line)` at most once every `interval` seconds (and always for `force`)."""

    def __init__(self, emit: Callable[[str], None], *, interval: float | None = None):
        self.emit = emit
        self.interval = interval_s() if interval is None else interval
        self._last = 0.0

    def __call__(self, line: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            self.emit(line)


@contextmanager
def heartbeat(console: Console, command: str) -> Iterator[Callable[..., None]]:
    """A spinner on a terminal; in a log, a line at each step and ``command: step (elapsed)`` every
    interval while a step runs (a model loading or training gives no other sign of life). Yields
    `update(step, line=True)`: with `line=False` (a count within a step, e.g. training steps) a log
    shows the new state at its next interval rather than at once."""
    if console.is_terminal:
        with console.status(escape(command)) as status:
            yield lambda step, line=True: status.update(f"{escape(command)}: {escape(step)}")
        return
    state = {"step": "starting"}
    t0 = time.monotonic()
    stop = threading.Event()
    every = interval_s()

    def beat() -> None:
        while not stop.wait(every):
            say(console, command, f"{state['step']} ({clock(time.monotonic() - t0)} elapsed)")

    def update(step: str, line: bool = True) -> None:
        state["step"] = step
        if line:
            say(console, command, step)

    thread = threading.Thread(target=beat, name=f"{command}-heartbeat", daemon=True)
    thread.start()
    try:
        yield update
    finally:
        stop.set()
        thread.join(timeout=1.0)
