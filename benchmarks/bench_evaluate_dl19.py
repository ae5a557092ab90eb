"""`r2r-synth evaluate --depth 10` on TREC DL19 (BM25 top-100, 43 judged queries), as IR evaluates
a reranker, through the command line. Bars (exit 1 when one is missed):

- every system's TREC run holds all 100 candidates of each of the 43 queries (the top 10 reranked,
  the other 90 in first-stage order);
- the table prints a paired test's p-value for each system against the first (bm25), for every
  measure a reranker can change, and evaluation.json holds both tests' p-values;
- a plain sentence-transformers cross-encoder directory (no r2r_config.json) is accepted as
  `cross-encoder:DIR`.

The cross-encoder is `--cross-encoder DIR` (any `CrossEncoder` directory, e.g. an MS MARCO one
downloaded beforehand), or by default a cross-encoder trained here by `r2r-synth train` on
msmarco_500 for `--train-minutes` and copied without its r2r_config.json, so that only
sentence-transformers reads it. Systems: bm25, the base as a bi-encoder, the cross-encoder, and
their reciprocal rank fusion with bm25; measures nDCG@10, RR@10 and R@100 (the last named as one no
reranker can change at depth 10).

    .venv/bin/python benchmarks/bench_evaluate_dl19.py [--cross-encoder DIR] [--train-minutes 20] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
R2R = str(REPO / ".venv" / "bin" / "r2r-synth")


def plain_cross_encoder(args: argparse.Namespace) -> Path:
    """A CrossEncoder directory without r2r_config.json: --cross-encoder, or one trained here."""
    if args.cross_encoder is not None:
        return args.cross_encoder
    from r2r_synth.config import TrainConfig
    from r2r_synth.student.train import train

    trained = args.out / "trained-ce"
    t0 = time.perf_counter()
    train(TrainConfig(student="cross-encoder", corpus=[args.corpus], out=trained, max_minutes=args.train_minutes))
    print(f"trained a cross-encoder for {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    plain = args.out / "plain-ce"
    shutil.rmtree(plain, ignore_errors=True)
    shutil.copytree(trained, plain, ignore=shutil.ignore_patterns("r2r_config.json"))
    return plain


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The evaluate table's cells by system name (header under the key "")."""
    rows: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        sep = "┃" if line.startswith("┃") else "│" if line.startswith("│") else None
        if sep:
            cells = [c.strip() for c in line.split(sep)[1:-1]]
            rows["" if sep == "┃" else cells[0]] = cells
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dl19", type=Path, default=DATA / "trec-dl19")
    ap.add_argument("--corpus", type=Path, default=DATA / "r2r-gpt4-msmarco" / "msmarco_500.jsonl")
    ap.add_argument("--cross-encoder", type=Path, default=None, help="a plain CrossEncoder directory to measure")
    ap.add_argument("--train-minutes", type=float, default=20.0, help="training budget of the default cross-encoder")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "bench-evaluate-dl19")
    args = ap.parse_args()
    for p in (args.dl19, args.corpus):
        if not p.exists():
            print(f"missing {p}: the benchmark needs ../shared/data", file=sys.stderr)
            return 2
    ce = plain_cross_encoder(args)
    out = args.out / "eval"
    cmd = [R2R, "evaluate", "-i", str(args.dl19 / "bm25_top100.json"), "--qrels", str(args.dl19 / "qrels.txt"),
           "--depth", "10", "-s", "bm25", "-s", "bi-encoder", "-s", f"ce=cross-encoder:{ce}", "-s", "rrf=fuse:bm25+ce",
           "-m", "nDCG@10", "-m", "RR@10", "-m", "R@100", "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "COLUMNS": "160"})
    print(f"$ {' '.join(cmd)}   ({time.perf_counter() - t0:.0f} s, exit {proc.returncode})")
    print(proc.stdout)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return 1
    report = json.loads((out / "evaluation.json").read_text())
    names = list(report["systems"])
    lengths = {}
    for name in names:
        per_query: dict[str, int] = {}
        for line in (out / f"run.{name}.trec").read_text().splitlines():
            per_query[line.split()[0]] = per_query.get(line.split()[0], 0) + 1
        lengths[name] = (len(per_query), sorted(set(per_query.values())))
    rows = table_rows(proc.stdout)
    p_cols = [i for i, h in enumerate(rows.get("", [])) if h == "p"]
    tested = report["significance"]["measures"]
    printed = {n: [rows[n][i] for i in p_cols] for n in names[1:] if n in rows}
    sig = report["significance"]["systems"]
    bars = [
        ("runs of 100 documents for each of the 43 queries", all(v == (43, [100]) for v in lengths.values()),
         ", ".join(f"{n}: {q} queries x {sorted(c)}" for n, (q, c) in lengths.items())),
        (f"a p-value printed for each system against {names[0]} ({', '.join(tested)})",
         len(p_cols) == len(tested) and all(len(c) == len(tested) and all(c) for c in printed.values())
         and all(sig[n][m]["randomization"] is not None and sig[n][m]["t-test"] is not None
                 for n in names[1:] for m in tested),
         "; ".join(f"{n}: p = {', '.join(c)}" for n, c in printed.items())),
        ("a plain sentence-transformers cross-encoder accepted",
         not (ce / "r2r_config.json").exists() and report["systems"]["ce"]["pairs"] == 430,
         f"cross-encoder:{ce} (no r2r_config.json), nDCG@10 {report['systems']['ce']['nDCG@10']:.4f}"),
    ]
    unchanged = report["unchanged_by_reranking"]["measures"]
    print(f"measures no reranker can change at depth 10: {', '.join(unchanged) or 'none'}")
    for name, ok, value in bars:
        print(f"{'PASS' if ok else 'MISS'}  {name}: {value}")
    return 0 if all(ok for _, ok, _ in bars) else 1


if __name__ == "__main__":
    sys.exit(main())
