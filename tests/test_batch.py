"""generate --batch against the loopback server's OpenAI Files and Batch APIs (tests/openai_batches.py),
through LiteLLM's real files and batches functions: the same records as online, one submission
however the client dies, failed and expired items asked again, batch prices and --max-cost, the
split at the provider's limits, listwise rounds, the dry-run plan, and configuration errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from openai_server import OpenAIServer, spawn_server
from test_generate import KEY, REPO, SAMPLE, cfg, check_run_dir, cli, lines, manifest, run

from r2r_synth.errors import BatchPending, BudgetExceeded, ConfigError, IncompleteRun, InputError
from r2r_synth.generate import merge_runs

CONTENT = ("reasoning", "relevance", "score", "preferred", "confidence", "swapped", "ranking", "items")


def contents(out: Path, kind: str) -> dict[str, tuple]:
    """key -> what the teacher said (reasoning, labels, scores), for every record of `kind`."""
    return {r["key"]: tuple(json.dumps(r.get(f), sort_keys=True) for f in CONTENT) for r in lines(out / f"{kind}.jsonl")}


def until_done(config, *, rounds: int = 10, **kw):
    """Rerun `config` while it exits pending (5) or incomplete (4), as a user's loop would; returns
    the final result and how many sessions it took."""
    for n in range(1, rounds + 1):
        try:
            return run(config, **kw), n
        except (BatchPending, IncompleteRun):
            continue
    raise AssertionError(f"not done after {rounds} sessions")


def test_batch_gives_the_same_records_and_requests_as_online(tmp_path):
    with OpenAIServer() as srv:
        run(cfg(srv, tmp_path / "online"))
        online = [dict(r) for r in srv.requests]
        n = len(srv.requests)
        with pytest.raises(BatchPending, match=r"39 requests wait in 1 provider batch"):
            run(cfg(srv, tmp_path / "batch", batch=True))
        assert manifest(tmp_path / "batch").status == "pending"
        assert not (tmp_path / "batch" / "direct.jsonl").exists() or lines(tmp_path / "batch" / "direct.jsonl") == []
        res = run(cfg(srv, tmp_path / "batch", batch=True))
        batched = srv.requests[n:]
        log = srv.behaviour.batches.log
    assert res.manifest.status == "complete"
    assert [e["event"] for e in log] == ["file", "batch"] and log[1]["items"] == 39
    for kind in ("direct", "comparison"):
        assert contents(tmp_path / "online", kind) == contents(tmp_path / "batch", kind)
    check_run_dir(tmp_path / "batch")

    # Each batch body is the request the online path sent: model, prompt, temperature, seed, format.
    def sent(reqs):
        return sorted(json.dumps([r["model"], r["user"], r["temperature"], r["seed"], r["response_format"]])
                      for r in reqs)

    assert sent(batched) == sent(online)
    m = res.manifest
    assert m.cost is None and m.usage.total_tokens > 0  # the loopback model has no price: null, not 0
    assert m.extra["batches"]["batches"][0]["status"] == "completed"
    for f in (tmp_path / "batch").rglob("*"):  # the key never reaches the run directory
        assert f.is_dir() or KEY not in f.read_text(), f


@pytest.mark.parametrize("transport", ["http", "litellm"])
def test_batch_bodies_match_either_online_transport(tmp_path, transport):
    with OpenAIServer() as srv:
        run(cfg(srv, tmp_path / "online", pairs="none", limit=1, transport=transport))
        online = {json.dumps([r["model"], r["user"], r["temperature"]]) for r in srv.requests}
        n = len(srv.requests)
        until_done(cfg(srv, tmp_path / "batch", pairs="none", limit=1, batch=True, transport=transport))
        assert {json.dumps([r["model"], r["user"], r["temperature"]]) for r in srv.requests[n:]} == online


def test_batch_prices_the_results_and_max_cost_submits_no_more_than_fits(tmp_path):
    import litellm

    priced = {"teacher": "openai/gpt-4o-mini", "pairs": "none"}
    with OpenAIServer() as srv:
        _, sessions = until_done(cfg(srv, tmp_path / "all", batch=True, **priced))
        m = manifest(tmp_path / "all")
        info = litellm.get_model_info("gpt-4o-mini")
        want = sum(r["usage"]["prompt_tokens"] * info["input_cost_per_token_batches"]
                   + r["usage"]["completion_tokens"] * info["output_cost_per_token_batches"] for r in srv.requests)
        assert sessions == 2 and m.cost == pytest.approx(want)
        assert m.cost < sum(r["usage"]["prompt_tokens"] * info["input_cost_per_token"]
                            + r["usage"]["completion_tokens"] * info["output_cost_per_token"] for r in srv.requests)
        # A cap that fits a few of the 15 requests at their estimate (prompt + a 256-token reply, about
        # $0.0001 each at batch prices), and far fewer than all of them.
        cap = 0.0005
        capped = tmp_path / "capped"
        with pytest.raises(BatchPending, match=r"more were not submitted: --max-cost \$0.0005"):
            run(cfg(srv, capped, batch=True, max_cost=cap, **priced))
        up = next(json.loads(x) for x in (capped / "batches.jsonl").read_text().splitlines() if '"upload"' in x)
        assert 0 < up["requests"] < 15 and up["est_cost"] <= cap
        assert manifest(capped).status == "pending"
        for _ in range(15):  # collect, submit what the real spend leaves room for, until nothing fits
            try:
                run(cfg(srv, capped, batch=True, max_cost=cap, **priced))
            except BatchPending:
                continue
            except BudgetExceeded as e:
                assert "requests were not submitted" in str(e)
                break
        m = manifest(capped)
        assert m.status == "stopped_budget" and 0 < m.cost <= cap and 0 < m.counts["direct"].records < 15


def test_batch_size_splits_the_requests_into_several_batches(tmp_path):
    with OpenAIServer() as srv:
        res, _ = until_done(cfg(srv, tmp_path / "run", batch=True, batch_size=10))
        log = srv.behaviour.batches.log
    assert [e["items"] for e in log if e["event"] == "batch"] == [10, 10, 10, 9]
    assert res.manifest.status == "complete" and len(check_run_dir(tmp_path / "run")) == 27


def test_a_batch_whose_every_item_failed_is_no_outage(tmp_path):
    with OpenAIServer(batch_fail_rate=1.0) as srv:
        out = tmp_path / "run"
        with pytest.raises(BatchPending):
            run(cfg(srv, out, batch=True))
        # 39 failures in a row trip no circuit breaker: each is a reject the next run asks again
        with pytest.raises(IncompleteRun, match="27 of the 27 requests of this session got no answer"):
            run(cfg(srv, out, batch=True))
        assert manifest(out).status == "incomplete" and len(lines(out / "rejects.jsonl")) == 27
        srv.behaviour.batches.fail_rate = 0.0
        res, _ = until_done(cfg(srv, out, batch=True))
    assert res.manifest.status == "complete" and len(check_run_dir(out)) == 27


def test_failed_items_are_asked_again_by_the_next_run(tmp_path):
    with OpenAIServer(batch_fail_rate=0.3, batch_seed=1) as srv:
        out = tmp_path / "run"
        with pytest.raises(BatchPending):
            run(cfg(srv, out, pairs="none", batch=True))
        with pytest.raises(IncompleteRun, match=r"got no answer"):
            run(cfg(srv, out, pairs="none", batch=True))
        rejects = lines(out / "rejects.jsonl")
        assert rejects and {r["cause"] for r in rejects} == {"transport"}
        assert all("the batch item failed" in r["reason"] for r in rejects)
        failed = {r["key"] for r in rejects}
        res, _ = until_done(cfg(srv, out, pairs="none", batch=True))
        items = [e["items"] for e in srv.behaviour.batches.log if e["event"] == "batch"]
    assert items[0] == 15 and items[1] == len(failed)  # the next submission is the failed ones, nothing else
    assert res.manifest.status == "complete" and len(check_run_dir(out)) == 15
    assert len(srv.requests) == 15  # a failed item was never answered, so nothing was answered twice


def test_an_expired_batch_keeps_what_ran_and_asks_the_rest_again(tmp_path):
    with OpenAIServer(batch_delay=60) as srv:
        out = tmp_path / "run"
        with pytest.raises(BatchPending, match="validating|in_progress|submitted"):
            run(cfg(srv, out, pairs="none", batch=True))
        with pytest.raises(BatchPending, match="in_progress"):  # polled: still running
            run(cfg(srv, out, pairs="none", batch=True))
        (bid,) = srv.behaviour.batches.batches
        srv.behaviour.batches.expire(bid, keep=6)
        with pytest.raises(IncompleteRun, match="9 of the 15 requests"):
            run(cfg(srv, out, pairs="none", batch=True))
        assert len(lines(out / "direct.jsonl")) == 6
        reasons = {r["reason"] for r in lines(out / "rejects.jsonl")}
        assert reasons == {("transport: the batch item failed: batch_expired: This request could not be executed "
                           "before the completion window expired.")}
        srv.behaviour.batches.batch_delay = 0
        res, _ = until_done(cfg(srv, out, pairs="none", batch=True))
    assert res.manifest.status == "complete" and len(lines(out / "direct.jsonl")) == 15


def test_an_unusable_reply_is_asked_again_in_the_next_batch(tmp_path):
    with OpenAIServer() as srv:
        srv.script("Hard-boiled", {"content": "no fields here"})  # one direct prompt, the first time only
        out = tmp_path / "run"
        with pytest.raises(BatchPending):
            run(cfg(srv, out, pairs="none", limit=1, batch=True))
        with pytest.raises(BatchPending, match="1 requests wait"):  # the re-ask went into a second batch
            run(cfg(srv, out, pairs="none", limit=1, batch=True))
        res = run(cfg(srv, out, pairs="none", limit=1, batch=True))
        ids = [json.loads(x)["items"] for x in (out / "batches.jsonl").read_text().splitlines()
               if json.loads(x)["t"] == "upload"]
    assert res.manifest.status == "complete" and len(lines(out / "direct.jsonl")) == 5
    assert len(ids) == 2 and ids[1][0][0].endswith("~1")  # the re-ask has its own custom_id
    assert len(srv.requests) == 6  # the unusable reply was paid for and counted, and asked again once
    assert res.manifest.usage.total_tokens == sum(r["usage"]["total_tokens"] for r in srv.requests)


def test_retry_rejects_asks_a_rejected_reply_again_in_a_batch(tmp_path):
    with OpenAIServer() as srv:
        srv.script("Hard-boiled", {"content": "no fields here"})
        out = tmp_path / "run"
        base = {"pairs": "none", "limit": 1, "batch": True, "parse_retries": 0}
        res, _ = until_done(cfg(srv, out, **base))
        (rej,) = lines(out / "rejects.jsonl")
        assert res.manifest.status == "complete" and rej["cause"] == "reply" and rej["raw"] == "no fields here"
        with pytest.raises(BatchPending, match="1 requests wait"):  # the kept unusable reply is not reused
            run(cfg(srv, out, retry_rejects=True, **base))
        res = run(cfg(srv, out, **base))
    assert res.manifest.status == "complete" and lines(out / "rejects.jsonl") == []
    assert len(lines(out / "direct.jsonl")) == 5 and len(srv.requests) == 6


def test_listwise_windows_go_one_round_per_batch(tmp_path):
    lw = {"listwise": True, "window": 3, "stride": 1, "depth": 5, "limit": 2, "pairs": "none"}
    with OpenAIServer() as srv:
        run(cfg(srv, tmp_path / "online", **lw))
        res, sessions = until_done(cfg(srv, tmp_path / "batch", batch=True, **lw))
        rounds = [e["items"] for e in srv.behaviour.batches.log if e["event"] == "batch"]
    assert rounds == [2, 2, 2] and sessions == 4  # 3 windows a query: one round per batch, then the collect
    assert contents(tmp_path / "online", "listwise") == contents(tmp_path / "batch", "listwise")
    rank = {r["key"]: r["ranking"] for r in lines(tmp_path / "online" / "rankings.jsonl")}
    assert rank == {r["key"]: r["ranking"] for r in lines(tmp_path / "batch" / "rankings.jsonl")}
    assert res.manifest.status == "complete"


def test_dry_run_prints_the_batch_plan_and_asks_nobody(tmp_path, monkeypatch, capsys):
    with OpenAIServer() as srv:
        res = run(cfg(srv, tmp_path / "run", batch=True, batch_size=10, dry_run=True))
        plan = res.estimate.batch
        assert plan["calls"] == 39 and plan["files"] == 4 and plan["requests_per_file"] == [10, 10, 10, 9]
        assert plan["rounds"] == 1 and plan["provider"] == "openai" and plan["cost"] is None
        lw = run(cfg(srv, tmp_path / "run", batch=True, dry_run=True, listwise=True, window=3, stride=1,
                     pairs="none")).estimate
        assert lw.batch["rounds"] == 3 and lw.batch["calls"] == 3
        code, out, err = cli(monkeypatch, capsys, "generate", "-i", str(SAMPLE), "-o", str(tmp_path / "run"), "-t",
                             "openai/gpt-4o-mini", "--api-base", srv.url, "--batch", "--dry-run", "--depth", "5")
        printed = " ".join((out + err).split())
        assert code == 0 and "next submission (openai batches) │ 39 requests in 1 file(s)" in printed
        assert "cost at batch prices (every round) │ $0.0" in printed
        assert srv.requests == [] and srv.behaviour.batches.log == [] and not (tmp_path / "run").exists()


def test_batch_configuration_errors_name_the_fix(tmp_path, monkeypatch, capsys):
    with OpenAIServer() as srv:
        with pytest.raises(ConfigError, match="no batch API for provider 'anthropic'") as e:
            run(cfg(srv, tmp_path / "a", teacher="anthropic/claude-sonnet-4-5", api_base=None, batch=True))
        assert "--export-batch" in e.value.hint
        with pytest.raises(ConfigError, match="batches need --teacher"):
            run(cfg(srv, tmp_path / "b", teacher=None, api_base=None, batch=True))
        router = tmp_path / "router.yaml"
        router.write_text("model_list: []\n")
        with pytest.raises(ConfigError, match="a --router spreads requests"):
            run(cfg(srv, tmp_path / "c", router=router, batch=True))
        with pytest.raises(ConfigError, match="--batch and --export-batch cannot be given together"):
            run(cfg(srv, tmp_path / "d", batch=True, export_batch=tmp_path / "x.jsonl"))
        with pytest.raises(ConfigError, match="--batch-size applies to --batch, --export-batch and --ray only"):
            run(cfg(srv, tmp_path / "e", batch_size=5))
        with pytest.raises(ConfigError, match="not priced at batch prices"):
            run(cfg(srv, tmp_path / "f", batch=True, max_cost=1.0))
        code, _, err = cli(monkeypatch, capsys, "generate", "-i", str(SAMPLE), "-o", str(tmp_path / "g"),
                           "-t", "anthropic/claude-sonnet-4-5", "--batch")
        assert code == 2 and "--export-batch" in " ".join(err.split())
        assert srv.requests == [] and srv.behaviour.batches.log == []
        assert not any((tmp_path / x).exists() for x in "abcdefg")


def test_an_online_run_is_refused_while_batches_are_out(tmp_path, monkeypatch, capsys):
    with OpenAIServer(batch_delay=60) as srv:
        out = tmp_path / "run"
        code, _, err = cli(monkeypatch, capsys, "generate", "-i", str(SAMPLE), "-o", str(out), "-t", "openai/loopback",
                           "--api-base", srv.url, "--api-key", KEY, "--depth", "5", "--batch")
        assert code == 5 and "rerun the same command later" in " ".join(err.split())
        n = len(srv.requests)
        with pytest.raises(ConfigError, match="are in 1 provider batch"):
            run(cfg(srv, out))
        with pytest.raises(ConfigError, match="are in 1 provider batch"):
            run(cfg(srv, out, export_batch=tmp_path / "x.jsonl"))
        assert len(srv.requests) == n and not (tmp_path / "x.jsonl").exists()
        with pytest.raises(InputError, match="39 requests are in provider batches not collected yet"):
            merge_runs(tmp_path / "merged", [out])
        assert not (tmp_path / "merged").exists()


def test_a_kill_between_create_and_its_id_never_submits_twice(tmp_path):
    """SIGKILL while the provider holds the reply to the create: the batch exists, its id never
    reached the run directory; the next run finds it by its input file instead of creating another."""
    log = tmp_path / "server.jsonl"
    out = tmp_path / "run"
    with spawn_server(log_path=str(log), batch_create_hold=30) as url:
        env = {**os.environ, "R2R_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "r2r_synth.cli", "generate", "-i", str(SAMPLE), "-o", str(out),
                                 "-t", "openai/loopback", "--api-base", url, "--depth", "5", "--batch"],
                                env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not any('"event": "batch"' in x for x in (log.read_text().splitlines() if log.exists() else [])):
                assert time.monotonic() < deadline and proc.poll() is None, "the batch was never created"
                time.sleep(0.1)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(10)
        events = [json.loads(x)["t"] for x in (out / "batches.jsonl").read_text().splitlines()]
        assert events == ["upload", "creating"]  # killed before it learned the batch id
        res, _ = until_done(cfg(SimpleNamespace(url=url), out, batch=True))
    server_batches = [json.loads(x)["batch_event"] for x in log.read_text().splitlines() if "batch_event" in x]
    assert [e["event"] for e in server_batches] == ["file", "batch"]  # one upload, one submission
    events = [json.loads(x)["t"] for x in (out / "batches.jsonl").read_text().splitlines()]
    assert events == ["upload", "creating", "batch", "collected"]
    assert res.manifest.status == "complete" and len(check_run_dir(out)) == 27
