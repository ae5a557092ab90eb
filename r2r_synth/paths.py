"""The one rule for a local path that leaves the machine or outlives the session: in a recorded command
(a manifest's `command`), a dataset or model card, a published `r2r_config.json`.

An absolute path inside the current directory is written relative to it (`data/dl19.json`); any other
absolute path as `.../<its name>` (`/home/alice/data/scifact` -> `.../scifact`). Relative paths, Hub
ids (`org/model`) and URLs stay as written. So nothing quoted carries the folders of the machine
that ran it, and a path inside the project still says where it is.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import PurePath
from typing import Any

_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def _is_abs(value: str) -> bool:
    return value.startswith("/") or bool(_DRIVE.match(value))


def portable_path(value: str) -> str:
    """One path, by the rule above."""
    if not _is_abs(value):
        return value
    cwd = os.getcwd()
    if cwd not in ("", "/") and (value == cwd or value.startswith(cwd + os.sep)):
        return os.path.relpath(value, cwd)
    name = PurePath(value.replace("\\", "/")).name
    return f".../{name}" if name else value


def portable_arg(arg: str) -> str:
    """One word of a command line: a path, or the path of `--option=PATH`."""
    head, sep, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    return f"{head}{sep}{portable_path(value)}"


def portable_command(text: str) -> str:
    """`text` (a command line as written) with every absolute path in it, a word of its own or the
    value of `--opt=PATH`, made portable; the rest (quoting included) is left as it was."""
    try:
        words = shlex.split(text)
    except ValueError:  # an unbalanced quote: prose, not a command
        words = text.split()
    paths = {w.partition("=")[2] if w.startswith("--") else w for w in words}
    for path in sorted((p for p in paths if _is_abs(p)), key=len, reverse=True):
        text = text.replace(path, portable_path(path))
    return text


def portable(value: Any) -> Any:
    """`value` with the rule applied to every string in it that is an absolute path (or a command
    holding one), recursively through dicts and lists."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, str):
        return portable_path(value) if _is_abs(value) else portable_command(value) if " /" in value else value
    return value
