"""`generate --listwise`: R2R's listwise call over RankGPT's sliding windows, against the real loopback
OpenAI-compatible server through LiteLLM (and the direct HTTP transport). The server ranks every window
by one hidden score per passage (`openai_server.listwise_score`), so the sliding windows must bring the
best passages of each query to its top."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest

from r2r_synth.config import GenerateConfig
from r2r_synth.errors import BudgetExceeded, ConfigError, IncompleteRun, InputError
from r2r_synth.generate import generate, merge_runs
from r2r_synth.generate.windows import window_spans
from r2r_synth.io.jsonl import read_jsonl
from r2r_synth.schemas import Candidates, Document, ListwiseRecord, Query, RankingRecord, Reject

sys.path.insert(0, str(Path(__file__).parent))
from openai_server import listwise_score
from test_generate import cli

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-test-secret-0123456789"


def candidates(n_queries: int = 3, depth: int = 30) -> list[Candidates]:
    out = []
    for q in range(n_queries):
        docs = [Document(docid=f"q{q}d{d}", text=f"Passage {q}-{d}: tides move sand {q * depth + d} metres a day.")
                for d in range(depth)]
        out.append(Candidates(query=Query(qid=f"q{q}", text=f"how fast do sand spits grow {q}"), documents=docs,
                              qrels={f"q{q}d0": 3, f"q{q}d5": 1, f"q{q}d29": 0}))
    return out


def write_input(path: Path, cands: list[Candidates]) -> Path:
    path.write_text("".join(c.model_dump_json() + "\n" for c in cands))
    return path


def cfg(srv, out: Path, inp: Path, **kw) -> GenerateConfig:
    base = {"input": str(inp), "out": out, "teacher": "openai/loopback", "api_base": srv.url, "api_key": KEY,
            "listwise": True, "depth": 30, "window": 10, "stride": 5, "concurrency": 4, "transport": "litellm",
            "programs_dir": REPO / "programs", "max_retries": 0, "timeout": 10}
    base.update(kw)
    return GenerateConfig(**base)


def run(config: GenerateConfig):
    return generate(config, backoff_base=0.01, backoff_cap=0.05)


def windows(out: Path) -> list[ListwiseRecord]:
    return list(read_jsonl(out / "listwise.jsonl", ListwiseRecord))


def rankings(out: Path) -> dict[str, RankingRecord]:
    return {r.query.qid: r for r in read_jsonl(out / "rankings.jsonl", RankingRecord)}


def asked(srv, start: int) -> list[str]:
    """The user messages of the server's requests from the `start`-th on (the server's log is append-only)."""
    return [r["user"] for r in srv.requests[start:]]


def content(recs: list[ListwiseRecord]) -> list[dict]:
    """The records without what differs between two runs of the same job (time, latency, usage)."""
    return sorted((r.model_dump(exclude={"provenance"}) for r in recs), key=lambda d: d["key"])


def rankgpt_window_count(n: int, window: int, stride: int) -> int:
    """RankGPT's own loop (rank_gpt.py `sliding_windows`), counting its windows."""
    count, start = 0, n - window
    while start >= 0:
        count += 1
        start -= stride
    return count


# --------------------------------------------------------------------------- windows


@pytest.mark.parametrize("n,w,s", [(100, 20, 10), (30, 10, 5), (20, 20, 10), (50, 20, 15), (7, 4, 1)])
def test_window_spans_follow_rankgpt_from_the_bottom_up(n, w, s):
    spans = window_spans(n, window=w, stride=s)
    assert spans[0] == (n - w, n) and spans[-1][0] == 0  # the bottom first; the top is always ranked
    assert all(b == (a[0] - s, a[1] - s) or (b[0] == 0 and b[1] == a[1] - s) for a, b in itertools.pairwise(spans))
    assert all(end - start == w for start, end in spans[:-1])
    if (n - w) % s == 0:  # RankGPT reaches the top exactly: the same windows
        assert len(spans) == rankgpt_window_count(n, w, s)
    else:  # RankGPT stops short of the top; rank_llm (and this) clips one more window at 0
        assert len(spans) == rankgpt_window_count(n, w, s) + 1


# --------------------------------------------------------------------------- a run


@pytest.mark.parametrize("transport", ["litellm", "http"])
def test_listwise_run_ranks_every_candidate_once_and_bubbles_the_best_up(openai_server, tmp_path, transport):
    cands = candidates()
    inp = write_input(tmp_path / "c.jsonl", cands)
    out = tmp_path / "run"
    res = run(cfg(openai_server, out, inp, transport=transport))
    m = res.manifest
    recs = windows(out)
    n_windows = len(window_spans(30, window=10, stride=5))
    assert n_windows == 5 and len(recs) == 3 * n_windows == len(openai_server.requests)
    assert m.status == "complete" and m.counts["listwise"].requested == m.counts["listwise"].records == 15
    assert set(m.counts) == {"listwise"} and set(m.programs) == {"listwise"}
    assert not (out / "direct.jsonl").exists()  # a listwise run asks windows only
    lw = m.extra["listwise"]
    assert (lw["rankings"], lw["windows_repaired"], lw["windows_per_query"]) == (3, 0, [5])
    assert (lw["window"], lw["stride"], lw["depth"], lw["queries"]) == (10, 5, 30, 3)
    ranks = rankings(out)
    for c in cands:
        r = ranks[c.query.qid]
        docids = [d.docid for d in c.documents]
        assert sorted(r.ranking) == sorted(docids) and len(r.ranking) == 30  # every candidate exactly once
        assert r.first_stage == docids and r.gold == c.qrels
        # Every window of 10 hands its best 5 up: the 5 best of all 30 end on top, in order.
        best = sorted(c.documents, key=lambda d: listwise_score(c.query.text, d.full_text()), reverse=True)
        assert r.ranking[:5] == [d.docid for d in best[:5]]
        mine = [w for w in recs if w.query.qid == c.query.qid]
        assert [w.key for w in sorted(mine, key=lambda w: w.window.index)] == r.windows
        assert r.provenance.usage.total_tokens == sum(w.provenance.usage.total_tokens for w in mine)
    first = next(w for w in recs if w.query.qid == "q0" and w.window.index == 0)
    assert first.window.start == 20 and first.window.count == 5 and first.window.depth == 30
    assert first.first_stage_ranks == list(range(21, 31))  # the bottom window, shown in first-stage order
    assert first.gold == {"q0d29": 0} and not first.repaired and first.repair is None
    assert len(first.items) == 10 and all(i.reason and i.comparison_reason and i.relevance is not None
                                          for i in first.items)
    assert [i.docid for i in first.items] == first.ranking
    assert first.provenance.program == "listwise" and first.provenance.program_hash == m.programs["listwise"]
    # The next window up sees the winners of the one below it.
    second = next(w for w in recs if w.query.qid == "q0" and w.window.index == 1)
    assert [d.docid for d in second.documents[5:]] == first.ranking[:5]
    assert KEY not in (out / "listwise.jsonl").read_text() + (out / "manifest.json").read_text()


def test_the_json_adapter_sends_a_flat_schema_and_parses_the_reply(openai_server, tmp_path):
    """The embedded teacher's adapter (constrained JSON decoding): the listwise schema is inline,
    since llama.cpp's grammar converter only resolves `$ref`s from the root."""
    from r2r_synth.teacher.embedded import EmbeddedJSONAdapter
    from r2r_synth.teacher.lm import make_teacher

    inp = write_input(tmp_path / "c.jsonl", candidates(1))
    teacher = make_teacher("openai/loopback", api_base=openai_server.url, api_key=KEY, adapter=EmbeddedJSONAdapter(),
                           transport="litellm")
    res = generate(cfg(openai_server, tmp_path / "run", inp), teacher=teacher)
    assert res.manifest.counts["listwise"].records == 5
    fmt = openai_server.requests[0]["response_format"]
    assert fmt["type"] == "json_object" and "$ref" not in json.dumps(fmt)
    ranked = fmt["schema"]["properties"]["ranked_passages"]
    # The grammar is narrowed to the window: exactly its 10 passages, identifiers 1..10.
    assert ranked["minItems"] == ranked["maxItems"] == 10
    assert ranked["items"]["properties"]["identifier"]["enum"] == list(range(1, 11))
    assert list(ranked["items"]["properties"])[:2] == ["identifier", "relevance"]
    assert ranked["items"]["properties"]["direct_reason"]["maxLength"] == 160


# --------------------------------------------------------------------------- flawed permutations


def test_a_flawed_permutation_is_repaired_and_says_how(openai_server, tmp_path):
    inp = write_input(tmp_path / "c.jsonl", candidates(1))
    openai_server.script("sand spits grow 0", {"flaw": "duplicate"}, {"flaw": "unknown"})
    out = tmp_path / "run"
    res = run(cfg(openai_server, out, inp))
    first, second = sorted(windows(out), key=lambda w: w.window.index)[:2]
    assert first.repaired and first.repair.duplicates and first.repair.missing and not first.repair.unknown
    # RankGPT's repair: the repeated passage counts once, the one left out follows in the order shown.
    assert sorted(first.ranking) == sorted(d.docid for d in first.documents)
    assert first.ranking[-1] == first.documents[first.repair.missing[0] - 1].docid
    assert len(first.items) == 9  # no reason was given for the passage left out
    assert second.repaired and second.repair.unknown == [17] and not second.repair.missing
    assert res.manifest.extra["listwise"]["windows_repaired"] == 2
    assert rankings(out)["q0"].windows_repaired == 2


def test_no_repair_rejects_a_flawed_permutation_and_the_window_keeps_its_order(openai_server, tmp_path):
    inp = write_input(tmp_path / "c.jsonl", candidates(1))
    openai_server.script("sand spits grow 0", {"flaw": "missing"}, {"flaw": "missing"})
    out = tmp_path / "run"
    res = run(cfg(openai_server, out, inp, repair=False, parse_retries=1))
    (rej,) = [Reject.model_validate(json.loads(x)) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert rej.kind == "listwise" and rej.cause == "reply" and rej.attempts == 2  # asked again once, then rejected
    assert rej.reason.startswith("invalid reply: not a permutation of the window's 10 passages: missing [")
    assert rej.raw and rej.inputs["window"] == 0 and len(rej.inputs["docids"]) == 10
    assert res.manifest.status == "complete" and res.manifest.counts["listwise"].rejects == 1
    r = rankings(out)["q0"]
    assert r.windows_rejected == 1 and len(r.windows) == 5 and r.windows[0] == rej.key
    second = next(w for w in windows(out) if w.window.index == 1)
    assert [d.docid for d in second.documents[5:]] == [f"q0d{i}" for i in range(20, 25)]  # kept as shown


def test_a_reply_naming_no_passage_is_rejected_even_with_repair(openai_server, tmp_path):
    inp = write_input(tmp_path / "c.jsonl", candidates(1))
    openai_server.script("sand spits grow 0", {"flaw": "empty"}, {"flaw": "empty"})
    out = tmp_path / "run"
    run(cfg(openai_server, out, inp))
    (rej,) = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert rej["cause"] == "reply" and "names none of the window's 10 passages" in rej["reason"]


# --------------------------------------------------------------------------- resume


def test_a_query_stopped_mid_way_resumes_at_its_window_and_never_asks_a_finished_one(openai_server, tmp_path):
    cands = candidates(2)
    inp = write_input(tmp_path / "c.jsonl", cands)
    ref = tmp_path / "ref"
    run(cfg(openai_server, ref, inp))
    asked_ref = asked(openai_server, 0)
    # Query 0's third window fails on transport (no retries): the query stops there; query 1 finishes.
    out = tmp_path / "run"
    third = next(w for w in windows(ref) if w.query.qid == "q0" and w.window.index == 2)
    openai_server.script(json.dumps(third.documents[0].text)[1:-1], {"status": 500})
    n0 = len(openai_server.requests)
    with pytest.raises(IncompleteRun, match="1 of the 8 requests of this session got no answer"):
        run(cfg(openai_server, out, inp))
    assert len(windows(out)) == 2 + 5 and set(rankings(out)) == {"q1"}
    first_session = asked(openai_server, n0)
    failed = first_session.pop(next(i for i, r in enumerate(openai_server.requests[n0:]) if r["action"] != "ok"))
    n1 = len(openai_server.requests)
    res = run(cfg(openai_server, out, inp))
    resumed = asked(openai_server, n1)
    assert len(resumed) == 3 and resumed[0] == failed  # windows 3, 4 and 5 of query 0, nothing else
    assert not set(resumed) & set(first_session)  # no finished window asked twice
    assert sorted(first_session + resumed) == sorted(asked_ref)
    assert content(windows(out)) == content(windows(ref))
    assert {q: r.ranking for q, r in rankings(out).items()} == {q: r.ranking for q, r in rankings(ref).items()}
    m = res.manifest
    assert m.status == "complete" and m.counts["listwise"].skipped_done == 7 and m.counts["listwise"].rejects == 0


def test_a_killed_run_writes_the_ranking_of_a_query_whose_windows_were_all_done(openai_server, tmp_path):
    inp = write_input(tmp_path / "c.jsonl", candidates(1))
    out = tmp_path / "run"
    run(cfg(openai_server, out, inp))
    ranking = (out / "rankings.jsonl").read_text()
    (out / "rankings.jsonl").unlink()  # killed after the last window's record, before its ranking line
    n = len(openai_server.requests)
    run(cfg(openai_server, out, inp))
    assert len(openai_server.requests) == n and json.loads((out / "rankings.jsonl").read_text())["ranking"] == \
        json.loads(ranking)["ranking"]


def test_the_budget_stops_between_windows_and_a_larger_one_resumes(openai_server, tmp_path):
    inp = write_input(tmp_path / "c.jsonl", candidates(3))
    out = tmp_path / "run"
    priced = {"teacher": "openai/gpt-4o-mini", "concurrency": 1}
    with pytest.raises(BudgetExceeded, match="stopped at the budget"):
        run(cfg(openai_server, out, inp, max_cost=0.002, **priced))
    done = len(windows(out))
    assert 0 < done < 15 and json.loads((out / "manifest.json").read_text())["status"] == "stopped_budget"
    n = len(openai_server.requests)
    res = run(cfg(openai_server, out, inp, max_cost=1.0, **priced))
    assert len(openai_server.requests) - n == 15 - done and res.manifest.status == "complete"
    assert len(rankings(out)) == 3 and res.manifest.cost is not None


def test_dry_run_counts_windows_calls_and_tokens_and_writes_nothing(openai_server, tmp_path):
    inp = write_input(tmp_path / "c.jsonl", candidates(3))
    out = tmp_path / "run"
    est = run(cfg(openai_server, out, inp, dry_run=True)).estimate
    assert est.requests == {"listwise": 15} and est.calls == 15 and est.skipped_done == 0
    assert est.prompt_tokens > 15 * 10 * 10 and est.completion_tokens == 15 * 10 * 120
    assert set(est.programs) == {"listwise"} and not out.exists() and openai_server.requests == []
    run(cfg(openai_server, out, inp, limit=1))
    est = run(cfg(openai_server, out, inp, dry_run=True)).estimate
    assert est.requests == {"listwise": 10} and est.skipped_done == 5


def test_listwise_beside_direct_asks_both(openai_server, tmp_path):
    inp = write_input(tmp_path / "c.jsonl", candidates(1))
    res = run(cfg(openai_server, tmp_path / "run", inp, direct=True, depth=10, window=5, stride=2))
    c = res.manifest.counts
    assert c["direct"].records == 10 and c["listwise"].records == len(window_spans(10, window=5, stride=2))
    assert c["comparison"].requested == 0


def test_shards_of_a_listwise_job_merge_with_their_rankings(openai_server, tmp_path):
    inp = write_input(tmp_path / "c.jsonl", candidates(4))
    for i in range(2):
        run(cfg(openai_server, tmp_path / f"s{i}", inp, shard=f"{i}/2"))
    m = merge_runs(tmp_path / "all", [tmp_path / "s0", tmp_path / "s1"])
    assert m.counts["listwise"].records == 4 * 5 and len(rankings(tmp_path / "all")) == 4


# --------------------------------------------------------------------------- bad input: exit 2, nothing written


@pytest.mark.parametrize("flags,message", [
    (["--window", "1"], "--window 1: a window must hold at least 2 passages to rank"),
    (["--window", "10", "--stride", "10"], "--stride 10 must be at least 1 and smaller than --window 10"),
    (["--window", "10", "--stride", "12"], "--stride 12 must be at least 1 and smaller than --window 10"),
    (["--window", "40", "--depth", "30"], "--window 40 is larger than --depth 30"),
    (["--window", "40", "--depth", "50"], "1 query has fewer candidates than --window 40: 'q0' (30)"),
])
def test_bad_window_settings_exit_2_and_write_nothing(openai_server, tmp_path, monkeypatch, capsys, flags, message):
    inp = write_input(tmp_path / "c.jsonl", candidates(1))
    out = tmp_path / "run"
    code, _, err = cli(monkeypatch, capsys, "generate", "-i", str(inp), "-o", str(out), "-t", "openai/loopback",
                       "--api-base", openai_server.url, "--listwise", "--depth", "30", *flags)
    err = " ".join(err.split())
    assert code == 2 and message in err and "fix:" in err
    assert not out.exists() and openai_server.requests == []


def test_window_without_listwise_is_refused(openai_server, tmp_path):
    inp = write_input(tmp_path / "c.jsonl", candidates(1))
    with pytest.raises(ConfigError, match="--window applies to listwise windows only"):
        run(cfg(openai_server, tmp_path / "run", inp, listwise=False, stride=None))


def test_a_query_shorter_than_the_window_is_named(openai_server, tmp_path):
    cands = candidates(2)
    cands[1] = cands[1].model_copy(update={"documents": cands[1].documents[:6]})
    inp = write_input(tmp_path / "c.jsonl", cands)
    with pytest.raises(InputError, match=r"fewer candidates than --window 10: 'q1' \(6\)") as ei:
        run(cfg(openai_server, tmp_path / "run", inp))
    assert "lower --window to at most 6" in str(ei.value)
    assert not (tmp_path / "run").exists()


def test_a_rerun_with_another_window_is_refused(openai_server, tmp_path):
    inp = write_input(tmp_path / "c.jsonl", candidates(1))
    run(cfg(openai_server, tmp_path / "run", inp))
    with pytest.raises(ConfigError, match="--window 10.*--window 8"):
        run(cfg(openai_server, tmp_path / "run", inp, window=8))


def test_report_plots_teacher_rank_against_first_stage_and_the_repaired_share(openai_server, tmp_path):
    from r2r_synth.report import build_report

    inp = write_input(tmp_path / "c.jsonl", candidates(2))
    openai_server.script("sand spits grow 0", {"flaw": "missing"})
    out = tmp_path / "run"
    run(cfg(openai_server, out, inp))
    res = build_report(out)
    assert "listwise_ranks" in res.plots and res.plots["listwise_ranks"].read_bytes()[:4] == b"\x89PNG"
    assert "Teacher rank vs first-stage rank (listwise)" in res.html.read_text()


def test_publish_keeps_the_window_the_first_stage_ranks_and_the_repair(openai_server, tmp_path):
    import pyarrow.parquet as pq

    from r2r_synth.publish import publish

    inp = write_input(tmp_path / "c.jsonl", candidates(1))
    openai_server.script("sand spits grow 0", {"flaw": "duplicate"})
    out = tmp_path / "run"
    run(cfg(openai_server, out, inp))
    folder = tmp_path / "hub"
    publish(out, repo_id="alice/lw", license="mit", dry_run=True, out=folder)
    rows = pq.read_table(next(folder.glob("data/listwise/*.parquet"))).to_pylist()
    by_key = {r.key: r for r in windows(out)}
    assert len(rows) == len(by_key)
    for row in rows:
        rec = by_key[row["key"]]
        assert row["window"] == rec.window.model_dump() and row["first_stage_ranks"] == rec.first_stage_ranks
        assert row["repaired"] == rec.repaired
        assert row["repair"] == (rec.repair.model_dump() if rec.repair else None)
        assert [i["relevance"] for i in row["items"]] == [i.relevance for i in rec.items]
    assert sum(r["repaired"] for r in rows) == 1
