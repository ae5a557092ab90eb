"""One writer per run directory: an exclusive `flock` on `<run>/.lock`, held while a command writes.

The kernel releases the lock when its holder exits, however it exits (even on SIGKILL), so a lock
is never left stale (a file left by a killed holder says who held it last and locks nothing). A
second writer is refused at once (exit 2) with the holder's pid, host, command and start time,
instead of both appending every record twice. A holder removes the file as it lets go.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from r2r_synth.errors import InputError
from r2r_synth.schemas import utcnow

LOCK_FILE = ".lock"


class RunLock:
    """`with RunLock(run_dir, command=...):` — the exclusive writer's lock of `run_dir`."""

    def __init__(self, run_dir: Path | str, *, command: str = ""):
        self.path = Path(run_dir) / LOCK_FILE
        self.command = command
        self._fh: IO[str] | None = None

    def acquire(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fh = self.path.open("a+", encoding="utf-8")
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = _describe(fh.read())
                fh.close()
                raise InputError(
                    f"{self.path.parent} is being written by another r2r-synth process ({holder})",
                    hint="wait for it to finish (or stop it), or write to another --out; two writers would "
                         "ask and record every request twice",
                ) from None
            # The holder before us removes the file as it lets go: a lock on a removed file locks
            # nothing, so take it again on the file that is there now.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fh.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            fh.close()
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                             "since": utcnow().isoformat(timespec="seconds")}) + "\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self.path.unlink(missing_ok=True)  # while still held: see `acquire`
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _describe(text: str) -> str:
    try:
        info = json.loads(text)
    except ValueError:
        return "holder unknown"
    parts = [f"pid {info.get('pid')} on {info.get('host')}"]
    if info.get("command"):
        parts.append(f"`{info['command']}`")
    if info.get("since"):
        parts.append(f"since {info['since']}")
    return ", ".join(parts)
