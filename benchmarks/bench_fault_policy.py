"""Fault bar of `optimize` and `evaluate`: a teacher that fails now and then must not change the figures.

The loopback OpenAI server (tests/openai_server.py, in its own process so its CPU is apart) answers
the same prompts twice: once clean, once with 20 % 429s, 10 % 500s and 5 % timeouts injected (a
reply held `--fault-sleep` seconds past the client's `--timeout`). On the same labeled data and
seed, with DSPy's cache off, the real commands

- `r2r-synth optimize --evaluate-only` must report every metric of every program as the clean run;
- `r2r-synth evaluate --system teacher:openai/loopback` must give the clean run's measures.

The call policy's retries absorb the faults; a call that still fails is left out of the metrics
(never scored as a wrong answer) and counted. `--max-retries` (default 10: a call then fails for
good with odds of 0.35^11, about 1e-5) keeps the bar about the policy, not about luck. The table
shows clean and faulted figures side by side, the requests the server saw, the retries (requests
beyond one per call) and the calls that failed for good; the script exits 1 when a bar is missed.

    .venv/bin/python benchmarks/bench_fault_policy.py                  # DL19 when ../shared/data has it
    .venv/bin/python benchmarks/bench_fault_policy.py --data sample    # examples/sample_candidates.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from openai_server import spawn_server

CLI = str(REPO / ".venv" / "bin" / "r2r-synth") if (REPO / ".venv" / "bin" / "r2r-synth").exists() else "r2r-synth"
FAULTS = {"429": 0.2, "500": 0.1, "timeout": 0.05}
DL19 = REPO.parent / "shared" / "data" / "trec-dl19"
SAMPLE = REPO / "examples" / "sample_candidates.jsonl"
COUNTS = ("n", "failed_calls", "queries_left_out")  # r2r_synth.optimize.COUNTS: counts, not metrics


def data_args(args: argparse.Namespace) -> list[str]:
    if args.data == "sample":
        return ["-i", str(SAMPLE)]
    return ["-i", str(DL19 / "bm25_top100.json"), "--qrels", str(DL19 / "qrels.txt"), "--limit", str(args.limit),
            "--depth", str(args.depth)]


def cli(*argv: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([CLI, *argv], check=False, capture_output=True, text=True, env={**os.environ, "COLUMNS": "160"})
    if proc.returncode != 0:
        sys.exit(f"r2r-synth {' '.join(argv[:1])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, proc.stdout


def requests_in(log: Path) -> tuple[int, str]:
    """The requests the server logged (reply lines aside), and the faults it injected among them."""
    entries = [e for e in map(json.loads, log.read_text().splitlines()) if "n" in e] if log.exists() else []
    faults: dict[str, int] = {}
    for e in entries:
        a = e["action"]
        if a != "ok":
            kind = "timeout" if "sleep" in a else str(a.get("status"))
            faults[kind] = faults.get(kind, 0) + 1
    return len(entries), " ".join(f"{k}:{v}" for k, v in sorted(faults.items())) or "none"


def optimize_run(args: argparse.Namespace, tmp: Path, label: str, faults: dict | None) -> dict:
    log = tmp / f"optimize.{label}.requests.jsonl"
    with spawn_server(faults=faults, fault_seed=args.seed, fault_sleep=args.fault_sleep, log_path=str(log)) as url:
        wall, _ = cli("optimize", *data_args(args), "-t", "openai/loopback", "--api-base", url, "--evaluate-only",
                      "--no-cache", "--programs-dir", str(tmp / "programs"), "--report", str(tmp / f"{label}.json"),
                      "--seed", str(args.seed), "--timeout", str(args.timeout), "--max-retries", str(args.max_retries),
                      "-c", str(args.concurrency))
    report = json.loads((tmp / f"{label}.json").read_text())
    calls = sum(v for p in report["programs"].values() for v in p["calls"].values())
    metrics = {f"{name} {k}": v for name, p in report["programs"].items() for k, v in p["before"].items()
               if k not in COUNTS}
    requests, faults = requests_in(log)
    return {"metrics": metrics, "calls": calls, "failed": report["failed_calls"], "requests": requests, "faults": faults,
            "left_out": int(sum(p["before"].get("queries_left_out") or 0 for p in report["programs"].values())),
            "wall": wall}


def evaluate_run(args: argparse.Namespace, tmp: Path, label: str, faults: dict | None) -> dict:
    log = tmp / f"evaluate.{label}.requests.jsonl"
    system = "teacher:openai/loopback"
    with spawn_server(faults=faults, fault_seed=args.seed, fault_sleep=args.fault_sleep, log_path=str(log)) as url:
        wall, _ = cli("evaluate", *data_args(args), "-s", system, "--api-base", url, "--out", str(tmp / label),
                      "--programs-dir", str(tmp / "programs"), "--timeout", str(args.timeout),
                      "--max-retries", str(args.max_retries), "-c", str(args.concurrency))
    ev = json.loads((tmp / label / "evaluation.json").read_text())
    row = ev["systems"][system]
    requests, faults = requests_in(log)
    return {"metrics": {m: row[m] for m in ev["measures"]}, "calls": row["pairs"], "failed": row["failed_calls"],
            "requests": requests, "faults": faults, "left_out": row["queries_left_out"], "wall": wall}


def same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def compare(command: str, clean: dict, faulty: dict) -> bool:
    """Print clean and faulted figures side by side; True when the bar is met."""
    print(f"\n{command}")
    print(f"  {'metric':<44} {'clean':>9} {'faulted':>9}  same")
    for name, value in clean["metrics"].items():
        other = faulty["metrics"].get(name)
        print(f"  {name:<44} {_num(value):>9} {_num(other):>9}  {'yes' if same(value, other) else 'NO'}")
    rows = [("teacher calls", "calls"), ("requests the server saw", "requests"),
            ("calls failed after the retries", "failed"), ("queries left out", "left_out")]
    print(f"  {'':<44} {'clean':>9} {'faulted':>9}")
    for label, key in rows:
        print(f"  {label:<44} {clean[key]!s:>9} {faulty[key]!s:>9}")
    retries = {k: r["requests"] - r["calls"] for k, r in (("clean", clean), ("faulty", faulty))}
    print(f"  {'retries (requests beyond one per call)':<44} {retries['clean']:>9} {retries['faulty']:>9}")
    print(f"  {'wall seconds':<44} {clean['wall']:>9.1f} {faulty['wall']:>9.1f}")
    print(f"  faults the server injected in the faulted run: {faulty['faults']}")
    passed = (clean["metrics"].keys() == faulty["metrics"].keys()
              and all(same(v, faulty["metrics"][k]) for k, v in clean["metrics"].items())
              and clean["failed"] == 0 and faulty["faults"] != "none")
    why = ("" if passed else f" ({faulty['failed']} calls failed for good)" if faulty["failed"]
           else " (no fault was injected: nothing was tested)" if faulty["faults"] == "none" else "")
    print(f"  {'PASS' if passed else 'FAIL'}: the faulted run's figures equal the clean run's{why}")
    return passed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=("dl19", "sample"), default="dl19" if DL19.exists() else "sample")
    ap.add_argument("--limit", type=int, default=20, help="DL19: queries (a quarter validate for optimize)")
    ap.add_argument("--depth", type=int, default=10, help="DL19: candidates per query")
    ap.add_argument("--seed", type=int, default=0, help="the split's and the fault draws' seed")
    ap.add_argument("--timeout", type=float, default=1.0, help="client seconds per request")
    ap.add_argument("--fault-sleep", type=float, default=3.0, help="how long a 'timeout' fault holds its reply")
    ap.add_argument("--max-retries", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    if args.data == "dl19" and not DL19.exists():
        print(f"skipped: {DL19} is absent (the shared benchmark data); run with --data sample")
        return 0

    print(f"data: {args.data}" + (f" (--limit {args.limit} --depth {args.depth})" if args.data == "dl19" else "")
          + f"; faults {FAULTS}, fault sleep {args.fault_sleep} s; client --timeout {args.timeout} "
          f"--max-retries {args.max_retries}; seed {args.seed}; DSPy cache off")
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as d:
        tmp = Path(d)
        for command, runner in (("optimize --evaluate-only", optimize_run), ("evaluate teacher:", evaluate_run)):
            clean = runner(args, tmp, f"{command.split()[0]}-clean", None)
            faulty = runner(args, tmp, f"{command.split()[0]}-faulty", FAULTS)
            ok &= compare(command, clean, faulty)
    print(f"\n{'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
