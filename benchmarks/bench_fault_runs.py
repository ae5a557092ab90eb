"""Reliability bars of `generate` under faults, with real `r2r-synth generate` processes and the
loopback OpenAI server in a separate process (it logs every request and every reply's usage):

1. **Outage**: the teacher is down (nothing listens on its port) for the first part of a run and up
   after. After the run ends and one plain rerun of the same command, every key is a record or a
   genuine reject (the teacher's own answer), the status is complete and the exit code 0.
2. **SIGKILL with a budget**: a run with `--max-cost` is killed with SIGKILL at a random point three
   times in a row, then run to its end. What the server billed over all sessions stays within the
   cap plus the cost of the requests in flight at the last kill.

    .venv/bin/python benchmarks/bench_fault_runs.py [--queries 30] [--seed 0]

Prints a table and exits 1 when a bar is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from bench_resume import write_candidates
from openai_server import spawn_server

PRICED = "openai/gpt-4o-mini"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "R2R_API_KEY": "sk-bench-0123456789"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generate_cmd(src: Path, out: Path, url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "r2r_synth.cli", "generate", "-i", str(src), "-o", str(out), "-t", PRICED,
            "--api-base", url, "--depth", "5", "--pairs", "adjacent", *extra]


def lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for x in path.read_text().splitlines():
        try:
            out.append(json.loads(x))
        except json.JSONDecodeError:
            pass  # a torn last line
    return out


def sessions_started(out: Path) -> int:
    return sum(1 for ev in lines(out / "journal.jsonl") if ev.get("t") == "start")


def billed(log: Path) -> float:
    """USD of every reply the server sent, at the teacher's LiteLLM prices."""
    import litellm

    total = 0.0
    for ev in lines(log):
        if "reply" in ev:
            p, c = litellm.cost_per_token(model="gpt-4o-mini", prompt_tokens=ev["usage"]["prompt_tokens"],
                                          completion_tokens=ev["usage"]["completion_tokens"])
            total += p + c
    return total


def outage(work: Path, src: Path, *, down_s: float) -> tuple[list[list[str]], bool]:
    out, port = work / "outage", free_port()
    url = f"http://127.0.0.1:{port}/v1"
    cmd = generate_cmd(src, out, url, "-c", "8", "--timeout", "5")
    t0 = time.monotonic()
    first = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(down_s)  # nothing listens: every call is refused, retried with backoff, given up on
    with spawn_server(latency=0.05, port=port):
        first.communicate(timeout=900)
        first_wall = time.monotonic() - t0
        causes: dict[str, int] = {}
        for r in lines(out / "rejects.jsonl"):
            causes[r.get("cause")] = causes.get(r.get("cause"), 0) + 1
        records_first = len(lines(out / "direct.jsonl")) + len(lines(out / "comparison.jsonl"))
        second = subprocess.run(cmd, check=False, env=ENV, capture_output=True, text=True, timeout=900)
    m = json.loads((out / "manifest.json").read_text())
    requested = sum(c["requested"] for c in m["counts"].values())
    records = sum(c["records"] for c in m["counts"].values())
    genuine = [r for r in lines(out / "rejects.jsonl") if r.get("cause") in ("reply", "refused")]
    holes = requested - records - len(genuine)
    ok = second.returncode == 0 and m["status"] == "complete" and holes == 0
    rows = [
        ["outage: first run", f"down {down_s:.0f} s then up; exit {first.returncode} after {first_wall:.0f} s",
         f"{records_first} records, rejects by cause {causes}"],
        ["outage: one plain rerun", f"exit {second.returncode}, status {m['status']}",
         f"{records}/{requested} records, {len(genuine)} genuine rejects, {holes} holes"],
    ]
    return rows, ok


def kills(work: Path, src: Path, *, cap: float, n_kills: int, rng: random.Random) -> tuple[list[list[str]], bool]:
    out, log = work / "kills", work / "kills-server.jsonl"
    rows = []
    with spawn_server(latency=0.8, log_path=str(log)) as url:
        cmd = generate_cmd(src, out, url, "-c", "4", "--max-cost", f"{cap:.6f}")
        for k in range(n_kills):
            started = sessions_started(out)
            proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            while sessions_started(out) == started:  # the session is under way once its journal says so
                if proc.poll() is not None:
                    raise SystemExit(f"generate ended before it started asking: {proc.stderr.read()}")
                time.sleep(0.02)
            time.sleep(rng.uniform(0.2, 3.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            rows.append([f"kill -9 #{k + 1}", "at a random point",
                         f"{len(lines(out / 'direct.jsonl'))} direct records so far, billed ${billed(log):.5f}"])
        final = subprocess.run(cmd, check=False, env=ENV, capture_output=True, text=True, timeout=900)
        time.sleep(0.5)  # replies to the killed clients reach the log
    m = json.loads((out / "manifest.json").read_text())
    sessions = m["extra"]["sessions"]
    killed = [s for s in sessions if s["status"] == "killed"]
    dearest_call = max(ev["cost"] for ev in lines(out / "journal.jsonl") if ev.get("t") == "reply")
    in_flight_last = killed[-1]["in_flight_at_end"] if killed else 0
    bound = cap + in_flight_last * dearest_call
    spend = billed(log)
    ok = spend <= bound + 1e-12 and final.returncode in (0, 3) and len(killed) == n_kills
    rows.append(["final run", f"exit {final.returncode}, status {m['status']}",
                 f"manifest cost ${m['cost']:.5f} over {len(sessions)} sessions ({len(killed)} killed)"])
    rows.append(["billed over all sessions", f"${spend:.5f}",
                 (f"bar: <= cap ${cap:.5f} + {in_flight_last} calls in flight at the last kill x "
                  f"${dearest_call:.5f} = ${bound:.5f}")])
    return rows, ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--down", type=float, default=20.0, help="seconds the teacher is down at the start")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        work = Path(tmp)
        src = work / "cands.jsonl"
        write_candidates(src, args.queries, 5)
        rows_a, ok_a = outage(work, src, down_s=args.down)
        # A cap of about 40 of the run's 270 requests at gpt-4o-mini's prices: it binds after the kills.
        rows_b, ok_b = kills(work, src, cap=0.0003 * args.queries, n_kills=3, rng=rng)
    width = [max(len(r[i]) for r in rows_a + rows_b) for i in range(2)]
    print(f"{'what':<{width[0]}}  {'result':<{width[1]}}  detail")
    for r in rows_a + rows_b:
        print(f"{r[0]:<{width[0]}}  {r[1]:<{width[1]}}  {r[2]}")
    print(f"outage bar (every key a record or a genuine reject after one rerun, complete, exit 0): "
          f"{'PASS' if ok_a else 'FAIL'}")
    print(f"kill bar (billed <= cap + in flight at the last kill): {'PASS' if ok_b else 'FAIL'}")
    return 0 if ok_a and ok_b else 1


if __name__ == "__main__":
    sys.exit(main())
