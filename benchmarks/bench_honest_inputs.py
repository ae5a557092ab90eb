"""Bars of reading inputs honestly, on SciFact (the BEIR train split of ../shared/data/scifact):

1. **BM25 keeps its scores**: `r2r-synth evaluate -s bm25` writes `run.bm25.trec`; every score in it
   that does not tie with the one ranked above equals the first stage's BM25 score of that (query,
   document) to the run file's 6 decimals (a tied score is lowered by 1e-6 per tie, so every reader
   sees the first stage's order; they are counted).
2. **The split is named**: `evaluation.json` records the split read (`train`, SciFact's only one)
   and its qrels file.
3. **--pairs gold on positive-only qrels**: over SciFact's queries, how many get at least one gold
   pair at `--depth 10` with unjudged candidates counted as grade 0 (without that rule: none).

    .venv/bin/python benchmarks/bench_honest_inputs.py [--limit 200]

Prints a table and exits 1 when a bar is missed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "scifact"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=None, help="first N queries (default: all 809)")
    args = parser.parse_args()

    from r2r_synth.config import EvaluateConfig
    from r2r_synth.evaluate import evaluate
    from r2r_synth.io.candidates import load_candidates
    from r2r_synth.pairs import select_pairs

    t0 = time.perf_counter()
    cands = load_candidates(SCIFACT, limit=args.limit, depth=100)
    load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        evaluate(EvaluateConfig(input=str(SCIFACT), systems=["bm25"], out=Path(tmp) / "ev", depth=10,
                                limit=args.limit))
        saved = json.loads((Path(tmp) / "ev" / "evaluation.json").read_text())
        run: dict[str, dict[str, float]] = {}
        for line in (Path(tmp) / "ev" / "run.bm25.trec").read_text().splitlines():
            q, _, d, _, score, _ = line.split()
            run.setdefault(q, {})[d] = float(score)
    # A score that ties (at 6 decimals) with the one ranked above it is lowered by 1e-6 per tie so
    # every reader sees the first stage's order; every other score must be BM25's, to 6 decimals.
    diffs, tied, off = [], 0, 0
    for c in cands:
        prev = None
        for d, score in zip(c.documents, c.scores or []):
            units = round(score * 1_000_000)
            diff = abs(run[c.query.qid][d.docid] - score)
            diffs.append(diff)
            if prev is not None and units >= prev:
                tied += 1
            elif diff > 5e-7 + 1e-9:
                off += 1
            prev = units
    worst = max(diffs, default=0.0)

    with_pairs = sum(bool(select_pairs(c, strategy="gold", depth=10)) for c in cands)
    # the rule before: both documents judged, with different grades (SciFact judges only relevant ones)
    judged_only = sum(
        any(a.docid in c.qrels and b.docid in c.qrels and c.qrels[a.docid] != c.qrels[b.docid]
            for a, b in select_pairs(c, strategy="topk", depth=10)) for c in cands)

    rows = [
        ("queries / candidate scores compared", f"{len(cands)} / {len(diffs)}", "", True),
        ("untied scores not BM25's to 6 decimals", str(off), "0", off == 0),
        ("tied scores lowered to keep the order", str(tied), "reported", True),
        ("max |run.bm25.trec - BM25| (ties included)", f"{worst:.2e}", "", True),
        ("evaluation.json split / qrels", f"{saved['split']} / {Path(saved['qrels']).name}", "train / qrels.train.tsv",
         saved["split"] == "train" and saved["qrels"].endswith("qrels.train.tsv")),
        ("queries with a gold pair at depth 10", f"{with_pairs} of {len(cands)}", "> 0", with_pairs > 0),
        ("... with judged documents only (the old rule)", str(judged_only), "", True),
        ("load + BM25 seconds", f"{load_s:.1f}", "", True),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'bar':<{width}}  {'measured':>24}  {'needed':>24}  ok")
    for name, got, need, ok in rows:
        print(f"{name:<{width}}  {got:>24}  {need:>24}  {'yes' if ok else 'NO'}")
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
