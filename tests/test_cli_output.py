"""What the command line prints for people and for logs: `--version`, global options after the command,
no hard wrapping when stderr is a pipe, evaluate's final counts, `generate` refusing a user's folder,
words that agree with their counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from run_factory import make_run

from r2r_synth import __version__
from r2r_synth.errors import InputError
from r2r_synth.io.jsonl import parse_json
from r2r_synth.plural import plural
from r2r_synth.schemas import Candidates, Document, Query


def cli(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The command in a subprocess, stdout and stderr apart, decoded as written (text mode would turn
    a progress bar's carriage return into a newline)."""
    # A generous timeout: LiteLLM and torch imports take a while on a loaded, shared 2-core machine.
    res = subprocess.run([sys.executable, "-m", "r2r_synth.cli", *map(str, args)], check=False,
                         capture_output=True, timeout=900, env={**os.environ, **(env or {})})
    return subprocess.CompletedProcess(res.args, res.returncode, res.stdout.decode(), res.stderr.decode())


def test_version():
    res = cli("--version")
    assert res.returncode == 0 and res.stdout == f"r2r-synth {__version__}\n"


def test_verbose_works_before_and_after_the_command(tmp_path):
    run = make_run(tmp_path / "run", queries=3, docs=3)
    quiet = cli("report", run, "-o", tmp_path / "r0")
    assert quiet.returncode == 0, quiet.stderr
    assert "INFO r2r_synth.report.page: wrote" not in quiet.stderr
    for args in (("-v", "report", run, "-o", tmp_path / "r1"), ("report", run, "-o", tmp_path / "r2", "-v")):
        res = cli(*args)
        assert res.returncode == 0, res.stderr
        assert "INFO r2r_synth.report.page: wrote" in res.stderr, args


def test_generate_refuses_a_folder_that_holds_no_run_unless_forced(tmp_path):
    # A long path: the message must stay on one line in a pipe (rich would fold it at 80 columns).
    folder = tmp_path / ("a-folder-with-a-rather-long-name-" * 3) / "notes"
    folder.mkdir(parents=True)
    (folder / "thesis.tex").write_text("mine")
    cands = Path(__file__).resolve().parents[1] / "examples" / "sample_candidates.jsonl"
    res = cli("generate", "-i", cands, "-o", folder, "-t", "openai/x", "--api-base", "http://127.0.0.1:9")
    assert res.returncode == 2
    line = next(ln for ln in res.stderr.splitlines() if ln.startswith("error:"))
    assert line == f"error: --out {folder} is not empty and holds no run (thesis.tex)"
    assert "pass --force to write the run into it" in res.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.tex"]  # nothing written
    # --force goes past the check: this run then stops at the unreachable teacher, not at the folder
    res = cli("generate", "-i", cands, "-o", folder, "-t", "openai/x", "--api-base", "http://127.0.0.1:9", "--force",
              "--max-retries", "0", "--timeout", "2")
    assert "holds no run" not in res.stderr and res.returncode != 0


def test_evaluate_prints_each_systems_final_count_in_a_log(tmp_path):
    inp = tmp_path / "cands.jsonl"
    with inp.open("w") as fh:
        for q in range(5):
            docs = [Document(docid=f"d{q}-{i}", text=f"passage {i} on topic {q}") for i in range(3)]
            fh.write(Candidates(query=Query(qid=f"q{q}", text=f"topic {q}"), documents=docs,
                                qrels={docs[0].docid: 1}).model_dump_json() + "\n")
    # A long interval: only the first query's line and the final counts are written.
    res = cli("evaluate", "-i", inp, "-s", "bm25", "-s", "two=bm25", "-o", tmp_path / "ev",
              env={"R2R_PROGRESS_SECONDS": "3600"})
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    assert "evaluate: reading " + str(inp) + " and opening 2 systems" in lines
    assert lines.count("evaluate: bm25: 5 queries reranked") == 1 and lines.count("evaluate: two: 5 queries reranked") == 1
    assert lines.index("evaluate: bm25: 5 queries reranked") < lines.index("evaluate: two: 1 query reranked")
    assert "\r" not in res.stderr


def test_schema_manifest():
    res = cli("schema", "manifest")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["title"] == "Manifest"


def test_plural():
    assert [plural(1, "query"), plural(5, "query"), plural(0, "system"), plural(2, "key")] == [
        "1 query", "5 queries", "0 systems", "2 keys"]
    assert plural(3, "judged query", "judged queries") == "3 judged queries"


def test_a_json_error_names_its_column_once():
    with pytest.raises(InputError, match=r"^f\.jsonl:1: not valid JSON \(Unterminated string starting at column 9\)"):
        parse_json('{"qid": "q1', path="f.jsonl", hint="fix it")
    with pytest.raises(InputError, match=r"Expecting ',' delimiter at column 11\)"):
        parse_json('{"qid": 1 "x": 2}', path="f.jsonl", hint="fix it")
