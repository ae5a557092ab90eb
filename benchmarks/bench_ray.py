"""Bars of `generate --ray` on a local Ray (this machine's CPUs) against the loopback OpenAI server (a
separate process), each a row of the table; exits 1 when one is missed.

- same records: DL19 (10 queries x depth 100, direct) through --ray writes the same keys and record
  contents as online generate against the same deterministic teacher;
- driver SIGKILL: the CLI (`generate --ray`, its own local Ray) is SIGKILLed mid-round, then the same
  command is rerun: the same records as online, and the server's log shows no request asked again
  whose reply the first session had journaled (a reply is the record-to-be: the rerun parses it);
- worker killed: one of Ray's HTTP actors is SIGKILLed mid-run: the run completes, every key once;
- --max-cost: the spend stays <= the cap + the cost of one block (the dearest reply x --batch-size);
- throughput: 1,000 direct requests at 100 ms latency, concurrency 16: the --ray session (a Ray this
  process started before; its start-up shown apart) within 1.3 x online generate's session on the same
  server (medians of alternating rounds); where the time goes: the first request's delay (the dataset's
  start and its actors'), then the requests.

    .venv/bin/python benchmarks/bench_ray.py [--rounds 2] [--n 1000] [--skip sigkill,worker,...]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_throughput import synthetic_candidates
from openai_server import spawn_server

from r2r_synth.config import GenerateConfig
from r2r_synth.errors import BudgetExceeded
from r2r_synth.generate import generate

DL19 = REPO.parent / "shared" / "data" / "trec-dl19" / "bm25_top100.json"
CONTENT = ("reasoning", "relevance", "score", "document", "query", "gold", "first_stage_rank")
ROWS: list[tuple[str, str, str, bool]] = []


def row(name: str, figure: str, bar: str, ok: bool) -> None:
    ROWS.append((name, figure, bar, ok))
    print(f"{'ok  ' if ok else 'MISS'} {name}: {figure} (bar: {bar})", file=sys.stderr, flush=True)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def requests(log: Path) -> list[dict]:
    """The loopback server's request lines (its log also holds reply-usage lines)."""
    return [x for x in lines(log) if "user" in x]


def contents(out: Path) -> dict[str, tuple]:
    return {r["key"]: tuple(json.dumps(r.get(f), sort_keys=True) for f in CONTENT) for r in lines(out / "direct.jsonl")}


def dl19_config(url: str, out: Path, **kw) -> GenerateConfig:
    base = {"input": str(DL19), "out": out, "teacher": "openai/loopback", "api_base": url, "api_key": "sk-bench",
            "limit": 10, "depth": 100, "pairs": "none", "concurrency": 16, "programs_dir": REPO / "programs"}
    return GenerateConfig(**{**base, **kw})


def quiet(_msg: str) -> None:
    pass


# --------------------------------------------------------------------------- driver SIGKILL


def bar_driver_sigkill(tmp: Path, online: dict[str, tuple]) -> None:
    import psutil

    log = tmp / "kill-server.jsonl"
    out = tmp / "killed"
    with spawn_server(latency=0.02, log_path=str(log)) as url:
        cmd = [sys.executable, "-m", "r2r_synth.cli", "generate", "-i", str(DL19), "-o", str(out), "-t",
               "openai/loopback", "--api-base", url, "--api-key", "sk-bench", "--limit", "10", "--depth", "100",
               "--pairs", "none", "--concurrency", "16", "--programs-dir", str(REPO / "programs"), "--ray"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            replies = sum(1 for x in lines(out / "journal.jsonl") if x.get("t") == "reply") if out.exists() else 0
            if replies >= 300:
                break
            time.sleep(0.2)
        family = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)] if proc.poll() is None else []
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        first = lines(out / "journal.jsonl")
        journaled = {e["n"] for e in first if e.get("t") == "reply"}
        replied_keys = {e["key"] for e in first if e.get("t") == "send" and e["n"] in journaled}
        n_first = len(requests(log))
        records_at_kill = len(lines(out / "direct.jsonl"))
        for pid in family:  # the killed driver's local Ray (its raylet, GCS, workers), by their ids
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        rerun = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=900)
    asked_again = requests(log)[n_first:]
    recs = lines(out / "direct.jsonl")
    by_text = {(r["query"]["text"], r["document"]["text"]): r["key"] for r in recs}
    keys_again = set()
    for a in asked_again:
        for (q, d), k in by_text.items():
            if q in a["user"] and d in a["user"]:
                keys_again.add(k)
                break
    twice = keys_again & replied_keys
    same = contents(out) == online
    keys = [r["key"] for r in recs] + [r["key"] for r in lines(out / "rejects.jsonl")]
    ok = rerun.returncode == 0 and same and not twice and len(keys) == len(set(keys)) == 1000
    row("driver SIGKILL mid-round, then a plain rerun",
        f"killed with {len(replied_keys)} replies journaled, {records_at_kill} records written; the rerun asked "
        f"{len(asked_again)} requests, {len(twice)} of them already answered; records equal online: {same}; "
        f"rerun exit {rerun.returncode}", "same records, no answered key asked again", ok)


# --------------------------------------------------------------------------- in-process bars


def bar_same_records(url: str, tmp: Path) -> dict[str, tuple]:
    t0 = time.perf_counter()
    generate(dl19_config(url, tmp / "online"), on_status=quiet)
    t_online = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = generate(dl19_config(url, tmp / "ray", ray=True), on_status=quiet)
    t_ray = time.perf_counter() - t0
    online, on_ray = contents(tmp / "online"), contents(tmp / "ray")
    ok = len(online) == 1000 and online == on_ray and res.manifest.status == "complete"
    row("DL19 10 x 100 direct: --ray vs online", f"{len(on_ray)} / {len(online)} records, equal: {online == on_ray} "
        f"(online {t_online:.1f} s, ray {t_ray:.1f} s)", "same keys and contents", ok)
    return online


def ray_workers() -> set[int]:
    import psutil

    return {p.info["pid"] for p in psutil.process_iter(["pid", "name", "cmdline"])
            if "HttpRequestUDF" in " ".join([p.info["name"] or "", *(p.info["cmdline"] or [])])}


def bar_worker_killed(tmp: Path) -> None:
    killed: list[int] = []
    log = tmp / "worker-server.jsonl"
    with spawn_server(latency=0.05, log_path=str(log)) as url:
        def kill() -> None:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and not killed:
                if len(requests(log)) >= 200 and ray_workers():
                    pid = min(ray_workers())
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                time.sleep(0.1)

        t = threading.Thread(target=kill, daemon=True)
        t.start()
        res = generate(dl19_config(url, tmp / "worker", ray=True, limit=5), on_status=quiet)
        killed.append(0)
        t.join()
        asked = len(requests(log))
    recs = lines(tmp / "worker" / "direct.jsonl")
    keys = [r["key"] for r in recs]
    ok = killed[0] != 0 and res.manifest.status == "complete" and len(keys) == len(set(keys)) == 500
    row("a Ray worker SIGKILLed mid-run (DL19 5 x 100)", f"{'killed pid ' + str(killed[0]) if killed[0] else 'none killed'}; "
        f"{len(keys)} records, {len(set(keys))} keys, {asked} requests asked ({asked - 500} again: the lost block)",
        "completes, every key once", ok)


def bar_max_cost(url: str, tmp: Path) -> None:
    cap, block = 0.02, 16
    out = tmp / "budget"
    try:
        generate(dl19_config(url, out, ray=True, teacher="openai/gpt-4o-mini", max_cost=cap, batch_size=block),
                 on_status=quiet)
        stopped = False
    except BudgetExceeded:
        stopped = True
    j = lines(out / "journal.jsonl")
    costs = [e["cost"] for e in j if e.get("t") == "reply" and e.get("cost") is not None]
    spent = sum(costs)
    one_block = max(costs) * block if costs else 0.0
    n = len(lines(out / "direct.jsonl"))
    ok = stopped and spent <= cap + one_block and n > 0
    row("--max-cost under --ray", f"cap ${cap}, spent ${spent:.5f} on {n} records (one block of {block} <= "
        f"${one_block:.5f}); stopped: {stopped}", "spend <= cap + one block in flight", ok)


def bar_throughput(url: str, log: Path, *, n: int, rounds: int, init_s: float) -> None:
    depth = 50
    cands = synthetic_candidates(n // depth, depth)

    def one(use_ray: bool) -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = GenerateConfig(input="-", out=Path(tmp) / "run", teacher="openai/loopback", api_base=url,
                                 api_key="sk-bench", depth=depth, pairs="none", concurrency=16,
                                 programs_dir=REPO / "programs", ray=use_ray)
            before = len(requests(log))
            t0 = time.time()
            res = generate(cfg, candidates=cands, on_status=quiet)
            wall = time.time() - t0
            if res.manifest.counts["direct"].records != n:
                raise SystemExit(f"expected {n} records, got {res.manifest.counts['direct'].records}")
            first = min(x["t"] for x in requests(log)[before:]) - t0
            return wall, first

    online, on_ray = [], []
    for _ in range(rounds):
        online.append(one(False))
        on_ray.append(one(True))
    o, r = statistics.median(w for w, _ in online), statistics.median(w for w, _ in on_ray)
    first_o, first_r = statistics.median(f for _, f in online), statistics.median(f for _, f in on_ray)
    ratio = r / o
    row(f"throughput: {n} direct at 100 ms, concurrency 16 (median of {rounds})",
        f"online {o:.2f} s, ray {r:.2f} s = {ratio:.2f}x (first request after: online {first_o:.2f} s, ray "
        f"{first_r:.2f} s: the dataset and its actors starting; then the requests {r - first_r:.2f} s vs "
        f"{o - first_o:.2f} s); ray.init {init_s:.1f} s apart", "ray <= 1.3x online", ratio <= 1.3)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma-separated: same,sigkill,worker,budget,throughput")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if not DL19.exists():
        print(f"{DL19} is absent: this benchmark needs ../shared/data/trec-dl19", file=sys.stderr)
        return 2
    import ray

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        online = None
        with spawn_server(latency=0.02) as url:
            if "sigkill" not in skip:  # before this process starts its Ray: the CLI starts its own
                generate(dl19_config(url, tmp / "ref"), on_status=quiet)
                bar_driver_sigkill(tmp, contents(tmp / "ref"))
            t0 = time.perf_counter()
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="WARNING")
            init_s = time.perf_counter() - t0
            if "same" not in skip:
                online = bar_same_records(url, tmp)
            if "budget" not in skip:
                bar_max_cost(url, tmp)
        if "worker" not in skip:
            bar_worker_killed(tmp)
        if "throughput" not in skip:
            log = tmp / "tp-server.jsonl"
            with spawn_server(latency=0.1, log_path=str(log)) as url:
                bar_throughput(url, log, n=args.n, rounds=args.rounds, init_s=init_s)
        ray.shutdown()
        del online
    print("| bar | figure | wanted | |\n|---|---|---|---|")
    for name, figure, bar, ok in ROWS:
        print(f"| {name} | {figure} | {bar} | {'met' if ok else 'MISSED'} |")
    return 0 if all(ok for *_, ok in ROWS) else 1


if __name__ == "__main__":
    sys.exit(main())
