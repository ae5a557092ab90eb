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
    assert re.search(r"^  -t, --teacher MODEL\s", text, re.MULTILINE) and re.search(r"^  --shard I/N\s", text, re.MULTILINE)
    assert "--pairs [adjacent|gold|topk|none]" in text and "[default: 10; x>=1]" in " ".join(text.split())
    merge = _help("merge")
    assert re.search(r"^  RUN_DIRS\.\.\.\s+Run directories", merge, re.MULTILINE)
    assert "{OUT} {RUN_DIRS}..." in merge


def _entry(text: str, flag: str) -> str:
    """The help of one option: its line and the indented lines under it, joined."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^  (-\w, )?{re.escape(flag)}\b", line))
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^  \S", lines[i])), len(lines))
    return " ".join(" ".join(lines[start:end]).split())


def test_train_help_shows_its_defaults():
    text = _help("train")
    for flag, shown in (("--holdout", "[default: 0.2"), ("--seed", "[default: 42]"), ("--labels", "[default: teacher]")):
        assert shown in _entry(text, flag), flag
    # the epochs a held-out share chooses among, and without one (TrainConfig's HELDOUT_EPOCHS / EPOCHS_WITHOUT_HELDOUT)
    assert "(default 3; 1 with nothing held out)" in _entry(text, "--epochs")
    # knobs left to the student kind say what they become, in the help text (the reference shows it too)
    assert "(default 32 bi-encoder, 1 cross-encoder, 1 reasoning)" in _entry(text, "--batch-size")
    for flag in ("--lr", "--max-length", "--hard-negatives", "--temperature", "--negatives", "--max-steps",
                 "--device", "--lora", "--depth"):
        assert re.search(r"[(;] ?default[: ]", _entry(text, flag)), _entry(text, flag)
    assert "[default: no-lora]" not in _entry(text, "--lora")


def test_the_command_list_is_not_cut():
    text = _help()
    flat = " ".join(text.split())
    assert "merge Merge run directories (e.g. shards) into one corpus" in flat


@pytest.mark.parametrize("columns", [60, 200])
def test_help_follows_the_terminal_up_to_80_columns(columns):
    # Only a word longer than the column itself (an id) may pass the edge: it is never cut.
    over = [line for line in _help("generate", columns=columns).splitlines() if len(line) > min(columns, 80)]
    assert all(len(line.split()) == 1 for line in over), over


def test_train_defaults_in_the_help_are_the_students_own():
    """`train --help` states what each unset knob becomes, read from the option models in
    `r2r_synth.config` that the students resolve them with: the help cannot drift from the code."""
    from r2r_synth.cli.student import _SHOWN, _by_student
    from r2r_synth.config import BiEncoderOptions, CrossEncoderOptions, ReasoningOptions

    assert _by_student("batch_size") == (f"{BiEncoderOptions.model_fields['batch_size'].default:g} bi-encoder, "
                                         f"{CrossEncoderOptions.model_fields['batch_size'].default:g} cross-encoder, "
                                         f"{ReasoningOptions.model_fields['batch_size'].default:g} reasoning")
    assert "192 reasoning" in _by_student("max_length")  # the reasoning student's max_doc_tokens
    models = {"bi-encoder": BiEncoderOptions, "cross-encoder": CrossEncoderOptions, "reasoning": ReasoningOptions}
    for knob, kinds in _SHOWN.items():
        for kind in kinds:
            name = "max_doc_tokens" if (kind, knob) == ("reasoning", "max_length") else knob
            assert f"{models[kind].model_fields[name].default:g} {kind}" in _by_student(knob), (knob, kind)