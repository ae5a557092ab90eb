"""optimize under a failing teacher: a call that failed after the policy's retries is counted and
shown as failed, never scored as a wrong answer; a run whose every call failed is an error; keys a
server quotes never reach the terminal; output paths are checked before the first call.

Everything goes through LiteLLM to the loopback OpenAI server (tests/openai_server.py): random
faults (seeded) for the "same metrics as a clean run" property, scripted ones for the exact
accounting. `benchmarks/bench_fault_policy.py` measures the same property at a larger scale.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dspy
import pytest

from r2r_synth.config import OptimizeConfig
from r2r_synth.errors import InputError, TeacherError
from r2r_synth.optimize import COUNTS, build_labeled_set, evaluate_direct, gold_qrels, run_optimize
from r2r_synth.schemas import Candidates, Document, Query
from r2r_synth.teacher.lm import make_teacher
from r2r_synth.teacher.policy import CallFailed, command_policy
from r2r_synth.teacher.programs import build_program

sys.path.insert(0, str(Path(__file__).parent))
from openai_server import OpenAIServer

# The benchmark's fault mix. A reply held past the client's timeout is a timeout.
FAULTS = {"429": 0.2, "500": 0.1, "timeout": 0.05}
KEY = "sk-loopback-SECRET-0123456789"


def make_candidates(n_queries: int = 8, depth: int = 4) -> list[Candidates]:
    out = []
    for q in range(n_queries):
        docs = [Document(docid=f"D{q}x{i}", text=f"Passage {q}.{i} on subject {q} [{q}-{i}-end]") for i in range(depth)]
        out.append(Candidates(query=Query(qid=f"Q{q}", text=f"what about subject {q}?"), documents=docs,
                              qrels={d.docid: g for d, g in zip(docs, [3, 2, 1, 0])}))
    return out


def config(tmp_path: Path, url: str, **kw) -> OptimizeConfig:
    return OptimizeConfig(**{"input": "mem", "teacher": "openai/loopback", "api_base": url, "api_key": KEY,
                             "programs_dir": tmp_path / "programs", "program": "direct", "cache": False,
                             "concurrency": 4, "seed": 3, "evaluate_only": True, "max_retries": 0, **kw})


def metrics_of(scores: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in scores.items() if k not in COUNTS}


# --------------------------------------------------------------------------- the property at a small scale


@pytest.mark.parametrize("evaluate_only", [True, False], ids=["evaluate-only", "bootstrap"])
def test_faults_absorbed_by_retries_score_as_a_clean_run(tmp_path, evaluate_only):
    """With 20 % 429s, 10 % 500s and 5 % timeouts the report's every metric equals a clean run's
    (before the fix, each failed call was a miss: 0.450 instead of 0.600, and "+0.050" improvements
    that were noise). Enough retries that a call fails for good with odds of 0.35^11."""
    cands = make_candidates()
    reports = {}
    for label, faults in (("clean", None), ("faulty", FAULTS)):
        with OpenAIServer(faults=faults, fault_seed=11, fault_sleep=2.0) as srv:
            cfg = config(tmp_path / label, srv.url, evaluate_only=evaluate_only, max_retries=10, timeout=0.5,
                         max_demos=2, max_calls=12)
            reports[label] = run_optimize(cfg, candidates=cands)
            if faults:
                actions = [r["action"] for r in srv.requests]
                assert any(a != "ok" for a in actions), "no fault was injected"
    clean, faulty = reports["clean"].programs["direct"], reports["faulty"].programs["direct"]
    assert faulty.failed_calls == {k: 0 for k in faulty.calls}
    assert faulty.before == clean.before
    assert faulty.after == clean.after
    if not evaluate_only:
        assert faulty.program_hash_after == clean.program_hash_after  # the same demos were learned


# --------------------------------------------------------------------------- exact accounting


def _direct(srv: OpenAIServer, cands: list[Candidates], *, drop: set[str] = frozenset(), qids=None):
    """evaluate_direct of the prompt program through the loopback server, on the examples of `qids`
    (all when None) minus the docids in `drop`."""
    examples, _, _ = build_labeled_set(cands, seed=0, val_fraction=0.25, max_pairs_per_query=2)
    val = [e for e in examples["direct"] if (qids is None or e.qid in qids) and e.docid not in drop]
    teacher = make_teacher("openai/loopback", api_base=srv.url, api_key=KEY,
                           policy=command_policy(embedded=False, max_retries=0, timeout=5))
    with dspy.context(lm=teacher.lm, adapter=teacher.adapter):
        return evaluate_direct(build_program("direct"), val, qrels=gold_qrels(cands), num_threads=2)


def test_a_failed_call_leaves_the_metrics_instead_of_counting_as_a_miss():
    cands = make_candidates(4)
    with OpenAIServer() as srv:
        srv.script("Passage 1.2 on subject 1", {"status": 500})
        faulty = _direct(srv, cands)
        graded_clean = _direct(srv, cands, drop={"D1x2"})  # the same examples, minus the one whose call failed
        ranked_clean = _direct(srv, cands, qids={"Q0", "Q2", "Q3"})  # the queries ranked whole
    assert faulty["failed_calls"] == 1 and faulty["queries_left_out"] == 1 and faulty["n"] == 15
    assert faulty["invalid"] == 0.0
    for graded in ("metric", "exact", "within_1", "binary_accuracy@2"):
        assert faulty[graded] == graded_clean[graded], graded
    for ranking in ("nDCG@10", "kendall_tau", "pairwise_accuracy"):
        assert faulty[ranking] == ranked_clean[ranking], ranking


def test_an_unusable_reply_still_counts_against_the_teacher():
    cands = make_candidates(2)
    with OpenAIServer() as srv:
        # ChatAdapter, then its JSON fallback: both get garbage.
        srv.script("Passage 0.0 on subject 0", {"content": "no idea"}, {"content": "no idea"})
        out = _direct(srv, cands)
    assert out["failed_calls"] == 0 and out["queries_left_out"] == 0 and out["n"] == 8
    assert out["invalid"] == pytest.approx(1 / 8)
    assert out["exact"] < 1.0 or out["metric"] < 1.0 or out["nDCG@10"] < 1.0  # a miss, not a dropped example


def test_every_call_failing_is_an_error_and_writes_nothing(tmp_path):
    cands = make_candidates(4)
    with OpenAIServer() as srv:
        srv.behaviour.down = True  # every request: 503
        with pytest.raises(TeacherError, match=r"every one of the \d+ direct teacher calls failed after its retries"):
            run_optimize(config(tmp_path, srv.url, evaluate_only=False), candidates=cands)
    assert not (tmp_path / "programs").exists()


def test_a_bad_key_stops_the_run_with_the_call_failure(tmp_path):
    cands = make_candidates(4)
    with OpenAIServer(require_key="sk-the-right-one") as srv, pytest.raises(CallFailed, match="Incorrect API key") as ei:
        run_optimize(config(tmp_path, srv.url), candidates=cands)
    assert ei.value.cause == "auth" and "--api-key" in ei.value.hint


def test_report_counts_failed_calls_per_phase(tmp_path):
    cands = make_candidates(4)
    with OpenAIServer() as srv:
        cfg = config(tmp_path, srv.url, report=tmp_path / "report.json")  # --evaluate-only writes only to --report
        _, split, _ = build_labeled_set(cands, seed=cfg.seed, val_fraction=cfg.val_fraction, max_pairs_per_query=10)
        q = split.val[0][1:]
        srv.script(f"Passage {q}.0 on subject {q}", {"status": 429})
        rep = run_optimize(cfg, candidates=cands)
    pr = rep.programs["direct"]
    assert pr.failed_calls == {"evaluate_current": 1} and rep.failed_calls == 1
    assert pr.before["failed_calls"] == 1 and pr.before["queries_left_out"] == 1
    saved = json.loads(rep.path.read_text())
    assert saved["failed_calls"] == 1 and saved["programs"]["direct"]["before"]["queries_left_out"] == 1


# --------------------------------------------------------------------------- paths, checked before any call


@pytest.mark.parametrize("flag", ["programs_dir", "report"])
def test_an_output_path_under_a_file_is_refused_before_any_call(tmp_path, flag):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    target = {"programs_dir": blocker, "report": blocker / "report.json"}[flag]
    with OpenAIServer() as srv:
        said = (f"--programs-dir {blocker} exists and is not a directory" if flag == "programs_dir" else
                f"--report {target}: {blocker} is a file, not a directory")
        with pytest.raises(InputError, match=re.escape(said)):
            run_optimize(config(tmp_path, srv.url, evaluate_only=False, **{flag: target}),
                         candidates=make_candidates(4))
        assert srv.requests == []  # refused before the first call, not after the calls were spent


# --------------------------------------------------------------------------- the command line


def _cli(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("r2r-synth")
    # A generous timeout: LiteLLM's import takes a while on a loaded, shared 2-core machine.
    return subprocess.run([str(exe), *args], check=False, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "COLUMNS": "200"})


def _input(tmp_path: Path) -> Path:
    inp = tmp_path / "cands.jsonl"
    inp.write_text("".join(c.model_dump_json() + "\n" for c in make_candidates(4)))
    return inp


def test_cli_masks_a_key_the_server_quotes_and_exits_non_zero(tmp_path):
    with OpenAIServer() as srv:
        srv.script("", *[{"status": 401, "message": f"Incorrect API key provided: {KEY}."}] * 50)
        res = _cli("optimize", "-i", str(_input(tmp_path)), "-t", "openai/loopback", "--api-base", srv.url,
                   "--api-key", KEY, "--programs-dir", str(tmp_path / "p"), "--no-cache", "--program", "direct")
        assert srv.requests  # the server did quote the key
    assert res.returncode != 0
    assert KEY not in res.stderr and KEY not in res.stdout
    assert "Incorrect API key provided: ***" in res.stderr and "fix:" in res.stderr
    assert not (tmp_path / "p").exists()


def test_cli_timeout_and_max_retries_reach_the_policy_and_the_table(tmp_path):
    _, split, _ = build_labeled_set(make_candidates(4), seed=1, val_fraction=0.5, max_pairs_per_query=10)
    passage = f"Passage {split.val[0][1:]}.1 on subject"
    with OpenAIServer() as srv:
        srv.script(passage, {"sleep": 5})  # past --timeout: one failed call, and no retry of it
        res = _cli("optimize", "-i", str(_input(tmp_path)), "-t", "openai/loopback", "--api-base", srv.url,
                   "--programs-dir", str(tmp_path / "p"), "--no-cache", "--program", "direct", "--evaluate-only",
                   "--timeout", "1", "--max-retries", "0", "--val-fraction", "0.5", "--seed", "1",
                   "--report", str(tmp_path / "p" / "optimize_report.json"))
        asked = [r for r in srv.requests if passage in r["user"]]
    assert res.returncode == 0, res.stderr
    assert len(asked) == 1
    report = json.loads((tmp_path / "p" / "optimize_report.json").read_text())
    assert report["config"]["timeout"] == 1.0 and report["config"]["max_retries"] == 0
    assert report["failed_calls"] == 1
    out = " ".join(res.stdout.split())
    assert "failed calls │ 1" in out and "queries left out │ 1" in out and "(1 failed)" in out
