"""The engine against a real loopback OpenAI-compatible HTTP server, through LiteLLM (and through
the direct HTTP transport): records, retries, rejects, resume, budget, dry run, shards, merge, CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from r2r_synth.config import GenerateConfig
from r2r_synth.errors import BudgetExceeded, ConfigError, IncompleteRun, InputError, TeacherError
from r2r_synth.generate import generate, merge_runs
from r2r_synth.io.jsonl import read_jsonl
from r2r_synth.schemas import ComparisonRecord, DirectRecord, Manifest, Reject

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample_candidates.jsonl"
KEY = "sk-test-secret-0123456789"


def cfg(srv, out: Path, **kw) -> GenerateConfig:
    base = {"input": str(SAMPLE), "out": out, "teacher": "openai/loopback", "api_base": srv.url, "api_key": KEY,
            "depth": 5, "pairs": "adjacent", "concurrency": 8, "programs_dir": REPO / "programs",
            "transport": "litellm", "max_retries": 3, "timeout": 10}
    base.update(kw)
    return GenerateConfig(**base)


def run(config: GenerateConfig, **kw):
    return generate(config, backoff_base=0.01, backoff_cap=0.05, **kw)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def manifest(out: Path) -> Manifest:
    return Manifest.model_validate_json((out / "manifest.json").read_text())


def check_run_dir(out: Path) -> set[str]:
    """Every request in exactly one file, counts equal line counts, no duplicate keys."""
    m = manifest(out)
    keys: list[str] = []
    for kind in ("direct", "comparison"):
        recs = lines(out / f"{kind}.jsonl")
        assert m.counts[kind].records == len(recs)
        keys += [r["key"] for r in recs]
    rejects = lines(out / "rejects.jsonl")
    keys += [r["key"] for r in rejects]
    assert len(keys) == len(set(keys)), "a key appears twice"
    for kind in ("direct", "comparison"):
        assert m.counts[kind].rejects == sum(1 for r in rejects if r["kind"] == kind)
        assert m.counts[kind].requested == m.counts[kind].records + m.counts[kind].rejects
    return set(keys)


@pytest.mark.parametrize("transport", ["litellm", "http"])
def test_generate_writes_valid_records(openai_server, tmp_path, transport):
    out = tmp_path / "run"
    res = run(cfg(openai_server, out, transport=transport))
    direct = list(read_jsonl(out / "direct.jsonl", DirectRecord))
    comp = list(read_jsonl(out / "comparison.jsonl", ComparisonRecord))
    assert len(direct) == 15 and len(comp) == 12  # 3 queries x 5 docs; 3 x 4 adjacent pairs
    assert len(openai_server.requests) == 15 + 2 * 12  # each pair asked in both orders
    check_run_dir(out)
    d = next(r for r in direct if r.document.docid == "ex1-d1")
    assert d.gold == 3 and d.first_stage_rank == 1
    assert d.provenance.teacher == "openai/loopback" and d.provenance.usage.total_tokens > 0
    assert d.provenance.cost is None  # the loopback model is not in LiteLLM's cost map: unknown, not 0
    c = comp[0]
    assert c.swapped is not None and c.swap_agrees == (c.swapped.preferred == c.preferred)
    assert c.pair_strategy == "adjacent" and c.gold_a is not None
    m = res.manifest
    assert m.status == "complete" and m.teacher == "openai/loopback" and m.cost is None
    assert m.programs["direct"] == d.provenance.program_hash
    assert m.extra["teacher"]["transport"] == transport
    # the key never reaches the run directory
    for f in out.rglob("*"):
        assert f.is_dir() or KEY not in f.read_text(), f
    assert json.loads((out / "config.json").read_text())["api_key"] == "***"
    # what the server saw is DSPy's ChatAdapter prompt with the prompts/direct.md instructions
    first = openai_server.requests[0]
    assert "[[ ## document ## ]]" in first["user"] or "[[ ## document_a ## ]]" in first["user"]


def test_rerun_resumes_and_never_asks_twice(openai_server, tmp_path):
    out = tmp_path / "run"
    run(cfg(openai_server, out, limit=2))
    n_first = len(openai_server.requests)
    keys_first = check_run_dir(out)
    res = run(cfg(openai_server, out))  # same command without --limit: only the third query is new
    assert len(openai_server.requests) - n_first == 5 + 2 * 4
    keys = check_run_dir(out)
    assert keys_first < keys and len(keys) == 27
    assert res.manifest.counts["direct"].skipped_done == 10
    assert len(res.manifest.extra["sessions"]) == 2
    n = len(openai_server.requests)
    run(cfg(openai_server, out))
    assert len(openai_server.requests) == n  # everything done: nobody is asked


def test_torn_last_line_is_redone(openai_server, tmp_path):
    out = tmp_path / "run"
    run(cfg(openai_server, out, pairs="none"))
    text = (out / "direct.jsonl").read_text()
    cut = text[: text.rstrip("\n").rfind("\n") + 1] + text.rstrip("\n").rsplit("\n", 1)[1][:40]  # a crash mid-line
    (out / "direct.jsonl").write_text(cut)
    n = len(openai_server.requests)
    run(cfg(openai_server, out, pairs="none"))
    assert len(openai_server.requests) == n + 1
    assert len(check_run_dir(out)) == 15


@pytest.mark.parametrize("transport", ["litellm", "http"])
def test_429_and_500_are_retried(openai_server, tmp_path, transport):
    openai_server.script("six to seven minutes", {"status": 429}, {"status": 500}, {"status": 503})
    out = tmp_path / "run"
    res = run(cfg(openai_server, out, pairs="none", transport=transport))
    assert res.manifest.counts["direct"].records == 15 and res.manifest.counts["direct"].rejects == 0
    hits = [r for r in openai_server.requests if "six to seven minutes" in r["user"]]
    assert [h["action"] for h in hits] == [{"status": 429}, {"status": 500}, {"status": 503}, "ok"]
    assert res.progress.retries == 3


def test_timeouts_are_retried(openai_server, tmp_path):
    openai_server.script("northern lights, or aurora", {"sleep": 3})
    res = run(cfg(openai_server, tmp_path / "run", pairs="none", timeout=0.5))
    assert res.manifest.counts["direct"].records == 15
    assert res.progress.retries >= 1


def test_exhausted_transient_retries_are_rejected_then_retried_by_the_next_run(openai_server, tmp_path):
    openai_server.script("dict.fromkeys", *[{"status": 500}] * 3)
    out = tmp_path / "run"
    with pytest.raises(IncompleteRun, match="1 of the 15 requests of this session got no answer"):
        run(cfg(openai_server, out, pairs="none", max_retries=2))
    assert manifest(out).status == "incomplete"
    rej = list(read_jsonl(out / "rejects.jsonl", Reject))
    assert len(rej) == 1 and rej[0].reason.startswith("transport: gave up after 3 attempts")
    assert rej[0].cause == "transport" and rej[0].retryable
    assert rej[0].inputs["docid"] == "ex3-d1" and rej[0].attempts == 3
    check_run_dir(out)
    run(cfg(openai_server, out, pairs="none", max_retries=2))  # the server has recovered
    assert lines(out / "rejects.jsonl") == []
    assert len(check_run_dir(out)) == 15


@pytest.mark.parametrize("transport", ["litellm", "http"])
def test_garbage_goes_to_rejects_with_reason_and_raw(openai_server, tmp_path, transport):
    openai_server.script("Chickens lay eggs", {"content": "I like turtles"}, {"content": "still not a record"})
    openai_server.script("cannabis strain", {"content": "[[ ## reasoning ## ]]\nok\n\n[[ ## relevance ## ]]\n7\n\n"
                                             "[[ ## score ## ]]\n0.5\n\n[[ ## completed ## ]]"},
                         {"content": "[[ ## reasoning ## ]]\nok\n\n[[ ## relevance ## ]]\n9\n\n"
                                     "[[ ## score ## ]]\n0.5\n\n[[ ## completed ## ]]"})
    out = tmp_path / "run"
    res = run(cfg(openai_server, out, pairs="none", transport=transport))
    rejects = {r.inputs["docid"]: r for r in read_jsonl(out / "rejects.jsonl", Reject)}
    assert set(rejects) == {"ex1-d3", "ex2-d3"}
    assert rejects["ex1-d3"].reason.startswith("unparseable reply") and rejects["ex1-d3"].raw == "still not a record"
    assert rejects["ex1-d3"].attempts == 2  # one more ask (--parse-retries 1), then rejected
    assert rejects["ex2-d3"].reason.startswith("invalid reply: relevance")
    assert res.manifest.counts["direct"].records == 13 and res.manifest.counts["direct"].rejects == 2
    check_run_dir(out)
    n = len(openai_server.requests)
    run(cfg(openai_server, out, pairs="none"))
    assert len(openai_server.requests) == n  # a rejected key is done ...
    run(cfg(openai_server, out, pairs="none", retry_rejects=True))
    assert len(openai_server.requests) == n + 2  # ... unless --retry-rejects
    assert lines(out / "rejects.jsonl") == [] and len(check_run_dir(out)) == 15


def test_garbage_then_valid_is_recovered_by_a_parse_retry(openai_server, tmp_path):
    openai_server.script("Chickens lay eggs", {"content": "garbage"})
    res = run(cfg(openai_server, tmp_path / "run", pairs="none"))
    assert res.manifest.counts["direct"].records == 15


def test_bad_key_stops_the_run_as_a_teacher_error(openai_server, tmp_path):
    for _ in range(40):
        openai_server.script("", {"status": 401, "message": "invalid api key"})
    out = tmp_path / "run"
    with pytest.raises(TeacherError, match="refused the request"):
        run(cfg(openai_server, out, pairs="none", concurrency=2))
    assert manifest(out).status == "failed"
    assert len(openai_server.requests) <= 4  # it stops at once instead of hammering the server


def test_budget_stops_cleanly_and_a_larger_budget_resumes(openai_server, tmp_path):
    out = tmp_path / "run"
    c = cfg(openai_server, out, teacher="openai/gpt-4o-mini", pairs="none", concurrency=1, max_cost=0.0004)
    with pytest.raises(BudgetExceeded, match="stopped at the budget") as ei:
        run(c)
    assert ei.value.exit_code == 3
    m = manifest(out)
    assert m.status == "stopped_budget" and 0 < m.cost <= 0.0004
    done = m.counts["direct"].records
    assert 0 < done < 15
    recs = lines(out / "direct.jsonl")
    assert all(r["provenance"]["cost"] > 0 for r in recs)
    assert sum(r["provenance"]["cost"] for r in recs) == pytest.approx(m.cost)
    res = run(c.model_copy(update={"max_cost": 1.0}))
    assert res.manifest.status == "complete" and res.manifest.counts["direct"].records == 15
    assert len(openai_server.requests) == 15


def test_max_cost_needs_a_priced_teacher(openai_server, tmp_path):
    with pytest.raises(ConfigError, match="--max-cost needs a teacher LiteLLM can price"):
        run(cfg(openai_server, tmp_path / "run", max_cost=1.0))
    assert not (tmp_path / "run").exists()


def test_dry_run_asks_nobody_and_writes_nothing(openai_server, tmp_path):
    res = run(cfg(openai_server, tmp_path / "run", teacher="openai/gpt-4o", dry_run=True))
    est = res.estimate
    assert est.requests == {"direct": 15, "comparison": 12} and est.calls == 39
    assert est.prompt_tokens > 39 * 200 and est.cost is not None and est.cost > 0
    assert openai_server.requests == [] and not (tmp_path / "run").exists()


def test_rate_limit_spaces_requests(openai_server, tmp_path):
    run(cfg(openai_server, tmp_path / "run", pairs="none", limit=1, rpm=300))  # one start per 0.2 s
    t = sorted(r["t"] for r in openai_server.requests)
    assert len(t) == 5 and t[-1] - t[0] >= 4 * 0.2 * 0.9


def test_rollouts_need_temperature(openai_server, tmp_path):
    with pytest.raises(ConfigError, match="--temperature above 0"):
        run(cfg(openai_server, tmp_path / "run", rollouts=3))


def test_rollouts_are_distinct_keys(openai_server, tmp_path):
    out = tmp_path / "run"
    run(cfg(openai_server, out, pairs="none", limit=1, rollouts=2, temperature=0.7))
    recs = lines(out / "direct.jsonl")
    assert sorted(r["provenance"]["rollout_id"] for r in recs) == [0] * 5 + [1] * 5
    assert len({r["key"] for r in recs}) == 10
    assert {r["temperature"] for r in openai_server.requests} == {0.7}
    assert len({r["seed"] for r in openai_server.requests}) == 2  # one seed per rollout


def test_shards_merge_into_the_full_run(openai_server, tmp_path):
    full = tmp_path / "full"
    run(cfg(openai_server, full))
    full_keys = check_run_dir(full)
    shards = []
    for i in range(2):
        d = tmp_path / f"shard{i}"
        run(cfg(openai_server, d, shard=f"{i}/2"))
        shards.append(d)
    merged = tmp_path / "merged"
    m = merge_runs(merged, shards)
    assert check_run_dir(merged) == full_keys
    assert m.counts["direct"].records == 15 and m.extra["overlapping_keys"] == 0
    # the same shard twice is an overlap, not a duplicate
    m2 = merge_runs(tmp_path / "merged2", [shards[0], shards[0], shards[1]])
    assert m2.extra["overlapping_keys"] > 0 and m2.counts["direct"].records == 15
    # a record that disagrees for the same key is a conflict; nothing is written
    recs = lines(shards[1] / "direct.jsonl")
    recs[0]["relevance"] = (recs[0]["relevance"] + 1) % 4
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text((shards[1] / "manifest.json").read_text())
    (bad / "direct.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(InputError, match="conflicting direct records for key"):
        merge_runs(tmp_path / "merged3", [shards[1], bad])
    assert not (tmp_path / "merged3").exists()


def test_router_config_spreads_over_deployments(openai_server, tmp_path):
    router = tmp_path / "router.json"
    router.write_text(json.dumps({
        "model_list": [
            {"model_name": "teacher", "litellm_params": {"model": "openai/replica-1", "api_base": openai_server.url,
                                                         "api_key": KEY, "rpm": 600}},
            {"model_name": "teacher", "litellm_params": {"model": "openai/replica-2", "api_base": openai_server.url,
                                                         "api_key": KEY, "rpm": 600}},
        ],
        "router_settings": {"routing_strategy": "simple-shuffle"},
    }))
    out = tmp_path / "run"
    res = run(cfg(openai_server, out, teacher=None, api_base=None, router=router, pairs="none"))
    assert res.manifest.teacher == "teacher" and res.manifest.counts["direct"].records == 15
    assert {r["model"] for r in openai_server.requests} <= {"replica-1", "replica-2"}
    assert KEY not in (out / "manifest.json").read_text()
    with pytest.raises(ConfigError, match="is not a model_name in"):
        run(cfg(openai_server, tmp_path / "run2", teacher="gpt-4o", api_base=None, router=router))


# --------------------------------------------------------------------------- CLI


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from r2r_synth import cli as cli_mod

    monkeypatch.setattr(sys, "argv", ["r2r-synth", *args])
    with pytest.raises(SystemExit) as ei:
        cli_mod.main()
        raise SystemExit(0)
    cap = capsys.readouterr()
    return ei.value.code or 0, cap.out, cap.err


def test_cli_malformed_input_line_exits_2_and_writes_nothing(openai_server, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "cands.jsonl"
    good = SAMPLE.read_text().splitlines()
    bad.write_text(good[0] + "\n" + good[1].replace('"qid":"ex2"', '"qid":"ex2","colour":"red"') + "\n")
    out = tmp_path / "run"
    code, _, err = cli(monkeypatch, capsys, "generate", "-i", str(bad), "-o", str(out), "-t", "openai/loopback",
                       "--api-base", openai_server.url)
    assert code == 2
    assert f"{bad}:2:" in " ".join(err.split())
    assert not out.exists() and openai_server.requests == []


def test_cli_generate_prints_summary_and_resumes(openai_server, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = ["generate", "-i", str(SAMPLE), "-o", str(out), "-t", "openai/loopback", "--api-base", openai_server.url,
            "--depth", "3", "--pairs", "none", "--api-key", KEY]
    code, stdout, err = cli(monkeypatch, capsys, *args)
    assert code == 0 and stdout.strip() == str(out)
    assert "requested" in err and "complete" in err
    code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 0 and len(openai_server.requests) == 9
    assert KEY not in manifest(out).command and "***" in manifest(out).command


def test_cli_budget_exit_code_3(openai_server, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    code, _, err = cli(monkeypatch, capsys, "generate", "-i", str(SAMPLE), "-o", str(out), "-t", "openai/gpt-4o",
                       "--api-base", openai_server.url, "--api-key", KEY, "--pairs", "none", "-c", "1",
                       "--max-cost", "0.002")
    assert code == 3 and "stopped at the budget" in err and "larger --max-cost" in " ".join(err.split())
    assert manifest(out).status == "stopped_budget"


def test_cli_merge(openai_server, tmp_path, monkeypatch, capsys):
    for i in range(2):
        run(cfg(openai_server, tmp_path / f"s{i}", shard=f"{i}/2", pairs="none"))
    code, _, _ = cli(monkeypatch, capsys, "merge", str(tmp_path / "m"), str(tmp_path / "s0"), str(tmp_path / "s1"))
    assert code == 0 and manifest(tmp_path / "m").counts["direct"].records == 15


# --------------------------------------------------------------------------- embedded teacher


@pytest.mark.slow
def test_embedded_teacher_end_to_end_on_two_queries(tmp_path):
    pytest.importorskip("llama_cpp")
    from r2r_synth.teacher.embedded import EMBEDDED_NAME, gguf_path

    try:
        gguf_path()
    except ConfigError as e:
        pytest.skip(str(e))
    out = tmp_path / "run"
    res = generate(GenerateConfig(input=str(SAMPLE), out=out, limit=2, depth=2, pairs="adjacent",
                                  programs_dir=REPO / "programs"))
    m = res.manifest
    assert m.teacher == EMBEDDED_NAME and m.status == "complete"
    assert m.extra["teacher"]["transport"] == "litellm"  # the embedded teacher is reached through LiteLLM
    keys = check_run_dir(out)
    assert len(keys) == 2 * 2 + 2 * 1
    assert m.counts["direct"].records + m.counts["comparison"].records >= 0.9 * len(keys)


# --------------------------------------------------------------------------- open_teacher for DSPy code


@pytest.mark.parametrize("use_router", [False, True])
def test_open_teacher_lm_runs_a_dspy_program(openai_server, tmp_path, use_router):
    import dspy

    from r2r_synth.teacher.lm import open_teacher
    from r2r_synth.teacher.programs import build_program

    router = None
    if use_router:
        router = tmp_path / "router.yaml"
        router.write_text(f"model_list:\n  - model_name: t\n    litellm_params:\n      model: openai/replica\n"
                          f"      api_base: {openai_server.url}\n      api_key: {KEY}\n")
    with open_teacher(None if use_router else "openai/loopback", api_base=None if use_router else openai_server.url,
                      api_key=None if use_router else KEY, router=router) as t:
        assert KEY not in json.dumps(t.public_dict())
        with dspy.context(lm=t.lm, adapter=t.adapter):
            pred = build_program("direct")(query="how long to boil an egg", document="Six minutes for a soft yolk.")
    assert pred.relevance in (0, 1, 2, 3) and 0 <= pred.score <= 1
    assert openai_server.requests[-1]["model"] == ("replica" if use_router else "loopback")


def test_bad_router_config(tmp_path):
    from r2r_synth.teacher.router import read_router_config

    p = tmp_path / "r.yaml"
    p.write_text("model_list: []\n")
    with pytest.raises(ConfigError, match="needs a non-empty `model_list`"):
        read_router_config(p)
    p.write_text("model_list:\n  - model_name: t\n")
    with pytest.raises(ConfigError, match=r"model_list\[0\] needs `model_name` and `litellm_params.model`"):
        read_router_config(p)


def test_self_hosted_server_without_a_key_through_litellm(openai_server, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    res = run(cfg(openai_server, tmp_path / "run", api_key=None, transport="litellm", pairs="none", limit=1))
    assert res.manifest.counts["direct"].records == 5
