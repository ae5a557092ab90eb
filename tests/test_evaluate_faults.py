"""evaluate --system teacher:... under a failing teacher: a call that failed after the policy's
retries leaves its query out of that system's run (listed), never ranks a document last; an
unusable reply still does; a system whose every call failed is an error; keys a server quotes never
reach the terminal; --out is checked before the first call.

Through LiteLLM to the loopback OpenAI server (tests/openai_server.py). The larger-scale bar is
`benchmarks/bench_fault_policy.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from r2r_synth.config import EvaluateConfig
from r2r_synth.errors import InputError, TeacherError
from r2r_synth.evaluate import evaluate
from r2r_synth.teacher.policy import CallFailed

sys.path.insert(0, str(Path(__file__).parent))
from openai_server import OpenAIServer

REPO = Path(__file__).resolve().parents[1]
R2R = str(REPO / ".venv" / "bin" / "r2r-synth")
FAULTS = {"429": 0.2, "500": 0.1, "timeout": 0.05}
KEY = "sk-loopback-SECRET-9876543210"
TEACHER = "teacher:openai/loopback"


def write_input(tmp_path: Path, qids=("1", "2", "3", "4"), name: str = "cands.json") -> tuple[Path, Path]:
    """RankGPT JSON with 4 passages per query, and TREC qrels judging three of them."""
    entries, qrels = [], []
    for qid in qids:
        hits = [{"qid": int(qid), "docid": f"{qid}d{i}", "content": f"passage {qid}-{i} on the topic of query {qid}",
                 "score": 10.0 - i} for i in range(4)]
        entries.append({"query": f"what is topic {qid}", "hits": hits})
        qrels += [f"{qid} 0 {qid}d3 3", f"{qid} 0 {qid}d0 0", f"{qid} 0 {qid}d1 1"]
    (tmp_path / name).write_text(json.dumps(entries))
    (tmp_path / f"{name}.qrels").write_text("\n".join(qrels) + "\n")
    return tmp_path / name, tmp_path / f"{name}.qrels"


def run(tmp_path: Path, url: str, out: str = "ev", inp: tuple[Path, Path] | None = None, **kw) -> dict:
    cands, qrels = inp or write_input(tmp_path)
    cfg = EvaluateConfig(input=str(cands), qrels=qrels, systems=[TEACHER], api_base=url, api_key=KEY,
                         programs_dir=tmp_path / "no-programs", out=tmp_path / out, concurrency=4,
                         **{"max_retries": 0, **kw})
    return evaluate(cfg).report["systems"][TEACHER]


MEASURES = ("nDCG@10", "RR@10")


def test_faults_absorbed_by_retries_give_the_clean_figures(tmp_path):
    """20 % 429s, 10 % 500s and 5 % timeouts: the same nDCG@10 as a clean run (before the fix each
    failed call ranked its document last). Enough retries that a call fails for good with odds of
    0.35^11."""
    with OpenAIServer() as srv:
        clean = run(tmp_path, srv.url, out="clean")
    with OpenAIServer(faults=FAULTS, fault_seed=5, fault_sleep=2.0) as srv:
        faulty = run(tmp_path, srv.url, out="faulty", max_retries=10, timeout=0.5)
        assert any(r["action"] != "ok" for r in srv.requests), "no fault was injected"
    assert faulty["failed_calls"] == 0 and faulty["queries_left_out"] == 0
    assert {m: faulty[m] for m in MEASURES} == {m: clean[m] for m in MEASURES}


def test_a_failed_call_leaves_its_query_out_instead_of_ranking_last(tmp_path):
    with OpenAIServer() as srv:
        srv.script("passage 2-3 on", {"status": 500})  # the one relevant passage of query 2
        faulty = run(tmp_path, srv.url, out="faulty")
        others = run(tmp_path, srv.url, out="others", inp=write_input(tmp_path, ("1", "3", "4"), "others.json"))
    assert faulty["failed_calls"] == 1 and faulty["queries_left_out"] == 1 and faulty["left_out_qids"] == ["2"]
    assert faulty["invalid_replies"] == 0
    assert {m: faulty[m] for m in MEASURES} == {m: others[m] for m in MEASURES}
    trec = (tmp_path / "faulty" / "run.teacher_openai_loopback.trec").read_text().split("\n")
    assert {line.split()[0] for line in trec if line} == {"1", "3", "4"}
    saved = json.loads((tmp_path / "faulty" / "evaluation.json").read_text())["systems"][TEACHER]
    assert saved["left_out_qids"] == ["2"] and saved["failed_calls"] == 1


def test_an_unusable_reply_still_ranks_last(tmp_path):
    with OpenAIServer() as srv:
        srv.script("passage 2-3 on", {"content": "no idea"}, {"content": "no idea"})  # chat, then JSON fallback
        row = run(tmp_path, srv.url)
    assert row["invalid_replies"] == 1 and row["failed_calls"] == 0 and row["queries_left_out"] == 0
    ranked = [line.split() for line in (tmp_path / "ev" / "run.teacher_openai_loopback.trec").read_text().splitlines()]
    assert [r[2] for r in ranked if r[0] == "2"][-1] == "2d3"  # the teacher's miss: its document ranks last


def test_every_call_failing_is_an_error_not_a_score(tmp_path):
    with OpenAIServer() as srv:
        srv.behaviour.down = True
        with pytest.raises(TeacherError, match=r"every one of the 16 teacher calls of system .* failed after its "
                                               r"retries: nothing to measure"):
            run(tmp_path, srv.url)
    assert not (tmp_path / "ev" / "evaluation.json").exists()


def test_a_bad_key_stops_at_the_first_query(tmp_path):
    with OpenAIServer(require_key="sk-the-right-one") as srv:
        with pytest.raises(CallFailed, match="Incorrect API key") as ei:
            run(tmp_path, srv.url)
        assert len(srv.requests) == 4  # one query's calls, not all 16
    assert ei.value.cause == "auth"


def test_out_naming_a_file_is_refused_before_any_call(tmp_path):
    (tmp_path / "ev").write_text("a file\n")
    with OpenAIServer() as srv:
        with pytest.raises(InputError, match=f"--out {tmp_path / 'ev'} exists and is not a directory"):
            run(tmp_path, srv.url)
        assert srv.requests == []


# --------------------------------------------------------------------------- the command line


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`r2r-synth ARGS` in this process, through `r2r_synth.cli.main` (exit code, stdout, stderr)."""
    from r2r_synth import cli as cli_mod

    monkeypatch.setattr(sys, "argv", ["r2r-synth", *args])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as ei:
        cli_mod.main()
        raise SystemExit(0)
    cap = capsys.readouterr()
    return ei.value.code or 0, cap.out, cap.err


def test_cli_out_naming_a_file_exits_2(tmp_path, monkeypatch, capsys):
    cands, qrels = write_input(tmp_path)
    (tmp_path / "ev").write_text("a file\n")
    code, _, err = cli(monkeypatch, capsys, "evaluate", "-i", str(cands), "--qrels", str(qrels), "-s", "bm25",
                       "--out", str(tmp_path / "ev"))
    assert code == 2 and "exists and is not a directory" in err and "fix:" in err


def test_cli_timeout_and_max_retries_reach_the_policy_and_the_table(tmp_path, monkeypatch, capsys):
    cands, qrels = write_input(tmp_path)
    with OpenAIServer() as srv:
        srv.script("passage 3-1 on", {"sleep": 5})  # past --timeout 1, and --max-retries 0: one failed call
        code, out, err = cli(monkeypatch, capsys, "evaluate", "-i", str(cands), "--qrels", str(qrels), "-s", "bm25",
                             "-s", TEACHER, "--api-base", srv.url, "--out", str(tmp_path / "ev"), "--timeout", "1",
                             "--max-retries", "0", "--programs-dir", str(tmp_path / "none"))
        assert len([r for r in srv.requests if "passage 3-1 on" in r["user"]]) == 1
    assert code == 0, err
    saved = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert saved["config"]["timeout"] == 1.0 and saved["config"]["max_retries"] == 0
    assert saved["systems"][TEACHER]["left_out_qids"] == ["3"]
    assert "failed calls" in out and "queries left out" in out
    row = next(line for line in out.splitlines() if "teacher:openai" in line)
    assert [cell.strip() for cell in row.split("│")][-3:-1] == ["1", "1"]  # failed calls, queries left out
    assert "1 query left out" in " ".join(err.split()) and ": 3" in err


def test_cli_masks_a_key_the_server_quotes_and_exits_non_zero(tmp_path):
    cands, qrels = write_input(tmp_path)
    with OpenAIServer() as srv:
        srv.script("", *[{"status": 401, "message": f"Incorrect API key provided: {KEY}."}] * 20)
        proc = subprocess.run([R2R, "evaluate", "-i", str(cands), "--qrels", str(qrels), "-s", TEACHER,
                               "--api-base", srv.url, "--api-key", KEY, "--out", str(tmp_path / "ev"),
                               "--programs-dir", str(tmp_path / "none")],
                              check=False, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "COLUMNS": "200"})
        assert srv.requests  # the server did quote the key
    assert proc.returncode != 0
    assert KEY not in proc.stderr and KEY not in proc.stdout
    assert "Incorrect API key provided: ***" in proc.stderr and "fix:" in proc.stderr
