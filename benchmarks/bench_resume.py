"""Resume bar of `generate`: SIGKILL a real `r2r-synth generate` process half-way, rerun the same
command, and check that

1. the final key set equals an uninterrupted run's key set, every key in exactly one file, and the
   manifest's counts equal the files' line counts;
2. the server (a separate process logging every request as it arrives) saw no request after the
   kill for any key that was finished before it: a finished request is never billed twice.

Requests that were in flight at the kill are asked again (they were never finished); the table
shows how many.

    .venv/bin/python benchmarks/bench_resume.py [--queries 40] [--transport auto|litellm]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from openai_server import spawn_server

from r2r_synth.schemas import Candidates, Document, Query

CLI = str(REPO / ".venv" / "bin" / "r2r-synth") if (REPO / ".venv" / "bin" / "r2r-synth").exists() else "r2r-synth"
PASSAGE = re.compile(r"Passage (r\d+-\d+):")


def write_candidates(path: Path, n_queries: int, depth: int) -> None:
    with path.open("w") as fh:
        for q in range(n_queries):
            docs = [Document(docid=f"r{q}-{d}", text=f"Passage r{q}-{d}: the tide carries sand {q * depth + d} "
                             "metres along the shore each day, building a spit.") for d in range(depth)]
            c = Candidates(query=Query(qid=f"rq{q}", text=f"how fast does a sand spit grow {q}"), documents=docs)
            fh.write(c.model_dump_json() + "\n")


def keys_and_ids(out: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """key -> (kind, the passages it asked about), for every finished record or reject."""
    found = {}
    for name in ("direct.jsonl", "comparison.jsonl", "rejects.jsonl"):
        p = out / name
        if not p.exists():
            continue
        for line in p.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # the torn last line of a killed writer: not finished
            if r["kind"] == "direct":
                ids = frozenset([r["document"]["docid"]]) if "document" in r else frozenset([r["inputs"]["docid"]])
            else:
                ids = (frozenset([r["doc_a"]["docid"], r["doc_b"]["docid"]]) if "doc_a" in r
                       else frozenset([r["inputs"]["docid_a"], r["inputs"]["docid_b"]]))
            found[r["key"]] = (r["kind"], ids)
    return found


def command(cands: Path, out: Path, url: str, transport: str, concurrency: int) -> list[str]:
    return [CLI, "generate", "-i", str(cands), "-o", str(out), "-t", "openai/loopback", "--api-base", url,
            "--depth", "5", "--pairs", "adjacent", "-c", str(concurrency), "--transport", transport]


def finished_lines(out: Path) -> int:
    n = 0
    for name in ("direct.jsonl", "comparison.jsonl", "rejects.jsonl"):
        p = out / name
        if p.exists():
            n += p.read_bytes().count(b"\n")
    return n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--transport", default="auto")
    args = ap.parse_args()
    depth = 5
    total = args.queries * (depth + depth - 1)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        cands = tmp / "cands.jsonl"
        write_candidates(cands, args.queries, depth)

        ref = tmp / "ref"
        with spawn_server(latency=args.latency, log_path=str(tmp / "ref.log")) as url:
            t0 = time.perf_counter()
            subprocess.run(command(cands, ref, url, args.transport, args.concurrency), check=True, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ref_wall = time.perf_counter() - t0
        ref_keys = set(keys_and_ids(ref))

        out = tmp / "killed"
        log = tmp / "killed.log"
        with spawn_server(latency=args.latency, log_path=str(log)) as url:
            proc = subprocess.Popen(command(cands, out, url, args.transport, args.concurrency), env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while finished_lines(out) < total // 2:
                if proc.poll() is not None:
                    print("the run finished before it could be killed half-way; use more --queries")
                    return 1
                time.sleep(0.005)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            t_kill = time.time()
            at_kill = keys_and_ids(out)
            time.sleep(0.3)  # let requests already on the wire reach the server's log
            subprocess.run(command(cands, out, url, args.transport, args.concurrency), check=True, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        final = keys_and_ids(out)
        manifest = json.loads((out / "manifest.json").read_text())
        requests = [r for r in map(json.loads, log.read_text().splitlines()) if "reply" not in r]

    # Which finished keys were asked again after the kill?
    finished_sets = {(kind, ids) for kind, ids in at_kill.values()}
    after = [r for r in requests if r["t"] > t_kill]
    again = []
    for r in after:
        ids = frozenset(PASSAGE.findall(r["user"]))
        kind = "direct" if len(ids) == 1 else "comparison"
        if (kind, ids) in finished_sets:
            again.append(r)
    line_counts = {k: sum(1 for v in final.values() if v[0] == k) for k in ("direct", "comparison")}
    manifest_counts = {k: manifest["counts"][k]["records"] + manifest["counts"][k]["rejects"]
                       for k in ("direct", "comparison")}
    rows = [
        ("requests (keys) in the job", total),
        ("uninterrupted run: keys", len(ref_keys)),
        ("killed run: keys finished at SIGKILL", len(at_kill)),
        ("after rerun: keys", len(final)),
        ("server requests after the kill", len(after)),
        ("  of them for keys finished before the kill", len(again)),
        ("killed+rerun total requests / uninterrupted LM calls", f"{len(requests)} / {total + total - args.queries * depth}"),
    ]
    print(f"\nresume: {args.queries} queries, depth {depth}, adjacent pairs, concurrency {args.concurrency}, "
          f"transport {args.transport}, server latency {args.latency * 1000:.0f} ms; uninterrupted wall {ref_wall:.1f} s")
    for name, v in rows:
        print(f"  {name:58s} {v}")
    checks = {
        "final key set == uninterrupted key set": set(final) == ref_keys,
        "manifest counts == file line counts": manifest_counts == line_counts,
        "no second request for a finished key": not again,
        "killed half-way (some but not all finished)": 0 < len(at_kill) < total,
    }
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAIL'}] {name}")
    ok = all(checks.values())
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
