"""Bars of `generate --listwise` (R2R's listwise call over RankGPT's sliding windows).

`resume` (TREC DL19, BM25 top 100, the loopback server in its own process, real `r2r-synth generate`
processes, `--listwise --window 20 --stride 10 --depth 100`):
  1. every query's final ranking (rankings.jsonl) holds its 100 candidates exactly once;
  2. every query has the windows RankGPT's `sliding_windows` computes (9 for 100 / 20 / 10);
  3. a run SIGKILLed half-way and rerun ends with the same records and rankings as an uninterrupted
     run, and the server saw no request after the kill for a window finished before it.

`throughput` (synthetic queries of 100 candidates, 9 windows each, 100 ms server latency, concurrency
32): the library call `generate(config)` against a bare `httpx.AsyncClient` that sends the same
requests (the same messages, a query's windows one after the other, the next window built from the
reply), medians over rounds that alternate the two. Bar: generate <= 1.15 x the bare client.

`embedded` (no --teacher: SmolLM2-135M under llama.cpp, DL19 queries, a small window): at least 90 %
of the windows end as valid records, repaired or not; the repaired share is reported.

    .venv/bin/python benchmarks/bench_listwise.py resume [--latency 0.05] [--concurrency 8]
    .venv/bin/python benchmarks/bench_listwise.py throughput [--queries 128] [--rounds 3]
    .venv/bin/python benchmarks/bench_listwise.py embedded [--queries 4] [--window 4] [--stride 2] [--depth 8]

Each prints a table and exits 1 when a bar is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from openai_server import listwise_window, spawn_server
from test_listwise_generate import rankgpt_window_count

DL19 = REPO.parent / "shared" / "data" / "trec-dl19"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool]) -> bool:
    """SIGKILL `proc` as soon as `ready()`; False when it ended before that."""
    while not ready():
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def verdict(checks: dict[str, bool]) -> int:
    """Print each check and PASS / FAIL; the exit code (1 when a bar is missed)."""
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAIL'}] {name}")
    print("PASS" if all(checks.values()) else "FAIL")
    return 0 if all(checks.values()) else 1


def lines(path: Path) -> list[dict]:
    out = []
    if path.exists():
        for x in path.read_text().splitlines():
            try:
                out.append(json.loads(x))
            except json.JSONDecodeError:
                pass  # the torn last line of a killed writer
    return out


def window_id(query: str, texts: list[str]) -> tuple[str, tuple[str, ...]]:
    return query, tuple(texts)


def asked_window(user: str) -> tuple[str, tuple[str, ...]]:
    """The window a request asked about (its query and passages in the order shown), from its prompt."""
    query, passages = listwise_window(user)
    return window_id(query, [p["text"] for p in passages])


# --------------------------------------------------------------------------- resume


def resume(args: argparse.Namespace) -> int:
    if not (DL19 / "bm25_top100.json").exists():
        print(f"{DL19} is absent: this bar needs TREC DL19's BM25 top 100")
        return 1
    w, s, k = 20, 10, 100

    def cmd(out: Path, url: str) -> list[str]:
        return [sys.executable, "-m", "r2r_synth.cli", "generate", "-i", str(DL19 / "bm25_top100.json"),
                "--qrels", str(DL19 / "qrels.txt"), "-o", str(out), "-t", "openai/loopback", "--api-base", url,
                "--api-key", "sk-bench", "--listwise", "--window", str(w), "--stride", str(s), "--depth", str(k),
                "-c", str(args.concurrency)]

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        ref = tmp / "ref"
        with spawn_server(latency=args.latency) as url:
            t0 = time.perf_counter()
            subprocess.run(cmd(ref, url), check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ref_wall = time.perf_counter() - t0
        ref_recs, ref_ranks = lines(ref / "listwise.jsonl"), lines(ref / "rankings.jsonl")
        total = len(ref_recs)

        out, log = tmp / "killed", tmp / "killed.log"
        with spawn_server(latency=args.latency, log_path=str(log)) as url:
            proc = subprocess.Popen(cmd(out, url), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if not kill_when(proc, lambda: (out / "listwise.jsonl").exists() and
                             (out / "listwise.jsonl").read_bytes().count(b"\n") >= total // 2):
                print("the run finished before it could be killed half-way")
                return 1
            t_kill = time.time()
            at_kill = lines(out / "listwise.jsonl")
            time.sleep(0.3)  # requests already on the wire reach the server's log
            t1 = time.perf_counter()
            subprocess.run(cmd(out, url), check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rerun_wall = time.perf_counter() - t1
        recs, ranks = lines(out / "listwise.jsonl"), lines(out / "rankings.jsonl")
        requests = [r for r in map(json.loads, log.read_text().splitlines()) if "reply" not in r]
        manifest = json.loads((out / "manifest.json").read_text())

    finished = {window_id(r["query"]["text"], [d["text"] for d in r["documents"]]) for r in at_kill}
    after = [r for r in requests if r["t"] > t_kill]
    again = [r for r in after if asked_window(r["user"]) in finished]
    cands = json.loads((DL19 / "bm25_top100.json").read_text())
    first_stage = {str(c["hits"][0]["qid"]): [h["docid"] for h in c["hits"][:k]] for c in cands}
    per_query: dict[str, int] = {}
    for r in recs:
        per_query[r["query"]["qid"]] = per_query.get(r["query"]["qid"], 0) + 1
    expected = {q: rankgpt_window_count(len(d), w, s) for q, d in first_stage.items()}

    def strip(rs: list[dict]) -> list[str]:
        return sorted(json.dumps({k: v for k, v in r.items() if k != "provenance"}, sort_keys=True) for r in rs)

    rows = [
        ("queries / windows in the job", f"{len(first_stage)} / {sum(expected.values())}"),
        ("uninterrupted run: windows, rankings, wall", f"{len(ref_recs)}, {len(ref_ranks)}, {ref_wall:.1f} s"),
        ("killed run: windows finished at SIGKILL", len(at_kill)),
        ("after the rerun: windows, rankings, rerun wall", f"{len(recs)}, {len(ranks)}, {rerun_wall:.1f} s"),
        ("server requests after the kill", len(after)),
        ("  of them for windows finished before the kill", len(again)),
        ("killed + rerun requests / uninterrupted windows", f"{len(requests)} / {total}"),
        ("manifest: status, listwise requested = records", (f"{manifest['status']}, "
         f"{manifest['counts']['listwise']['requested']} = {manifest['counts']['listwise']['records']}")),
    ]
    print(f"\nlistwise resume: DL19 BM25 top {k}, --window {w} --stride {s}, concurrency {args.concurrency}, "
          f"server latency {args.latency * 1000:.0f} ms")
    for name, v in rows:
        print(f"  {name:52s} {v}")
    checks = {
        "every final ranking holds its 100 candidates exactly once":
            len(ranks) == len(first_stage) and all(sorted(r["ranking"]) == sorted(first_stage[r["query"]["qid"]])
                                                   and len(set(r["ranking"])) == k for r in ranks),
        "windows per query = RankGPT's (9)": per_query == expected and set(expected.values()) == {9},
        "same records as the uninterrupted run": strip(recs) == strip(ref_recs),
        "same final rankings": sorted((r["key"], r["ranking"]) for r in ranks) ==
                               sorted((r["key"], r["ranking"]) for r in ref_ranks),
        "no window asked twice": not again,
        "killed half-way": 0 < len(at_kill) < total,
    }
    return verdict(checks)


# --------------------------------------------------------------------------- throughput


def synthetic(n_queries: int, depth: int):
    from r2r_synth.schemas import Candidates, Document, Query

    words = ["river", "delta", "sediment", "tide", "estuary", "marsh", "channel", "flood", "plain", "salt",
             "water", "current", "bank", "erosion", "harbor", "basin", "dune", "reef", "lagoon", "inlet", "shore"]
    out = []
    for q in range(n_queries):
        docs = [Document(docid=f"b{q}-{d}", text=f"Passage {q}-{d}: " +
                         " ".join(words[(q * 7 + d * 3 + i) % len(words)] for i in range(60)) + ".")
                for d in range(depth)]
        out.append(Candidates(query=Query(qid=f"bq{q}", text=f"how does a {words[q % len(words)]} form {q}"),
                              documents=docs))
    return out


async def bare_client(url: str, cands, *, window: int, stride: int, concurrency: int) -> float:
    """The same requests as generate: the program's messages (DSPy's adapter), a query's windows in
    turn, each next window ordered by the reply to the one below; nothing validated or written."""
    import dspy
    import httpx

    from r2r_synth.generate.windows import window_spans
    from r2r_synth.teacher.programs import load_program

    pred = load_program("listwise", programs_dir=REPO / "programs").predictor
    adapter = dspy.ChatAdapter()
    sig = pred.signature
    prefix = [{"role": "system", "content": adapter.format_system_message(sig)}, *adapter.format_demos(sig, [])]
    marker = "[[ ## ranked_passages ## ]]"
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        async def query(c) -> None:
            order = list(c.documents)
            async with sem:
                for start, end in window_spans(len(order), window=window, stride=stride):
                    docs = order[start:end]
                    user = adapter.format_user_message_content(sig, {"query": c.query.text, "passages": [
                        {"identifier": i + 1, "text": d.full_text()} for i, d in enumerate(docs)]}, main_request=True)
                    body = {"model": "loopback", "messages": [*prefix, {"role": "user", "content": user}],
                            "temperature": 0.0}
                    r = await client.post("/chat/completions", json=body)
                    r.raise_for_status()
                    text = r.json()["choices"][0]["message"]["content"]
                    ranked = json.JSONDecoder().raw_decode(text.split(marker, 1)[1].lstrip())[0]
                    order[start:end] = [docs[p["identifier"] - 1] for p in ranked]

        t0 = time.perf_counter()
        await asyncio.gather(*(query(c) for c in cands))
        return time.perf_counter() - t0


def run_generate(url: str, cands, *, window: int, stride: int, concurrency: int) -> float:
    from r2r_synth.config import GenerateConfig
    from r2r_synth.generate import generate
    from r2r_synth.teacher.lm import make_teacher
    from r2r_synth.teacher.policy import CallPolicy

    depth = len(cands[0].documents)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = GenerateConfig(input="-", out=Path(tmp) / "run", teacher="openai/loopback", api_base=url,
                             api_key="sk-bench", listwise=True, window=window, stride=stride, depth=depth,
                             concurrency=concurrency, programs_dir=REPO / "programs")
        teacher = make_teacher(cfg.teacher, api_base=url, api_key="sk-bench", policy=CallPolicy(timeout=60))
        t0 = time.perf_counter()
        res = generate(cfg, candidates=cands, teacher=teacher)
        wall = time.perf_counter() - t0
        c = res.manifest.counts["listwise"]
        if c.records != c.requested or res.manifest.extra["listwise"]["rankings"] != len(cands):
            raise SystemExit(f"generate wrote {c.records} of {c.requested} windows and {c.rejects} rejects")
        return wall


def throughput(args: argparse.Namespace) -> int:
    from r2r_synth.generate.windows import window_spans
    from r2r_synth.teacher.lm import quiet_litellm

    quiet_litellm()
    w, s, depth = 20, 10, 100
    cands = synthetic(args.queries, depth)
    per_query = len(window_spans(depth, window=w, stride=s))
    n = args.queries * per_query
    waves = -(-args.queries // args.concurrency)
    ideal = waves * per_query * args.latency
    bare, gen = [], []
    with spawn_server(latency=args.latency) as url:
        asyncio.run(bare_client(url, cands[:4], window=w, stride=s, concurrency=args.concurrency))  # warm up
        run_generate(url, cands[:4], window=w, stride=s, concurrency=args.concurrency)
        for _ in range(args.rounds):
            bare.append(asyncio.run(bare_client(url, cands, window=w, stride=s, concurrency=args.concurrency)))
            gen.append(run_generate(url, cands, window=w, stride=s, concurrency=args.concurrency))
    b, g = statistics.median(bare), statistics.median(gen)
    ratio = g / b
    print(f"\nlistwise throughput: {args.queries} queries x {per_query} windows ({n} requests of {w} passages), "
          f"concurrency {args.concurrency}, server latency {args.latency * 1000:.0f} ms (separate process)")
    print(f"{'':52s} {'wall s':>8s} {'x ideal':>8s}   runs")
    for name, wall, runs in ((f"ideal ({waves} waves x {per_query} windows x latency)", ideal, []),
                             (f"bare httpx.AsyncClient (median of {args.rounds})", b, bare),
                             (f"r2r-synth generate --listwise (median of {args.rounds})", g, gen)):
        print(f"{name:52s} {wall:8.2f} {wall / ideal:8.2f}   {' '.join(f'{x:.2f}' for x in runs)}")
    print(f"{'generate / bare client':52s} {ratio:8.3f}   bar <= {args.bar}")
    return verdict({f"generate <= {args.bar} x the bare client": ratio <= args.bar})


# --------------------------------------------------------------------------- embedded


def embedded(args: argparse.Namespace) -> int:
    if not (DL19 / "bm25_top100.json").exists():
        print(f"{DL19} is absent: this bar reads TREC DL19's BM25 lists")
        return 1
    with tempfile.TemporaryDirectory() as tmp_s:
        out = Path(tmp_s) / "run"
        cmd = [sys.executable, "-m", "r2r_synth.cli", "generate", "-i", str(DL19 / "bm25_top100.json"), "--qrels",
               str(DL19 / "qrels.txt"), "-o", str(out), "--limit", str(args.queries), "--listwise", "--window",
               str(args.window), "--stride", str(args.stride), "--depth", str(args.depth)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        recs, rejects = lines(out / "listwise.jsonl"), lines(out / "rejects.jsonl")
        ranks = lines(out / "rankings.jsonl")
        manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").exists() else {}
    asked = len(recs) + len(rejects)
    valid = len(recs) / asked if asked else 0.0
    repaired = sum(1 for r in recs if r["repaired"])
    kinds = {"unknown": 0, "duplicates": 0, "missing": 0}
    for r in recs:
        for k in kinds:
            kinds[k] += bool(r["repair"] and r["repair"][k])
    reasons: dict[str, int] = {}
    for r in rejects:
        reasons[r["reason"][:70]] = reasons.get(r["reason"][:70], 0) + 1
    print(f"\nlistwise, embedded teacher (SmolLM2-135M, llama.cpp, CPU): {args.queries} DL19 queries, --window "
          f"{args.window} --stride {args.stride} --depth {args.depth}; exit {proc.returncode}, {wall:.0f} s")
    rows = [("windows asked", asked), ("valid records (repaired or not)", f"{len(recs)} ({valid:.1%})"),
            ("  of them repaired", f"{repaired} ({repaired / max(1, len(recs)):.1%})"),
            ("  repairs with unknown / repeated / missing identifiers",
             f"{kinds['unknown']} / {kinds['duplicates']} / {kinds['missing']}"),
            ("rejects", len(rejects)), ("queries ranked (rankings.jsonl)", len(ranks)),
            ("seconds per window", f"{wall / max(1, asked):.1f}"),
            ("tokens in / out", (f"{manifest.get('usage', {}).get('prompt_tokens')} / "
                                 f"{manifest.get('usage', {}).get('completion_tokens')}"))]
    for name, v in rows:
        print(f"  {name:56s} {v}")
    for reason, n in reasons.items():
        print(f"  reject: {n} x {reason}")
    if proc.returncode != 0:
        print(proc.stderr[-2000:])
    return verdict({"at least 90 % of the windows are valid records": asked > 0 and valid >= 0.9})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="which", required=True)
    r = sub.add_parser("resume")
    r.add_argument("--latency", type=float, default=0.05)
    r.add_argument("--concurrency", type=int, default=8)
    t = sub.add_parser("throughput")
    t.add_argument("--queries", type=int, default=128)
    t.add_argument("--concurrency", type=int, default=32)
    t.add_argument("--latency", type=float, default=0.1)
    t.add_argument("--rounds", type=int, default=3)
    t.add_argument("--bar", type=float, default=1.15)
    e = sub.add_parser("embedded")
    e.add_argument("--queries", type=int, default=4)
    e.add_argument("--window", type=int, default=4)
    e.add_argument("--stride", type=int, default=2)
    e.add_argument("--depth", type=int, default=8)
    args = ap.parse_args()
    return {"resume": resume, "throughput": throughput, "embedded": embedded}[args.which](args)


if __name__ == "__main__":
    sys.exit(main())
