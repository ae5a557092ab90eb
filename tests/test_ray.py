"""generate --ray: the requests as a Ray Data dataset asked by Ray Data LLM's HTTP processor on a
local Ray (started once for this module, 2 CPUs, no dashboard), against the loopback OpenAI
server; the driver writes the run. The same records as online, resume, a failed request, a
re-ask after an unusable reply, --max-cost at the driver, listwise rounds, a worker killed mid-run,
--dry-run's plan, and every bad input refused with exit 2 before anything is written."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data.llm")

from openai_server import OpenAIServer, listwise_score
from test_batch import contents
from test_generate import SAMPLE, cfg, check_run_dir, cli, lines, manifest, run

from r2r_synth.errors import BudgetExceeded, ConfigError, IncompleteRun


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One small Ray for the module (the runner joins a Ray this process already started)."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def srv():
    with OpenAIServer(latency=0.01) as s:
        yield s


def asked(server, since: int) -> list[dict]:
    return server.requests[since:]


def test_ray_writes_the_online_records_and_a_rerun_asks_only_what_is_new(srv, tmp_path):
    run(cfg(srv, tmp_path / "online"))
    n0 = len(srv.requests)
    out = tmp_path / "ray"
    res = run(cfg(srv, out, ray=True, limit=2))
    assert res.manifest.status == "complete" and len(asked(srv, n0)) == 10 + 2 * 2 * 4
    n1 = len(srv.requests)
    res = run(cfg(srv, out, ray=True))  # the third query only
    assert len(asked(srv, n1)) == 5 + 2 * 4
    for kind in ("direct", "comparison"):
        assert contents(tmp_path / "online", kind) == contents(out, kind)
    check_run_dir(out)
    m = res.manifest
    assert m.status == "complete" and m.counts["direct"].records == 15 and m.counts["comparison"].records == 12
    ray_side = m.extra["batches"]["ray"]
    assert ray_side["address"] == "local" and ray_side["replicas"] == 1  # --concurrency 8: one actor carries it
    assert [r["requests"] for r in ray_side["rounds"]] == [13] and ray_side["rounds"][0]["failed"] == 0
    assert m.usage.total_tokens > 0 and m.cost is None  # the loopback model is unpriced: unknown, not 0
    n2 = len(srv.requests)
    res = run(cfg(srv, out, ray=True))
    assert len(srv.requests) == n2 and res.manifest.counts["direct"].skipped_done == 15


def test_a_failed_request_is_rejected_and_an_unusable_reply_is_asked_again(srv, tmp_path):
    srv.script("six to seven minutes", *[{"status": 500}])  # not retried by Ray's HTTP stage: its error comes back
    srv.script("Chickens lay eggs", {"content": "I like turtles"})  # the re-ask (round 2) gets a valid answer
    out = tmp_path / "run"
    with pytest.raises(IncompleteRun, match="1 of the 15 requests of this session got no answer"):
        run(cfg(srv, out, ray=True, pairs="none"))
    rejects = lines(out / "rejects.jsonl")
    assert len(rejects) == 1 and rejects[0]["cause"] == "transport" and rejects[0]["inputs"]["docid"] == "ex1-d1"
    assert "the endpoint answered with an error" in rejects[0]["reason"]
    rounds = manifest(out).extra["batches"]["ray"]["rounds"]
    assert [r["requests"] for r in rounds] == [15, 1]  # the turtles reply was asked again in a round of its own
    n = len(srv.requests)
    res = run(cfg(srv, out, ray=True, pairs="none"))  # the rerun asks the failed request, nothing else
    assert len(srv.requests) == n + 1 and res.manifest.counts["direct"].records == 15
    assert lines(out / "rejects.jsonl") == []
    check_run_dir(out)


def test_max_cost_is_counted_at_the_driver(srv, tmp_path):
    out = tmp_path / "run"
    priced = {"teacher": "openai/gpt-4o-mini", "pairs": "none", "batch_size": 4}
    with pytest.raises(BudgetExceeded, match="stopped at the budget"):
        run(cfg(srv, out, ray=True, max_cost=0.0006, **priced))
    m = manifest(out)
    assert m.status == "stopped_budget" and 0 < m.counts["direct"].records < 15
    assert m.cost <= 0.0006  # each round takes what fits under the cap at its estimate
    res = run(cfg(srv, out, ray=True, max_cost=1.0, **priced))
    assert res.manifest.counts["direct"].records == 15
    check_run_dir(out)


def test_listwise_windows_take_one_round_each_and_rank_as_online(srv, tmp_path):
    from test_listwise_generate import candidates, rankings, write_input
    from test_listwise_generate import cfg as lw_cfg

    cands = candidates(n_queries=2, depth=15)
    inp = write_input(tmp_path / "c.jsonl", cands)
    run(lw_cfg(srv, tmp_path / "online", inp, depth=15))
    out = tmp_path / "ray"
    res = run(lw_cfg(srv, out, inp, depth=15, ray=True))
    assert [r["requests"] for r in res.manifest.extra["batches"]["ray"]["rounds"]] == [2, 2]  # 2 windows a query
    online, on_ray = rankings(tmp_path / "online"), rankings(out)
    for c in cands:
        assert on_ray[c.query.qid].ranking == online[c.query.qid].ranking
        best = max(c.documents, key=lambda d: listwise_score(c.query.text, d.full_text()))
        assert on_ray[c.query.qid].ranking[0] == best.docid
    assert contents(tmp_path / "online", "listwise") == contents(out, "listwise")


def _ray_workers() -> set[int]:
    """PIDs of this Ray's actors that ask the endpoint (Ray titles them after their stage)."""
    import psutil

    out = set()
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        title = " ".join([p.info["name"] or "", *(p.info["cmdline"] or [])])
        if "HttpRequestUDF" in title:
            out.add(p.info["pid"])
    return out


def test_a_worker_killed_mid_run_is_retried_and_every_key_is_written_once(tmp_path):
    from test_listwise_generate import candidates, write_input

    inp = write_input(tmp_path / "c.jsonl", candidates(n_queries=3, depth=30))
    killed: list[int] = []
    with OpenAIServer(latency=0.05) as slow:
        def kill_one() -> None:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not killed:
                workers = _ray_workers()
                if len(slow.requests) >= 20 and workers:
                    pid = min(workers)
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                time.sleep(0.05)

        t = threading.Thread(target=kill_one, daemon=True)
        t.start()
        res = run(cfg(slow, tmp_path / "run", input=str(inp), ray=True, depth=30, pairs="none", concurrency=4,
                      batch_size=4))
        n = len(slow.requests)
        killed.append(0)  # stops the thread if it found nothing
        t.join()
    assert killed[0] != 0, "no Ray worker was found to kill"
    m = res.manifest
    assert m.status == "complete" and m.counts["direct"].records == 90 and m.counts["direct"].rejects == 0
    assert len(check_run_dir(tmp_path / "run")) == 90
    assert n >= 90  # the killed worker's block was asked again; each key was written once


def test_dry_run_shows_the_plan_and_starts_nothing(monkeypatch, capsys, tmp_path):
    code, out, err = cli(monkeypatch, capsys, "generate", "-i", str(SAMPLE), "-o", str(tmp_path / "run"), "-t",
                         "hosted_vllm/Qwen/Qwen2.5-7B-Instruct", "--api-base", "http://127.0.0.1:9/v1,http://127.0.0.1:10/v1",
                         "--ray", "--depth", "5", "--dry-run", "--batch-size", "8")
    text = " ".join((out + err).split())
    assert code == 0, err
    assert "39 requests in 5 blocks of 8" in text and "replicas (2 endpoint(s)) │ 2" in text
    assert not (tmp_path / "run").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(("args", "match"), [
    (["-t", "openai/loopback", "--ray", "--batch"], "--batch and --ray cannot be given together"),
    (["-t", "openai/loopback", "--ray", "--export-batch", "x.jsonl"], "--export-batch and --ray cannot be given"),
    (["--ray"], "--ray needs --teacher"),
    (["-t", "anthropic/claude-3-5-haiku-latest", "--ray"], "is neither"),
    (["-t", "hosted_vllm/m", "--ray"], "without --api-base is neither"),
    (["-t", "hosted_vllm/m", "--api-base", "http://h:8000/v1", "--ray", "--tensor-parallel", "2"],
     "--tensor-parallel applies to a model the cluster hosts"),
    (["-t", "vllm/Qwen/Qwen2.5-0.5B-Instruct", "--api-base", "http://h:8000/v1", "--ray"], "hosted by vLLM inside"),
    (["-t", "hosted_vllm/m", "--api-base", "http://h:8000/v1", "--replicas", "2"], "--replicas applies to --ray only"),
])
def test_bad_ray_options_exit_2_before_anything_is_written(monkeypatch, capsys, tmp_path, args, match):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(monkeypatch, capsys, "generate", "-i", str(SAMPLE), "-o", str(tmp_path / "run"), *args)
    assert code == 2 and match in " ".join((out + err).split())
    assert not (tmp_path / "run").exists()


def test_an_unreachable_cluster_is_refused_in_seconds(monkeypatch, capsys, tmp_path, srv):
    port = _free_port()
    t0 = time.monotonic()
    code, out, err = cli(monkeypatch, capsys, "generate", "-i", str(SAMPLE), "-o", str(tmp_path / "run"), "-t",
                         "openai/loopback", "--api-base", srv.url, "--api-key", "sk-x", "--ray", "--ray-address",
                         f"127.0.0.1:{port}")
    text = " ".join((out + err).split())
    assert code == 2 and f"cannot reach a Ray cluster at 127.0.0.1:{port}" in text and "ray start --head" in text
    assert time.monotonic() - t0 < 30 and not (tmp_path / "run").exists()
    monkeypatch.setenv("RAY_ADDRESS", f"ray://127.0.0.1:{port}")  # the variable Ray's own tools read
    code, out, err = cli(monkeypatch, capsys, "generate", "-i", str(SAMPLE), "-o", str(tmp_path / "run"), "-t",
                         "openai/loopback", "--api-base", srv.url, "--api-key", "sk-x", "--ray")
    assert code == 2 and f"cannot reach a Ray cluster at ray://127.0.0.1:{port}" in " ".join((out + err).split())


def test_ray_missing_names_the_extra(monkeypatch, tmp_path, srv):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra looks like
    with pytest.raises(ConfigError, match="not installed") as e:
        run(cfg(srv, tmp_path / "run", ray=True))
    assert "r2r-synth[ray]" in e.value.hint and not (tmp_path / "run").exists()


def test_a_hosted_model_needs_gpus_in_the_cluster(monkeypatch, capsys, tmp_path):
    code, out, err = cli(monkeypatch, capsys, "generate", "-i", str(SAMPLE), "-o", str(tmp_path / "run"), "-t",
                         "vllm/Qwen/Qwen2.5-0.5B-Instruct", "--ray", "--tensor-parallel", "2", "--replicas", "2")
    text = " ".join((out + err).split())
    assert code == 2 and "needs 4 GPU(s); a local Ray on this machine (2 CPUs) has 0" in text
    assert not (tmp_path / "run").exists()


def test_the_vllm_processor_config_is_built_from_the_options():
    from r2r_synth.config import GenerateConfig
    from r2r_synth.generate.ray_cluster import sampling_params, vllm_config

    c = GenerateConfig(input="x", out=Path("o"), teacher="vllm/Qwen/Qwen2.5-72B-Instruct", ray=True, replicas=3,
                       tensor_parallel=4)
    v = vllm_config(c, model="Qwen/Qwen2.5-72B-Instruct", batch_size=64)
    assert (v.model_source, v.concurrency, v.batch_size) == ("Qwen/Qwen2.5-72B-Instruct", 3, 64)
    assert v.engine_kwargs["tensor_parallel_size"] == 4 and v.should_continue_on_error
    body = {"model": "m", "messages": [], "temperature": 0.0, "max_tokens": 300, "seed": 7,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}}
    assert sampling_params(body) == {"temperature": 0.0, "max_tokens": 300, "seed": 7,
                                     "structured_outputs": {"json": {"type": "object"}}}
    assert json.dumps(sampling_params({"messages": []})) == "{}"


async def _ask_through_rays_stage(rows: int, factory, *, fail_first: int = 0) -> tuple[list[dict], int]:
    """Ray's own HTTP stage (`HttpRequestUDF`) asking a loopback aiohttp server, which answers each
    request after 50 ms (503 to the first `fail_first`); returns the stage's rows and the most
    requests the server had in flight at once."""
    from aiohttp import web
    from ray.llm._internal.batch.stages.http_request_stage import HttpRequestUDF

    state = {"now": 0, "most": 0, "seen": 0}

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        state["seen"] += 1
        if state["seen"] <= fail_first:
            return web.json_response({"error": "busy"}, status=503)
        state["now"] += 1
        state["most"] = max(state["most"], state["now"])
        await asyncio.sleep(0.05)
        state["now"] -= 1
        return web.json_response({"echo": body["n"]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        udf = HttpRequestUDF(data_column="__data", expected_input_keys=["payload"], max_retries=2,
                             base_retry_wait_time_in_s=0.01, url=f"http://127.0.0.1:{port}/v1/chat/completions",
                             session_factory=factory)
        batch = [{udf.IDX_IN_BATCH_COLUMN: i, "payload": {"n": i}} for i in range(rows)]
        out = [r async for r in udf.udf(batch)]
    finally:
        await runner.cleanup()
    return out, state["most"]


def test_the_eager_session_puts_a_batchs_requests_in_flight_together_up_to_its_limit():
    import asyncio as aio
    import functools

    from r2r_synth.generate.ray_http import EagerSession

    out, most = aio.run(_ask_through_rays_stage(12, functools.partial(EagerSession, timeout=5, limit=5)))
    assert [r["http_response"]["echo"] for r in out] == list(range(12))  # every row, in the batch's order
    assert most == 5
    # aiohttp's own session: the stage awaits a batch's requests one after the other
    out, most = aio.run(_ask_through_rays_stage(4, None))
    assert len(out) == 4 and most == 1


def test_the_eager_session_keeps_the_stages_retries():
    import asyncio as aio
    import functools

    from r2r_synth.generate.ray_http import EagerSession

    out, _ = aio.run(_ask_through_rays_stage(6, functools.partial(EagerSession, limit=6), fail_first=2))
    assert [r["http_response"]["echo"] for r in out] == list(range(6))


def test_an_actor_carries_the_concurrency_and_a_block_holds_eight_times_its_requests_in_flight():
    from r2r_synth.config import GenerateConfig
    from r2r_synth.generate.ray_cluster import block_size, in_flight, replicas

    c = GenerateConfig(input=str(SAMPLE), out=Path("unused"), teacher="hosted_vllm/m", api_base="http://h:8000/v1", ray=True, concurrency=16)
    assert (replicas(c), in_flight(c, replicas=1), block_size(c, n=1000, replicas=1)) == (1, 16, 128)
    c = GenerateConfig(input=str(SAMPLE), out=Path("unused"), teacher="hosted_vllm/m", api_base="http://h:8000/v1", ray=True, concurrency=200)
    assert (replicas(c), in_flight(c, replicas=4)) == (4, 50)
    c = GenerateConfig(input=str(SAMPLE), out=Path("unused"), teacher="hosted_vllm/m", api_base="http://a/v1,http://b/v1,http://c/v1",
                       ray=True, concurrency=16)
    assert replicas(c, n_urls=3) == 3
