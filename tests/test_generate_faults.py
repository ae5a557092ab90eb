"""generate under faults, against the real loopback OpenAI server through LiteLLM or the direct HTTP
transport: outages, bad keys, SIGKILL with a budget, two writers, a half-answered comparison,
configuration errors and damaged run directories. Each test is one defect found by fault injection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from openai_server import OpenAIServer, spawn_server
from test_generate import KEY, SAMPLE, cfg, check_run_dir, cli, lines, manifest, run

from r2r_synth.errors import ConfigError, IncompleteRun, InputError, TeacherError
from r2r_synth.schemas import Candidates, Document, Query

GOOD = "sk-good-0123456789abcdef"


def test_an_outage_leaves_no_permanent_holes(openai_server, tmp_path):
    # The teacher is down for the first 20 attempts (10 requests at --max-retries 1), up after.
    openai_server.script("", *[{"status": 503}] * 20)
    out = tmp_path / "run"
    with pytest.raises(IncompleteRun, match="10 of the 15 requests of this session got no answer"):
        run(cfg(openai_server, out, pairs="none", concurrency=1, max_retries=1))
    rejects = lines(out / "rejects.jsonl")
    assert len(rejects) == 10 and {r["cause"] for r in rejects} == {"transport"}
    assert manifest(out).status == "incomplete"
    n = len(openai_server.requests)
    res = run(cfg(openai_server, out, pairs="none", concurrency=1, max_retries=1))  # one plain rerun
    assert len(openai_server.requests) - n == 10  # only the holes are asked again
    assert res.manifest.status == "complete" and res.manifest.counts["direct"].records == 15
    assert lines(out / "rejects.jsonl") == [] and len(check_run_dir(out)) == 15


def test_a_tripped_breaker_aborts_in_flight_requests_and_the_rerun_asks_them_again(openai_server, tmp_path):
    openai_server.behaviour.down = True
    out = tmp_path / "run"
    with pytest.raises(TeacherError, match="requests in a row failed"):
        run(cfg(openai_server, out, concurrency=8, max_retries=0))
    causes = {r["cause"] for r in lines(out / "rejects.jsonl")}
    assert causes <= {"transport", "aborted"} and manifest(out).status == "failed"
    openai_server.behaviour.down = False
    res = run(cfg(openai_server, out, concurrency=8, max_retries=0))
    assert res.manifest.status == "complete"
    assert res.manifest.counts["direct"].records == 15 and res.manifest.counts["comparison"].records == 12
    assert lines(out / "rejects.jsonl") == []


def test_a_bad_key_is_asked_again_once_it_is_fixed(tmp_path):
    with OpenAIServer(require_key=GOOD) as srv:
        out = tmp_path / "run"
        with pytest.raises(TeacherError, match="refused the request"):
            run(cfg(srv, out, pairs="none", concurrency=4, api_key="sk-bad-0123456789"))
        assert {r["cause"] for r in lines(out / "rejects.jsonl")} <= {"auth", "aborted"}
        res = run(cfg(srv, out, pairs="none", concurrency=4, api_key=GOOD))
        assert res.manifest.status == "complete" and res.manifest.counts["direct"].records == 15
        assert lines(out / "rejects.jsonl") == []


@pytest.mark.parametrize("transport", ["http", "litellm"])
def test_the_providers_env_key_is_sent_to_an_api_base(tmp_path, monkeypatch, transport):
    monkeypatch.setenv("OPENAI_API_KEY", GOOD)
    with OpenAIServer(require_key=GOOD) as srv:
        res = run(cfg(srv, tmp_path / "run", pairs="none", limit=1, api_key=None,
                      transport="auto" if transport == "http" else "litellm"))
        assert res.manifest.extra["teacher"]["transport"] == transport
        assert res.manifest.counts["direct"].records == 5
        assert {r["auth"] for r in srv.requests} == {True}


def test_an_unknown_provider_is_a_configuration_error_before_anything_is_asked(openai_server, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="LiteLLM does not know how to reach 'nosuchprovider/model'"):
        run(cfg(openai_server, out, teacher="nosuchprovider/model", api_base=None, transport="litellm"))
    assert openai_server.requests == [] and not out.exists()


def test_cli_unknown_provider_and_out_that_is_a_file_exit_2(openai_server, tmp_path, monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, "generate", "-i", str(SAMPLE), "-o", str(tmp_path / "r"),
                       "-t", "nosuchprovider/model", "--transport", "litellm")
    assert code == 2 and "LiteLLM does not know how to reach" in err
    f = tmp_path / "afile"
    f.write_text("x")
    code, _, err = cli(monkeypatch, capsys, "generate", "-i", str(SAMPLE), "-o", str(f), "-t", "openai/loopback",
                       "--api-base", openai_server.url)
    assert code == 2 and "exists and is not a directory" in " ".join(err.split())
    assert openai_server.requests == [] and f.read_text() == "x"


def test_a_comparisons_paid_half_is_reused_after_the_other_half_failed(openai_server, tmp_path):
    out = tmp_path / "run"
    base = cfg(openai_server, out, direct=False, limit=1, max_retries=1, concurrency=1)
    a_first = "[[ ## document_a ## ]]\nChickens lay eggs"  # one order of one pair (d3 shown first)
    openai_server.script(a_first, {"status": 500}, {"status": 500})
    with pytest.raises(IncompleteRun, match="1 of the 4 requests"):  # (d2, d3) and (d3, d4) share d3 ...
        run(base)
    n = len(openai_server.requests)
    res = run(base)
    asked = openai_server.requests[n:]
    assert len(asked) == 1 and a_first in asked[0]["user"]  # only the failed half is asked again
    assert res.manifest.status == "complete" and res.manifest.counts["comparison"].records == 4
    rec = next(r for r in lines(out / "comparison.jsonl") if (r["doc_a"]["docid"], r["doc_b"]["docid"]) ==
               ("ex1-d2", "ex1-d3"))
    assert rec["swapped"] is not None  # both halves: the one asked now and the one kept from before
    first_half = next(r for r in openai_server.requests[:n] if "ex1" not in r["user"] and
                      "[[ ## document_a ## ]]\nHard-boiled" in r["user"] and "Chickens" in r["user"])
    assert rec["provenance"]["usage"]["total_tokens"] > first_half["usage"]["total_tokens"]


def _docs_file(tmp_path: Path, *, queries: int, docs: int, long: int | None = None) -> Path:
    path = tmp_path / "cands.jsonl"
    with path.open("w") as fh:
        for q in range(queries):
            documents = [Document(docid=f"d{q}-{i}", text=f"passage {i} about the tides of sea {q}. " * 8)
                         for i in range(docs)]
            if long and q == 0:
                documents[0] = Document(docid="d0-0", text="x" * long)
            fh.write(Candidates(query=Query(qid=f"q{q}", text=f"how do tides work at sea {q}"),
                                documents=documents).model_dump_json() + "\n")
    return path


def test_max_doc_chars_cuts_long_documents_and_says_so(openai_server, tmp_path):
    src = _docs_file(tmp_path, queries=2, docs=3, long=60_000)
    out = tmp_path / "run"
    res = run(cfg(openai_server, out, input=str(src), pairs="none", max_doc_chars=1000))
    assert res.manifest.extra["documents_cut"] == {"max_doc_chars": 1000, "count": 1, "longest_chars": 60_000}
    rec = next(r for r in lines(out / "direct.jsonl") if r["document"]["docid"] == "d0-0")
    assert len(rec["document"]["text"]) == 1000
    assert max(len(r["user"]) for r in openai_server.requests) < 2000


def test_a_record_without_a_key_or_a_malformed_reject_is_an_error_naming_the_line(openai_server, tmp_path):
    out = tmp_path / "run"
    run(cfg(openai_server, out, pairs="none", limit=1))
    recs = (out / "direct.jsonl").read_text().splitlines()
    bad = json.loads(recs[1])
    del bad["key"]
    (out / "direct.jsonl").write_text("\n".join([recs[0], json.dumps(bad), *recs[2:]]) + "\n")
    with pytest.raises(InputError, match=r"direct.jsonl:2: a line without a \"key\""):
        run(cfg(openai_server, out, pairs="none", limit=1))
    (out / "direct.jsonl").write_text("\n".join(recs) + "\n")
    (out / "rejects.jsonl").write_text(json.dumps({"key": "k1", "kind": "nonsense", "reason": "?"}) + "\n")
    with pytest.raises(InputError, match=r"rejects.jsonl:1: not a valid reject: kind"):
        run(cfg(openai_server, out, pairs="none", limit=1))


def test_rejects_written_before_causes_existed_are_asked_again(openai_server, tmp_path):
    out = tmp_path / "run"
    run(cfg(openai_server, out, pairs="none", limit=1))
    recs = lines(out / "direct.jsonl")
    kept = recs[2:]
    (out / "direct.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    old = [{"kind": "direct", "key": recs[0]["key"], "reason": "run aborted"},
           {"kind": "direct", "key": recs[1]["key"], "reason": "transient: gave up after 6 attempts: 503"}]
    (out / "rejects.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    n = len(openai_server.requests)
    res = run(cfg(openai_server, out, pairs="none", limit=1))
    assert len(openai_server.requests) - n == 2 and res.manifest.counts["direct"].records == 5


def test_a_run_from_before_the_journal_keeps_its_totals(openai_server, tmp_path):
    out = tmp_path / "run"
    run(cfg(openai_server, out, pairs="none", limit=1))
    m = manifest(out)
    (out / "journal.jsonl").unlink()  # as a run directory written before runs had a journal
    res = run(cfg(openai_server, out, pairs="none", limit=2))
    assert res.manifest.usage.total_tokens > m.usage.total_tokens
    assert res.manifest.extra["sessions"][0]["started_at"] == m.extra["sessions"][0]["started_at"]


def _generate_cmd(src: Path, out: Path, url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "r2r_synth.cli", "generate", "-i", str(src), "-o", str(out),
            "-t", "openai/gpt-4o-mini", "--api-base", url, "--api-key", KEY, "--pairs", "none", *extra]


def _wait_for_records(out: Path, proc: subprocess.Popen, n: int) -> None:
    deadline = time.time() + 300
    direct = out / "direct.jsonl"
    while not (direct.exists() and direct.read_bytes().count(b"\n") >= n):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        assert time.time() < deadline, f"generate wrote fewer than {n} records in 300 s"
        time.sleep(0.05)


def _server_spend(log: Path) -> float:
    """USD of every reply the server sent, at gpt-4o-mini's prices (what the provider bills)."""
    import litellm

    total = 0.0
    for line in log.read_text().splitlines():
        ev = json.loads(line)
        if "reply" in ev:
            p, c = litellm.cost_per_token(model="gpt-4o-mini", prompt_tokens=ev["usage"]["prompt_tokens"],
                                          completion_tokens=ev["usage"]["completion_tokens"])
            total += p + c
    return total


def test_max_cost_holds_across_a_sigkill(tmp_path):
    src = _docs_file(tmp_path, queries=10, docs=8)
    out, log = tmp_path / "run", tmp_path / "server.jsonl"
    cap = "0.0015"  # about 20 of the 80 requests
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with spawn_server(latency=0.3, log_path=str(log)) as url:
        proc = subprocess.Popen(_generate_cmd(src, out, url, "-c", "2", "--max-cost", cap), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _wait_for_records(out, proc, 4)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        killed_records = len(lines(out / "direct.jsonl"))
        assert not (out / "manifest.json").exists()  # nothing was written at the end: it was killed
        rerun = subprocess.run(_generate_cmd(src, out, url, "-c", "2", "--max-cost", cap), check=False,
                               env=env, capture_output=True, text=True, timeout=300)
        time.sleep(0.5)  # the server logs a reply the killed client never read
    assert rerun.returncode == 3, rerun.stderr  # stopped at the budget, cleanly
    m = manifest(out)
    recs = lines(out / "direct.jsonl")
    assert len(recs) > killed_records
    per_call = max(r["provenance"]["cost"] for r in recs)
    killed = next(s for s in m.extra["sessions"] if s["status"] == "killed")
    # The journal kept the killed session's spend: the manifest adds up every reply the records hold ...
    assert m.usage.total_tokens >= sum(r["provenance"]["usage"]["total_tokens"] for r in recs)
    assert m.cost == pytest.approx(sum(r["provenance"]["cost"] for r in recs), rel=0.01, abs=2 * per_call)
    # ... and what the provider billed over both sessions stays within the cap plus what was in flight
    # when the process was killed.
    assert _server_spend(log) <= float(cap) + killed["in_flight_at_end"] * per_call + 1e-9


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, monkeypatch, capsys):
    src = _docs_file(tmp_path, queries=3, docs=5)
    out = tmp_path / "run"
    with spawn_server(latency=0.5) as url:
        proc = subprocess.Popen(_generate_cmd(src, out, url, "-c", "1"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            _wait_for_records(out, proc, 1)
            code, _, err = cli(monkeypatch, capsys, "generate", "-i", str(src), "-o", str(out), "-t",
                               "openai/gpt-4o-mini", "--api-base", url, "--api-key", KEY, "--pairs", "none")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=120)
    err = " ".join(err.split())
    assert code == 2 and f"is being written by another r2r-synth process (pid {proc.pid}" in err
    keys = [r["key"] for r in lines(out / "direct.jsonl")]
    assert len(keys) == len(set(keys))
