"""Progress in a log: when the console is not a terminal, `optimize` and `train` write their step at
once and again every interval while it runs (a model loading or training is otherwise silent), and
nothing else writes a bar or a spinner into the file."""

from __future__ import annotations

import io
import time

from rich.console import Console

from r2r_synth.cli.progress import Throttle, clock, heartbeat, interval_s


def _log_console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=False, width=80), buf


def test_heartbeat_writes_the_step_and_then_a_line_each_interval(monkeypatch):
    monkeypatch.setenv("R2R_PROGRESS_SECONDS", "0.05")
    console, buf = _log_console()
    with heartbeat(console, "train") as step:
        step("training the cross-encoder student: loading the corpus and the base model")
        time.sleep(0.3)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "train: training the cross-encoder student: loading the corpus and the base model"
    beats = [line for line in lines[1:] if line.endswith(" elapsed)")]
    assert len(beats) >= 3, lines
    assert beats[0].startswith("train: training the cross-encoder student") and "(0 s elapsed)" in beats[0]
    time.sleep(0.15)
    assert len(buf.getvalue().splitlines()) == len(lines)  # it stops with the block


def test_a_terminal_gets_a_spinner_not_lines():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=80)
    with heartbeat(console, "optimize") as step:
        step("direct: scoring the prompt program")
    out = buf.getvalue()
    assert "\x1b[?25l" in out and "elapsed)" not in out  # a live display (cursor hidden), no log lines


def test_throttle_and_clock(monkeypatch):
    seen: list[str] = []
    throttle = Throttle(seen.append, interval=60)
    throttle("first")
    throttle("dropped")
    throttle("last", force=True)
    assert seen == ["first", "last"]
    assert [clock(s) for s in (4.4, 65, 3725)] == ["4 s", "1m05s", "1h02m"]
    monkeypatch.setenv("R2R_PROGRESS_SECONDS", "not a number")
    assert interval_s() == 10.0


def test_evaluate_in_a_log_writes_lines_not_a_bar(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    sample = Path(__file__).resolve().parents[1] / "examples" / "sample_candidates.jsonl"
    res = subprocess.run(
        [sys.executable, "-m", "r2r_synth.cli", "evaluate", "-i", str(sample), "--system", "bm25",
         "--system", "run2=bm25", "--out", str(tmp_path / "ev")],
        check=False, capture_output=True, text=True, timeout=300,
        env={**os.environ, "R2R_PROGRESS_SECONDS": "0.05"})
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    assert any(line.startswith("evaluate: reading ") for line in lines)
    assert "evaluate: bm25: 1 query reranked" in lines and "evaluate: run2: 1 query reranked" in lines
    assert "\x1b[" not in res.stderr  # no bar or cursor codes in the file


def test_a_log_drops_the_bars_a_library_forces_on():
    import io

    from r2r_synth.cli.progress import NoRedraws

    buf = io.StringIO()
    err = NoRedraws(buf)
    for chunk in ("train: mining\n", "\rBatches:   0%|          | 0/2", "\rBatches: 100%|##########| 2/2", "\n",
                  "done\n", "\n", "WARNING x: a note\rwith a carriage return\n"):
        err.write(chunk)
    # The bar and the newline that ends it are gone; other lines, blank ones included, pass; a finished
    # line that redraws itself keeps what a terminal would show.
    assert buf.getvalue() == "train: mining\ndone\n\nwith a carriage return\n"
    assert err.isatty() is False and err.getvalue() == buf.getvalue()  # the rest is the stream's own
