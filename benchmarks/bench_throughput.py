"""Throughput bar of `generate`: 1,000 direct requests at concurrency 32 against a loopback
OpenAI-compatible server with 100 ms injected latency (a separate process, so its CPU is not the
client's), versus a bare `httpx.AsyncClient` sending the same 1,000 request bodies at the same
concurrency to the same server. Bar: generate's wall time <= 1.15 x the bare client's (medians over
rounds that alternate the two). Both are also reported against the ideal 1000 x 0.1 / 32 = 3.125 s.

The generate figure is the library call `r2r_synth.generate.generate` end to end (program load,
prompt formatting with DSPy's adapter, requests, parsing, pydantic validation, JSONL appends,
manifest), not the CLI's interpreter start-up. The LiteLLM transport (`--transport litellm`) is
measured once for reference; it is not the bar.

    .venv/bin/python benchmarks/bench_throughput.py [--rounds 3] [--n 1000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from openai_server import spawn_server

from r2r_synth.config import GenerateConfig
from r2r_synth.generate import generate
from r2r_synth.schemas import Candidates, Document, Query
from r2r_synth.teacher.lm import make_teacher, quiet_litellm
from r2r_synth.teacher.policy import CallPolicy
from r2r_synth.teacher.programs import load_program

WORDS = ["river", "delta", "sediment", "tide", "estuary", "marsh", "channel", "flood", "plain", "salt", "water", "current", "bank", "erosion", "harbor", "basin", "dune", "reef", "lagoon", "inlet", "shore"]


def synthetic_candidates(n_queries: int, depth: int) -> list[Candidates]:
    out = []
    for q in range(n_queries):
        docs = []
        for d in range(depth):
            words = [WORDS[(q * 7 + d * 3 + i) % len(WORDS)] for i in range(60)]
            docs.append(Document(docid=f"b{q}-{d}", text=f"Passage {q}-{d}: " + " ".join(words) + "."))
        out.append(Candidates(query=Query(qid=f"bq{q}", text=f"how does a {WORDS[q % len(WORDS)]} form {q}"),
                              documents=docs))
    return out


def request_bodies(cands: list[Candidates], depth: int) -> list[dict]:
    """The exact chat bodies generate sends (same DSPy adapter formatting), for the bare client."""
    import dspy

    prog = load_program("direct", programs_dir=REPO / "programs")
    adapter = dspy.ChatAdapter()
    bodies = []
    for c in cands:
        for d in c.documents[:depth]:
            msgs = adapter.format(prog.predictor.signature, list(prog.predictor.demos),
                                  {"query": c.query.text, "document": d.full_text()})
            bodies.append({"model": "loopback", "messages": msgs, "temperature": 0.0})
    return bodies


async def bare_client(url: str, bodies: list[dict], concurrency: int) -> float:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60,
                                 limits=httpx.Limits(max_connections=concurrency,
                                                     max_keepalive_connections=concurrency)) as client:
        async def one(body: dict) -> None:
            async with sem:
                r = await client.post("/chat/completions", json=body)
                r.raise_for_status()
                r.json()

        t0 = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - t0


def run_generate(url: str, cands: list[Candidates], depth: int, concurrency: int, transport: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = GenerateConfig(input="-", out=Path(tmp) / "run", teacher="openai/loopback", api_base=url,
                             api_key="sk-bench", depth=depth, pairs="none", concurrency=concurrency,
                             programs_dir=REPO / "programs", transport=transport)
        teacher = make_teacher(cfg.teacher, api_base=url, api_key="sk-bench", policy=CallPolicy(timeout=60),
                               transport=transport)
        t0 = time.perf_counter()
        res = generate(cfg, candidates=cands, teacher=teacher)
        wall = time.perf_counter() - t0
        c = res.manifest.counts["direct"]
        if c.records != len(cands) * depth:
            raise SystemExit(f"generate wrote {c.records} records and {c.rejects} rejects, expected {len(cands) * depth}")
        return wall


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bar", type=float, default=1.15)
    ap.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM-transport reference run")
    args = ap.parse_args()
    quiet_litellm()
    depth = 10
    cands = synthetic_candidates(args.n // depth, depth)
    bodies = request_bodies(cands, depth)
    ideal = args.n * args.latency / args.concurrency
    bare, gen = [], []
    with spawn_server(latency=args.latency) as url:
        # Warm both paths once (imports, connection set-up) on a small slice.
        asyncio.run(bare_client(url, bodies[:64], args.concurrency))
        run_generate(url, cands[:4], depth, args.concurrency, "auto")
        for _ in range(args.rounds):
            bare.append(asyncio.run(bare_client(url, bodies, args.concurrency)))
            gen.append(run_generate(url, cands, depth, args.concurrency, "auto"))
        lite = None if args.no_litellm else run_generate(url, cands, depth, args.concurrency, "litellm")
    b, g = statistics.median(bare), statistics.median(gen)
    ratio = g / b
    rows = [
        ("ideal (n x latency / concurrency)", ideal, 1.0, ""),
        (f"bare httpx.AsyncClient (median of {args.rounds})", b, b / ideal, " ".join(f"{x:.2f}" for x in bare)),
        (f"r2r-synth generate (median of {args.rounds})", g, g / ideal, " ".join(f"{x:.2f}" for x in gen)),
    ]
    if lite is not None:
        rows.append(("generate --transport litellm (1 run, reference)", lite, lite / ideal, ""))
    print(f"\nthroughput: {args.n} direct requests, concurrency {args.concurrency}, "
          f"server latency {args.latency * 1000:.0f} ms (separate process)")
    print(f"{'':52s} {'wall s':>8s} {'x ideal':>8s}   runs")
    for name, w, x, runs in rows:
        print(f"{name:52s} {w:8.2f} {x:8.2f}   {runs}")
    print(f"{'generate / bare client':52s} {ratio:8.3f}   bar <= {args.bar}")
    ok = ratio <= args.bar
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
