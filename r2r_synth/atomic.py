"""Atomic writes, and checks of where a command will write: a reader (or a crash) never sees half a
file, and a bad `--out` is an error before anything is asked or written. Every JSON, text or JSONL
file r2r-synth writes whole (run directories, model directories, reports, programs, TREC runs)
goes through here; records appended one at a time go through `r2r_synth.io.jsonl.JsonlAppender`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel

from r2r_synth.config import scrub
from r2r_synth.errors import InputError


def check_dir_target(path: Path | str, *, what: str = "--out") -> Path:
    """`path` as a directory to write into: fine when it is a directory or does not exist yet; an
    `InputError` (exit 2) when it, or a folder above it, is a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} exists and is not a directory",
                         hint=f"give {what} a directory (new or existing), not a file")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise InputError(f"{what} {path}: {parent} is a file, not a directory",
                             hint=f"choose a {what} whose parent folders are directories")
    return path


def check_file_target(path: Path | str, *, what: str) -> Path:
    """`path` as a file to write: an `InputError` when it is a directory or a folder above it is a file."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path} is a directory", hint=f"give {what} a file path")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise InputError(f"{what} {path}: {parent} is a file, not a directory",
                             hint=f"give {what} a file path whose folders are directories")
    return path


@contextmanager
def atomic_open(path: Path | str) -> Iterator[IO[str]]:
    """A text file to write `path` through: it appears (replacing any old one) only when the block
    ends without an exception; a failure leaves nothing behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path | str, text: str, *, mask: bool = True) -> Path:
    """Write `text` to `path` atomically. With `mask` (the default), every known secret in it
    becomes ``***`` first."""
    with atomic_open(path) as fh:
        fh.write(scrub(text) if mask else text)
    return Path(path)


def write_json_atomic(path: Path | str, obj: Any, *, mask: bool = True) -> Path:
    """`obj` as indented JSON (`default=str`, so paths and datetimes serialize), atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", mask=mask)


class _LineWriter:
    def __init__(self, fh: IO[str]):
        self._fh = fh
        self.count = 0

    def write(self, record: BaseModel) -> None:
        self._fh.write(record.model_dump_json() + "\n")
        self.count += 1


@contextmanager
def atomic_jsonl(path: Path | str) -> Iterator[_LineWriter]:
    """Write records to `path` as JSONL, atomically (see `atomic_open`)."""
    with atomic_open(path) as fh:
        yield _LineWriter(fh)


def write_jsonl_atomic(path: Path | str, records: Iterable[BaseModel]) -> int:
    """All `records` to `path` at once, atomically; returns how many."""
    with atomic_jsonl(path) as w:
        for r in records:
            w.write(r)
    return w.count
