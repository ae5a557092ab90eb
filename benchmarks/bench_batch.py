"""Bars of `generate --batch`, `--export-batch` and `--import-batch`, with real `r2r-synth generate`
processes and the loopback server (OpenAI's chat, Files and Batch APIs, tests/openai_server.py) in a
separate process that logs every request, upload and batch:

1. **Same records**: `generate --batch` of N direct requests (default 1,000), rerun until it exits 0,
   gives the same key set and the same record contents (reasoning, relevance, score) as online
   `generate` against the same deterministic teacher.
2. **Kill -9 right after submission**, twice: once as soon as the batch id is in batches.jsonl, once
   while the server holds the reply to the create (the batch exists; its id never reached the run
   directory). Rerun until exit 0: the server's log shows one upload and one batch, every result is
   collected.
3. **5 % of items failed by the server**: asked again by the next run, until complete; the server
   answered each request once.
4. **Batch files**: `--export-batch`, a stand-in for vLLM's runner (`tests/openai_batches.py
   run-batch`), `--import-batch`: identical to the online run. Then a results file with a foreign
   custom_id, a truncated last line and a duplicate: exit code and counts as documented (the lost
   request is exported again and completes the run).

    .venv/bin/python benchmarks/bench_batch.py [--requests 1000]

Prints a table and exits 1 when a bar is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from bench_fault_runs import lines
from bench_resume import write_candidates
from openai_server import spawn_server

TEACHER = "openai/loopback"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "R2R_API_KEY": "sk-bench-0123456789"}
FIELDS = ("reasoning", "relevance", "score")


def cmd(src: Path, out: Path, url: str | None, *extra: str) -> list[str]:
    base = [sys.executable, "-m", "r2r_synth.cli", "generate", "-i", str(src), "-o", str(out), "-t", TEACHER,
            "--depth", "10", "--pairs", "none"]
    return base + (["--api-base", url] if url else []) + list(extra)


def sh(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=1800, check=False)


def until_done(args: list[str], *, limit: int = 12) -> tuple[list[int], float]:
    """Run `args` until it exits 0 (a user's `while exit code is 5 or 4` loop, without the sleep);
    returns the exit codes and the wall time."""
    codes, t0 = [], time.monotonic()
    for _ in range(limit):
        p = sh(args)
        codes.append(p.returncode)
        if p.returncode == 0:
            break
        if p.returncode not in (4, 5):
            raise SystemExit(f"unexpected exit {p.returncode}: {p.stderr[-2000:]}")
    return codes, time.monotonic() - t0


def records(out: Path) -> dict[str, tuple]:
    return {r["key"]: tuple(r[f] for f in FIELDS) for r in lines(out / "direct.jsonl")}


def server_batches(log: Path) -> list[dict]:
    return [ev["batch_event"] for ev in lines(log) if "batch_event" in ev]


def answered(log: Path) -> int:
    return sum(1 for ev in lines(log) if "reply" in ev)


def kill_after(args: list[str], *, ready) -> int:
    """Start `args`, SIGKILL it the moment `ready()` holds; returns its exit status."""
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not ready():
        if proc.poll() is not None:
            raise SystemExit(f"generate ended before the moment to kill it: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("timed out waiting for the moment to kill generate")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    return proc.wait(30)


def batch_events(out: Path) -> list[str]:
    return [ev["t"] for ev in lines(out / "batches.jsonl")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000, help="direct requests (10 per query)")
    args = ap.parse_args()
    rows: list[list[str]] = []
    bars: list[tuple[str, bool]] = []
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        work = Path(tmp)
        src = work / "cands.jsonl"
        write_candidates(src, args.requests // 10, 10)
        n = args.requests

        # 1. online vs --batch
        log = work / "server1.jsonl"
        with spawn_server(log_path=str(log)) as url:
            t0 = time.monotonic()
            online = sh(cmd(src, work / "online", url, "-c", "16"))
            online_s = time.monotonic() - t0
            codes, batch_s = until_done(cmd(src, work / "batch", url, "--batch"))
        ref, got = records(work / "online"), records(work / "batch")
        same = online.returncode == 0 and len(ref) == n and set(ref) == set(got) and ref == got
        rows.append(["online", f"exit {online.returncode}, {len(ref)} records", f"{online_s:.1f} s"])
        rows.append(["--batch, rerun until exit 0", f"exit codes {codes}, {len(got)} records", f"{batch_s:.1f} s"])
        rows.append(["same keys / same contents", f"{set(ref) == set(got)} / {ref == got}",
                     f"{sum(ref[k] == got.get(k) for k in ref)}/{len(ref)} records equal"])
        bars.append((f"--batch of {n} direct requests = online (keys and contents)", same))

        # 2. kill -9 right after submission: (a) once the id is recorded, (b) while the create's reply is held
        for label, hold, moment in (("after the batch id is recorded", 0.0, "batch"),
                                    ("between create and its id", 30.0, "creating")):
            out, log = work / f"kill-{moment}", work / f"server-{moment}.jsonl"
            with spawn_server(log_path=str(log), batch_delay=5.0, batch_create_hold=hold) as url:
                if moment == "batch":
                    def ready(out=out) -> bool:
                        return "batch" in batch_events(out)
                else:
                    def ready(log=log) -> bool:
                        return any(e["event"] == "batch" for e in server_batches(log))
                kill_after(cmd(src, out, url, "--batch"), ready=ready)
                at_kill = batch_events(out)
                codes, _ = until_done(cmd(src, out, url, "--batch"))
                time.sleep(0.2)
            evs = server_batches(log)
            uploads, created = sum(e["event"] == "file" for e in evs), sum(e["event"] == "batch" for e in evs)
            got = records(out)
            ok = uploads == 1 and created == 1 and got == ref and answered(log) == n
            rows.append([f"kill -9 {label}", f"batches.jsonl at the kill: {at_kill}",
                         (f"reruns {codes}; server: {uploads} upload, {created} batch, {answered(log)} answers; "
                         f"{len(got)} records = online: {got == ref}")])
            bars.append((f"kill -9 {label}: one submission, every result collected", ok))

        # 3. 5 % of the items failed by the server
        out, log = work / "fail5", work / "server-fail5.jsonl"
        with spawn_server(log_path=str(log), batch_fail_rate=0.05, batch_seed=7) as url:
            codes, _ = until_done(cmd(src, out, url, "--batch"))
            time.sleep(0.2)
        rounds = [ev["items"] for ev in server_batches(log) if ev["event"] == "batch"]
        failed = [ev["failed"] for ev in lines(out / "batches.jsonl") if ev["t"] == "collected"]
        got = records(out)
        ok = got == ref and answered(log) == n and lines(out / "rejects.jsonl") == []
        rows.append(["5 % of items failed", f"exit codes {codes}",
                     (f"batches of {rounds} requests, {failed} failed in each; {answered(log)} answers; "
                     f"{len(got)} records = online: {got == ref}")])
        bars.append(("failed items asked again by the next run, then complete", ok))

        # 4. export -> runner -> import, then a damaged results file
        out, requests, results = work / "files", work / "requests.jsonl", work / "results.jsonl"
        runner = [sys.executable, str(REPO / "tests" / "openai_batches.py"), "run-batch", "-i", str(requests),
                  "-o", str(results)]
        ex = sh(cmd(src, out, None, "--export-batch", str(requests)))
        rb = sh(runner)
        im = sh(cmd(src, out, None, "--import-batch", str(results)))
        got = records(out)
        ok = ex.returncode == 0 and rb.returncode == 0 and im.returncode == 0 and got == ref
        rows.append(["--export-batch / runner / --import-batch", (f"exit {ex.returncode} / {rb.returncode} / "
                     f"{im.returncode}"), f"{len(got)} records = online: {got == ref}"])
        bars.append(("export, runner, import = online", ok))

        out = work / "damaged"
        sh(cmd(src, out, None, "--export-batch", str(requests)))
        sh(runner)
        good = results.read_text().splitlines()
        foreign = json.loads(good[0]) | {"custom_id": "from-another-run"}
        results.write_text("\n".join([good[0], json.dumps(foreign), *good[1:-1], good[5],
                                      good[-1][: len(good[-1]) // 2]]))
        im = sh(cmd(src, out, None, "--import-batch", str(results)))
        m = json.loads((out / "manifest.json").read_text())
        counts = m["extra"]["batches"]["import"]
        rejects = lines(out / "rejects.jsonl")
        again = sh(cmd(src, out, None, "--export-batch", str(requests)))
        re_exported = len(requests.read_text().splitlines())
        sh(runner)
        final = sh(cmd(src, out, None, "--import-batch", str(results)))
        got = records(out)
        ok = (im.returncode == 5 and counts["unknown_custom_id"] == 1 and counts["malformed"] == 1
              and counts["duplicates"] == 1 and counts["results"] == n - 1 and len(rejects) == 2
              and all(r["cause"] == "input" for r in rejects) and again.returncode == 0 and re_exported == 1
              and final.returncode == 0 and got == ref)
        lines_named = sorted(r["inputs"]["line"] for r in rejects)
        rows.append(["damaged results file", f"exit {im.returncode}; {counts}",
                     (f"input rejects at lines {lines_named}; re-export {re_exported} request, import exit "
                     f"{final.returncode}; {len(got)} records = online: {got == ref}")])
        bars.append(("foreign custom_id, truncated last line, duplicate: handled, exit code and counts", ok))

    width = [max(len(r[i]) for r in rows) for i in range(2)]
    print(f"{'what':<{width[0]}}  {'result':<{width[1]}}  detail")
    for r in rows:
        print(f"{r[0]:<{width[0]}}  {r[1]:<{width[1]}}  {r[2]}")
    for name, ok in bars:
        print(f"{name}: {'PASS' if ok else 'FAIL'}")
    return 0 if all(ok for _, ok in bars) else 1


if __name__ == "__main__":
    sys.exit(main())
