"""JSONL reading and crash-safe appending.

`read_jsonl(path, Model)` validates every line and raises `InputError("path:17: not a valid
DirectRecord: ...")` on the first bad one; `JsonlAppender` appends a line and flushes it at once,
so a killed run loses at most the line being written (and `read_jsonl(..., tolerate_torn_tail=True)`
ignores such a torn last line on resume).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Self, TypeVar

from pydantic import BaseModel, ValidationError

from r2r_synth.errors import InputError
from r2r_synth.io.text import iter_lines

M = TypeVar("M", bound=BaseModel)


def describe_validation(err: ValidationError) -> str:
    """The first three errors of a pydantic ValidationError as `field: message; ...`."""
    parts = []
    for e in err.errors()[:3]:
        loc = ".".join(str(x) for x in e["loc"]) or "(row)"
        parts.append(f"{loc}: {e['msg']}")
    more = f" (and {err.error_count() - 3} more)" if err.error_count() > 3 else ""
    return "; ".join(parts) + more


def parse_json(text: str, *, path: Path | str, line: int = 1, hint: str) -> Any:
    """`json.loads(text)`, where `text` starts on `line` of `path`; malformed JSON (or JSON nested
    too deeply for Python's parser) is an InputError naming `path:line` and `hint`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        # Some of json's messages end in "at" already ("Unterminated string starting at").
        where = "column" if e.msg.endswith(" at") else "at column"
        raise InputError(f"{path}:{line + e.lineno - 1}: not valid JSON ({e.msg} {where} {e.colno})",
                         hint=hint) from None
    except RecursionError:
        raise InputError(f"{path}:{line}: JSON nested too deeply to read", hint=hint) from None


def iter_json_lines(path: Path | str, *, tolerate_torn_tail: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield (line_number, object) for each non-blank line (`.gz` files are gunzipped); a line that
    is not a JSON object, or not UTF-8, is an InputError naming `path:line`. With `tolerate_torn_tail`,
    an unparseable *last* line without a trailing newline (a write cut short by a crash) is skipped."""
    for i, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            # Without its newline, an error at the end of the line is reported on this line, not the next.
            obj = parse_json(line.rstrip("\n"), path=path, line=i,
                             hint="each line must be one JSON object; fix or remove that line")
        except InputError:
            # Only the last line can lack its newline.
            if tolerate_torn_tail and not line.endswith("\n"):
                return
            raise
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}",
                             hint="each line must be one JSON object")
        yield i, obj


def iter_json_rows(path: Path | str) -> Iterator[tuple[int, dict | None, str | None]]:
    """Yield (line_number, object, None) for each non-blank line that is a JSON object and
    (line_number, None, reason) for one that is not (torn, not JSON, not an object): a reader that
    rejects bad rows one by one (`import`) rather than refusing the file. The reason is one line,
    `path:line: ...`. A file that is not UTF-8 text is still an InputError."""
    for i, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = parse_json(line.rstrip("\n"), path=path, line=i, hint="")
        except InputError as e:
            yield i, None, e.message
            continue
        if not isinstance(obj, dict):
            yield i, None, f"{path}:{i}: expected a JSON object, got {type(obj).__name__}"
            continue
        yield i, obj, None


def read_jsonl(path: Path | str, model: type[M], *, tolerate_torn_tail: bool = False) -> Iterator[M]:
    """Yield validated `model` instances; the first invalid line raises InputError with `path:line`."""
    for i, obj in iter_json_lines(path, tolerate_torn_tail=tolerate_torn_tail):
        try:
            yield model.model_validate(obj)
        except ValidationError as e:
            raise InputError(
                f"{path}:{i}: not a valid {model.__name__} record: {describe_validation(e)}",
                hint=f"see `r2r-synth schema` for the fields a {model.__name__} takes",
            ) from None


def dump_line(record: BaseModel) -> str:
    return record.model_dump_json(exclude_none=False) + "\n"


def truncate_torn_tail(path: Path) -> None:
    """A crash can leave a last line without its newline: a record cut short, never a finished one
    (finished lines are flushed whole). Cut it off so appending keeps the file parseable; its request
    is not done, so a resumed run asks it again."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as fh:
        data = fh.read()
        if data.endswith(b"\n"):
            return
        fh.truncate(data.rfind(b"\n") + 1)


class JsonlAppender:
    """Append records to a JSONL file, one flushed line each (crash-safe, resumable)."""

    def __init__(self, path: Path | str, *, fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        truncate_torn_tail(self.path)
        self._fh: IO[str] = self.path.open("a", encoding="utf-8")

    def write(self, record: BaseModel) -> None:
        self._fh.write(dump_line(record))
        self._fh.flush()
        if self._fsync:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
