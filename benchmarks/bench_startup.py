"""Start-up bars of `generate` against a self-hosted OpenAI-compatible endpoint (the direct
transport, `--api-base`), measured as a user runs it: the `r2r-synth` command in a fresh process.

1. **Time to first request**: from starting `r2r-synth generate --teacher hosted_vllm/loopback
   --api-base <loopback>` to the loopback server receiving the first chat completion (the server's
   own clock, in its request log). Bar: median of `--rounds` <= 1.5 s.
2. **A 1,000-request job, start-up included**: the same command over 100 queries x depth 10
   (concurrency 32, 100 ms server latency) against a bare asyncio + httpx client in a fresh
   process sending the same 1,000 request bodies at the same concurrency (its interpreter and
   httpx import included). Bar: generate / bare <= 1.3 (medians over rounds that alternate them).

The server runs in a separate process (its CPU is not the client's). Whether LiteLLM was imported by
the command is read from the run (`python -X importtime` shows the same, see docs/benchmarks.md).

    .venv/bin/python benchmarks/bench_startup.py [--rounds 5] [--n 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_throughput import request_bodies, synthetic_candidates
from openai_server import spawn_server

BARE = r"""
import asyncio, json, sys, time
import httpx

async def main(url, path, concurrency):
    bodies = [json.loads(x) for x in open(path)]
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(
            max_connections=concurrency, max_keepalive_connections=concurrency)) as client:
        async def one(body):
            async with sem:
                r = await client.post("/chat/completions", json=body)
                r.raise_for_status()
                r.json()
        await asyncio.gather(*(one(b) for b in bodies))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def cli() -> list[str]:
    exe = Path(sys.executable).with_name("r2r-synth")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "r2r_synth.cli"]


def first_request_at(log: Path, after: float) -> float | None:
    if not log.exists():
        return None
    for line in log.read_text().splitlines():
        ev = json.loads(line)
        if "user" in ev and ev.get("t", 0) >= after:
            return float(ev["t"])
    return None


TEACHER = "hosted_vllm/loopback"
CODE = REPO  # the r2r-synth source the command runs (--code: another checkout, e.g. before a change)


def run_cli(url: str, inp: Path, out: Path, *, concurrency: int, depth: int) -> float:
    cmd = [*cli(), "generate", "-i", str(inp), "-o", str(out), "--teacher", TEACHER,
           "--api-base", url, "--depth", str(depth), "--pairs", "none", "--concurrency", str(concurrency),
           "--programs-dir", str(REPO / "programs")]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": str(CODE)})
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"generate failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--first-bar", type=float, default=1.5)
    ap.add_argument("--job-bar", type=float, default=1.3)
    ap.add_argument("--code", type=Path, default=REPO, help="the r2r-synth checkout the command runs")
    ap.add_argument("--teacher", default="hosted_vllm/loopback")
    args = ap.parse_args()
    global CODE, TEACHER
    CODE, TEACHER = args.code.resolve(), args.teacher
    depth = 10
    cands = synthetic_candidates(args.n // depth, depth)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inp = tmp / "cands.jsonl"
        inp.write_text("".join(c.model_dump_json() + "\n" for c in cands))
        small = tmp / "small.jsonl"
        small.write_text(cands[0].model_dump_json() + "\n")
        bodies = tmp / "bodies.jsonl"
        bodies.write_text("".join(json.dumps(b) + "\n" for b in request_bodies(cands, depth)))
        log = tmp / "requests.jsonl"
        first, gen, bare = [], [], []
        with spawn_server(latency=args.latency, log_path=str(log)) as url:
            run_cli(url, small, tmp / "warm", concurrency=args.concurrency, depth=depth)  # OS file cache warm
            for i in range(args.rounds):
                t0 = time.time()
                run_cli(url, small, tmp / f"first{i}", concurrency=args.concurrency, depth=1)
                at = first_request_at(log, t0)
                if at is None:
                    raise SystemExit("the server logged no request")
                first.append(at - t0)
            for i in range(args.rounds):
                gen.append(run_cli(url, inp, tmp / f"job{i}", concurrency=args.concurrency, depth=depth))
                t0 = time.time()
                subprocess.run([sys.executable, "-c", BARE, url, str(bodies), str(args.concurrency)], check=True)
                bare.append(time.time() - t0)
            # Did the command import LiteLLM? One more small run under `python -X importtime`.
            probe = subprocess.run([sys.executable, "-X", "importtime", "-m", "r2r_synth.cli", "generate", "-i",
                                    str(small), "-o", str(tmp / "probe"), "--teacher", TEACHER,
                                    "--api-base", url, "--depth", "1", "--pairs", "none", "--programs-dir",
                                    str(REPO / "programs")], capture_output=True, text=True, check=False,
                                   env={**os.environ, "PYTHONPATH": str(CODE)})
            litellm_seen = any(line.startswith("import time:") and line.split("|")[-1].strip() == "litellm"
                               for line in probe.stderr.splitlines())
    f, g, b = statistics.median(first), statistics.median(gen), statistics.median(bare)
    ratio = g / b
    print(f"\nstart-up: generate --teacher {TEACHER} --api-base <loopback> (direct transport), "
          f"{args.rounds} rounds, code {CODE}")
    print(f"{'':58s} {'median s':>9s}   runs")
    print(f"{'time to first request':58s} {f:9.2f}   {' '.join(f'{x:.2f}' for x in first)}")
    print(f"{f'{args.n}-request job, r2r-synth generate (fresh process)':58s} {g:9.2f}   "
          f"{' '.join(f'{x:.2f}' for x in gen)}")
    print(f"{f'{args.n}-request job, bare asyncio+httpx (fresh process)':58s} {b:9.2f}   "
          f"{' '.join(f'{x:.2f}' for x in bare)}")
    print(f"{'ideal (n x latency / concurrency)':58s} {args.n * args.latency / args.concurrency:9.2f}")
    print(f"{'LiteLLM imported by the generate modules':58s} {'yes' if litellm_seen else 'no':>9s}")
    ok_first, ok_job = f <= args.first_bar, ratio <= args.job_bar
    print(f"time to first request {f:.2f} s, bar <= {args.first_bar}: {'PASS' if ok_first else 'FAIL'}")
    print(f"job generate / bare {ratio:.3f}, bar <= {args.job_bar}: {'PASS' if ok_job else 'FAIL'}")
    return 0 if ok_first and ok_job else 1


if __name__ == "__main__":
    sys.exit(main())
