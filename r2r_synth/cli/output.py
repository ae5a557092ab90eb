"""`--json`: what a command did, as one JSON object on stdout, for scripts.

A command that reports takes the shared `--json` option (`options.JsonOpt`), is decorated with
`@reports`, and returns its summary (the library call's result object, or a dict built from it).
Without `--json` the return value is dropped and the command prints as it always does. With it,
everything the command would print on stdout (tables, the run directory, a third-party library's
notes) goes to stderr instead, and stdout gets exactly one JSON object, so
`r2r-synth evaluate ... --json | jq .systems` works and the human text still reaches a log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import sys
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TextIO

#: The real stdout while a `@reports` command runs with `--json` (its `sys.stdout` is stderr then).
_stdout: ContextVar[TextIO | None] = ContextVar("r2r_synth_json_stdout", default=None)


def jsonable(obj: Any) -> Any:
    """`obj` as plain JSON values: pydantic models by `model_dump(mode="json")`, dataclasses field by
    field, paths as strings, NaN and infinities as null (JSON has none)."""
    if hasattr(obj, "model_dump"):
        return jsonable(obj.model_dump(mode="json"))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "value") and isinstance(obj.value, str):  # an Enum
        return obj.value
    return str(obj)


def emit_json(summary: Any) -> None:
    """Print `summary` on stdout as one JSON object (indented). A command calls it itself only when it
    stops with an error but has a summary to give (`generate` exiting 3 at the budget, 5 while a
    batch runs); otherwise `@reports` prints what the command returns."""
    obj = jsonable(summary)
    if not isinstance(obj, dict):
        obj = {"result": obj}
    out = _stdout.get() or sys.stdout
    out.write(json.dumps(obj, ensure_ascii=False, indent=2, allow_nan=False) + "\n")
    out.flush()


def reports(command: Callable[..., Any]) -> Callable[..., None]:
    """Decorate a command that takes `json_out` (the `--json` option) and returns its summary: with
    `--json`, its stdout goes to stderr while it runs and the summary is printed as one JSON object."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        if not kwargs.get("json_out"):
            command(*args, **kwargs)
            return
        # What the command (or a library it calls) writes on stdout is for people: send it to stderr so
        # stdout holds the JSON object alone.
        token = _stdout.set(sys.stdout)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                summary = command(*args, **kwargs)
            emit_json(summary)
        finally:
            _stdout.reset(token)

    return run
