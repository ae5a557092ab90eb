"""The sweep of bad inputs: every command that reads a file or a run, given an empty one, one with a torn
line, a foreign one and a missing one, exits 2 with a message that names it, and never a traceback
(an exception other than `R2RError` would escape `main` and fail the test). Real files, in process."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from test_generate import SAMPLE, cli
from test_import import good_row, write_rows

from r2r_synth.importer import import_r2r

CASES = ("empty", "torn", "foreign", "binary", "missing")
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"
TORN = '{"query": {"qid": "q9", "text": "cut sh'


def _file(tmp: Path, case: str, *, good: str) -> Path:
    """A file of the `case`: empty, a good line then a torn one, a CSV, a PNG, or not there."""
    path = tmp / f"{case}_input.jsonl"
    if case == "empty":
        path.write_text("")
    elif case == "torn":
        path.write_text(good + "\n" + TORN + "\n" + good + "\n")
    elif case == "foreign":
        path = tmp / "foreign_input.csv"
        path.write_text("id,name,price\n1,apple,0.5\n")
    elif case == "binary":
        path = tmp / "binary_input.png"
        path.write_bytes(PNG)
    return path


def _run(tmp: Path, case: str) -> Path:
    """A run directory of the `case`: a run without a record (its manifest says 0), with a torn line
    inside listwise.jsonl, a folder of unrelated files, a run whose listwise.jsonl is binary, or not
    there."""
    path = tmp / f"{case}_run"
    if case == "empty":
        import_r2r([write_rows(tmp / "r2r.jsonl", [good_row("1")])], out=path)
        (path / "listwise.jsonl").write_text("")
    elif case == "torn":
        src = write_rows(tmp / "r2r.jsonl", [good_row("1"), good_row("2")])
        import_r2r([src], out=path)
        rows = (path / "listwise.jsonl").read_text().splitlines()
        (path / "listwise.jsonl").write_text(rows[0] + "\n" + rows[1][:40] + "\n" + rows[1] + "\n")
    elif case == "foreign":
        path.mkdir()
        (path / "notes.txt").write_text("holiday photos\n")
        (path / "data.csv").write_text("a,b\n1,2\n")
    elif case == "binary":
        import_r2r([write_rows(tmp / "r2r.jsonl", [good_row("1")])], out=path)
        (path / "listwise.jsonl").write_bytes(PNG)
    return path


def _r2r_file(tmp: Path, case: str) -> Path:
    if case == "torn":  # import rejects a torn line among good rows; a file of torn lines only is refused
        path = tmp / "torn_input.jsonl"
        path.write_text(TORN + "\n")
        return path
    return _file(tmp, case, good=json.dumps(good_row("1")))


def _candidates(tmp: Path, case: str) -> Path:
    return _file(tmp, case, good=SAMPLE.read_text().splitlines()[0])


COMMANDS: dict[str, Callable[[Path, str], tuple[list[str], Path]]] = {
    "generate": lambda t, c: (["generate", "-i", str(p := _candidates(t, c)), "-o", str(t / "out"),
                               "-t", "openai/x", "--api-base", "http://127.0.0.1:9", "--dry-run"], p),
    "optimize": lambda t, c: (["optimize", "-i", str(p := _candidates(t, c)), "-t", "openai/x",
                               "--api-base", "http://127.0.0.1:9", "--programs-dir", str(t / "programs")], p),
    "evaluate": lambda t, c: (["evaluate", "-i", str(p := _candidates(t, c)), "-s", "bm25", "-o", str(t / "out")], p),
    "train": lambda t, c: (["train", "--corpus", str(p := _r2r_file(t, c)), "-o", str(t / "out")], p),
    "import": lambda t, c: (["import", str(p := _r2r_file(t, c)), "-o", str(t / "out")], p),
    "merge": lambda t, c: (["merge", str(t / "out"), str(p := _run(t, c))], p),
    "filter": lambda t, c: (["filter", str(p := _run(t, c)), "-o", str(t / "out"), "--min-words", "1"], p),
    "export": lambda t, c: (["export", str(p := _run(t, c)), "-o", str(t / "out.jsonl")], p),
    "report": lambda t, c: (["report", str(p := _run(t, c)), "-o", str(t / "out")], p),
    "publish": lambda t, c: (["publish", str(p := _run(t, c)), "--repo-id", "alice/x", "--license", "mit",
                              "--dry-run", "--out", str(t / "out")], p),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_refuses_a_bad_input_naming_it(command, case, tmp_path, monkeypatch, capsys):
    args, path = COMMANDS[command](tmp_path, case)
    code, out, err = cli(monkeypatch, capsys, *args)
    assert code == 2, (code, err)
    assert "Traceback" not in err + out
    assert path.name in "".join(err.split()), err  # a long path may be folded across lines
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir()), "wrote something"


# plain text lines are documents to rerank: a CSV is a valid input there
@pytest.mark.parametrize("case", [c for c in CASES if c != "foreign"])
def test_rerank_refuses_bad_documents_naming_them(case, tmp_path, monkeypatch, capsys, tiny_bert):
    path = _file(tmp_path, case, good=json.dumps({"docid": "a", "text": "alpha"}))
    if case == "torn":
        path.write_text('{"docid": "a", "text": "alpha"}\n{"docid": "b", "te\n')
    code, out, err = cli(monkeypatch, capsys, "rerank", "--model", f"cross-encoder:{tiny_bert}", "-q", "q",
                         "-d", str(path))
    assert code == 2, (code, err)
    assert "Traceback" not in err + out and path.name in "".join(err.split())
