"""`r2r-synth COMMAND --help` for every command reads at 80 columns: no line longer, nothing cut with
"…", no Python type where a metavar belongs, defaults shown; the real console script, in a subprocess,
the way a user (or a log) sees it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("r2r-synth")


def _commands() -> list[str]:
    import typer.main

    from r2r_synth.cli import app

    return list(typer.main.get_command(app).commands)


def _help(*args: str, columns: int = 80) -> str:
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "dumb"}
    env.pop("FORCE_COLOR", None)
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "r2r_synth.cli"]
    proc = subprocess.run([*cmd, *args, "--help"], capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


#: What typer's rich help printed before: Python types for values and flags.
PYTHON_TYPES = re.compile(r"<(bool|str|int|float|path|file|dir|list\[[^\]]*\]|int range|float range)>")


def test_every_command_help_fits_80_columns():
    commands = _commands()
    assert {"generate", "merge", "optimize", "train", "evaluate"} <= set(commands)
    problems = []
    for name in ["", *commands]:
        text = _help(*([name] if name else []))
        for i, line in enumerate(text.splitlines(), start=1):
            where = f"{name or 'r2r-synth'} --help line {i}: {line!r}"
            if len(line) > 80:
                problems.append(f"{where} is {len(line)} columns")
            if "…" in line:
                problems.append(f"{where} is cut with '…'")
            if PYTHON_TYPES.search(line):
                problems.append(f"{where} shows a Python type")
    assert not problems, "\n".join(problems)


def test_long_flags_and_ids_are_whole_and_metavars_short():
    text = _help("generate")
    assert re.search(r"^  --max-pairs-per-query N\s", text, re.MULTILINE)
    assert "irds:msmarco-passage/trec-dl-2019/judged" in text  # wrapped at spaces, never inside a word
    assert re.search(r"^  --dry-run\s+Estimate", text, re.MULTILINE)  # a flag takes no metavar
    assert re.search(r"^  -t, --teacher MODEL\s", text, re.MULTILINE)
    assert "--pairs [adjacent|gold|topk|none]" in text and "[default: 10; x>=1]" in " ".join(text.split())
    merge = _help("merge")
    assert re.search(r"^  RUN_DIRS\.\.\.\s+Run directories", merge, re.MULTILINE)
    assert "{OUT} {RUN_DIRS}..." in merge


def test_the_command_list_is_not_cut():
    text = _help()
    flat = " ".join(text.split())
    assert "merge Merge run directories (e.g. shards) into one corpus" in flat


@pytest.mark.parametrize("columns", [60, 200])
def test_help_follows_the_terminal_up_to_80_columns(columns):
    # Only a word longer than the column itself (an id) may pass the edge: it is never cut.
    over = [line for line in _help("generate", columns=columns).splitlines() if len(line) > min(columns, 80)]
    assert all(len(line.split()) == 1 for line in over), over
