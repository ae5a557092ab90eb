"""`r2r-synth` with every filesystem write of this process logged: what `tests/test_distributed.py` runs
under torchrun to see which rank wrote what.

Usage: `torchrun --nproc-per-node 2 tests/ddp_writes.py LOGDIR train ...`. A Python audit hook (PEP 578:
it observes, it changes nothing) notes every open for writing, rename, mkdir and removal; at exit the
process writes them to LOGDIR/writes-rank<RANK>.txt, one path a line.
"""

from __future__ import annotations

import atexit
import os
import sys

_WRITE_EVENTS = {"os.rename", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree", "os.symlink", "os.link"}
_writes: list[str] = []


def _hook(event: str, args: tuple) -> None:
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        if writing and isinstance(path, (str, bytes, os.PathLike)):
            _writes.append(f"{event} {os.fsdecode(path)}")
    elif event in _WRITE_EVENTS and args:
        _writes.append(f"{event} {' -> '.join(os.fsdecode(a) for a in args[:2] if isinstance(a, (str, bytes)))}")


def _dump(logdir: str) -> None:
    rank = os.environ.get("RANK", "0")
    lines = list(_writes)  # the dump's own open is appended after the copy
    with open(os.path.join(logdir, f"writes-rank{rank}.txt"), "w") as f:
        f.write("".join(line + "\n" for line in lines))


if __name__ == "__main__":
    logdir = sys.argv.pop(1)
    atexit.register(_dump, logdir)
    sys.addaudithook(_hook)
    from r2r_synth.cli import main

    sys.argv[0] = "r2r-synth"
    main()
