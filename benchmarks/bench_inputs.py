"""Inputs benchmark: how fast candidates load, and whether the BM25 first stage is sane.

Rows (median wall time over repeats, on ../shared/data):
  - DL19 RankGPT JSON (43 queries x 100 hits) + qrels   bar: < 1 s
  - SciFact BEIR dir, BM25 top-100 over 5,183 docs for 809 queries   bar: < 60 s
  - Vaswani TREC collection dir, BM25 top-100 (11,429 docs, 93 queries)   bar: < 60 s
and the quality of what they load (nDCG@10 with ir-measures):
  - DL19 BM25 order   bar: 0.5058 (the published figure), to 4 places
  - Vaswani BM25   bar: > 0.3;  SciFact BM25   bar: > 0.6

Prints a table; exits 1 when a bar is missed, 0 (with a note) when the data is absent.
Run: `.venv/bin/python benchmarks/bench_inputs.py [--repeats N]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import ir_measures
from ir_measures import nDCG
from rich.console import Console
from rich.table import Table

from r2r_synth.io.candidates import load_candidates
from r2r_synth.io.trec import read_qrels

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def ndcg10(cands, qrels_path: Path, *, by_position: bool = False) -> float:
    if by_position:
        run = {c.query.qid: {d.docid: -float(i) for i, d in enumerate(c.documents)} for c in cands}
    else:
        run = {c.query.qid: dict(zip((d.docid for d in c.documents), c.scores or [])) for c in cands}
    return ir_measures.calc_aggregate([nDCG @ 10], read_qrels(qrels_path), run)[nDCG @ 10]


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not DATA.exists():
        print(f"{DATA} is absent: nothing to benchmark here")
        return 0

    cases = [
        ("DL19 RankGPT JSON + qrels", lambda: load_candidates(DATA / "trec-dl19/bm25_top100.json",
                                                              qrels=DATA / "trec-dl19/qrels.txt"),
         1.0, DATA / "trec-dl19/qrels.txt", ("==", 0.5058), True),
        ("SciFact BEIR, BM25 top-100", lambda: load_candidates(DATA / "scifact", depth=100),
         60.0, DATA / "scifact/qrels.train.tsv", (">", 0.6), False),
        ("Vaswani TREC dir, BM25 top-100", lambda: load_candidates(DATA / "vaswani", depth=100),
         60.0, DATA / "vaswani/qrels", (">", 0.3), False),
    ]
    table = Table(title="r2r-synth inputs")
    for col in ("input", "queries", "cands", "median s", "bar s", "nDCG@10", "bar", "ok"):
        table.add_column(col)
    failed = False
    for name, fn, bar_s, qrels, (op, bar_q), by_pos in cases:
        secs, cands = timed(fn, args.repeats)
        q = ndcg10(cands, qrels, by_position=by_pos)
        ok_q = round(q, 4) == bar_q if op == "==" else q > bar_q
        ok = secs < bar_s and ok_q
        failed |= not ok
        table.add_row(name, str(len(cands)), str(sum(len(c.documents) for c in cands)), f"{secs:.3f}",
                      f"< {bar_s:g}", f"{q:.4f}", f"{op} {bar_q}", "yes" if ok else "[red]NO[/]")
    Console(width=120).print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
