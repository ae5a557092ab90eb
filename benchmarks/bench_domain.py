"""The domain path end to end on BEIR SciFact: BM25 candidates -> gold labels (the stand-in for a strong
teacher) -> train -> evaluate on SciFact claims that were never trained on.

SciFact's 300 test claims are not in ../shared/data (only the 809 training claims are), and a recipe is
never chosen on a test collection: the training claims are split *by query* into train and dev
(a seeded hash of the qid, `--dev-fraction`), students train on the train claims with
`r2r-synth train --corpus train.jsonl --qrels qrels.train.tsv --labels gold`, and every figure is on
the dev claims. Each dev query's BM25 top `--depth` (100) is reranked whole (DESIGN.md rule 13).

Rows: BM25 (the toolkit's BEIR reader + BM25 first stage), the untouched base (all-MiniLM-L6-v2 as a
bi-encoder), and each student, alone and interpolated with BM25. The interpolation is
``w * minmax(BM25) + (1 - w) * minmax(system)`` per query, with `w` chosen on `--fit-queries`
*training* claims (a seeded sample; never on dev), for the base as well as the students. The p value is
a paired t-test over dev queries against the best of BM25 and the base.

Bar (exit 1 when missed), the issue's, applied to the dev split: the best student (alone or
interpolated) >= max(BM25, base) + 0.02 nDCG@10. The issue's own bar is on SciFact's 300 test
claims, which this project cannot read; the dev split is the figure it has.

    .venv/bin/python benchmarks/bench_domain.py [--students bi-encoder,cross-encoder] [--epochs 1]
        [--model NAME=DIR ...] [--data DIR] [--out DIR]

About 20 minutes for the bi-encoder on a 2-core CPU (mining, one epoch, scoring dev and the fit sample).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "scifact"
GAIN = 0.02


def is_dev(qid: str, *, seed: int, fraction: float) -> bool:
    h = hashlib.sha256(f"{seed}:{qid}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


def minmax(xs: list[float]) -> list[float]:
    lo, hi = min(xs), max(xs)
    return [(x - lo) / (hi - lo) if hi > lo else 0.0 for x in xs]


def fused(bm25: dict[str, dict[str, float]], system: dict[str, dict[str, float]], w: float) -> dict:
    out = {}
    for qid, scores in system.items():
        docs = list(scores)
        b = minmax([bm25[qid][d] for d in docs])
        s = minmax([scores[d] for d in docs])
        out[qid] = {d: w * x + (1 - w) * y for d, x, y in zip(docs, b, s)}
    return out


class Scorer:
    """Scores (query, candidates) with a bi-encoder (each unique text embedded once) or a student."""

    def __init__(self, path: str, kind: str):
        self.kind = kind
        if kind == "bi-encoder":
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(path, device="cpu", local_files_only=True)
        else:
            from r2r_synth.student.base import load_student

            self.student = load_student(path, device="cpu")
        self.cache: dict[str, object] = {}

    def run(self, cands: list) -> dict[str, dict[str, float]]:
        if self.kind != "bi-encoder":
            return {c.query.qid: dict(zip([d.docid for d in c.documents],
                                          self.student.score(c.query.text, [d.full_text() for d in c.documents])))
                    for c in cands}
        texts = list(dict.fromkeys(d.full_text() for c in cands for d in c.documents if d.full_text() not in self.cache))
        kw = {"normalize_embeddings": True, "convert_to_numpy": True, "show_progress_bar": False, "batch_size": 32}
        if texts:
            self.cache.update(zip(texts, self.model.encode(texts, **kw)))
        queries = self.model.encode([c.query.text for c in cands], **kw)
        return {c.query.qid: {d.docid: float(self.cache[d.full_text()] @ q) for d in c.documents}
                for c, q in zip(cands, queries)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "bench-domain")
    ap.add_argument("--students", default="bi-encoder", help="comma-separated kinds to train")
    ap.add_argument("--model", action="append", default=[], help="NAME=DIR: measure an existing student too")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-minutes", type=float, default=None, help="training budget per student")
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--dev-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=13, help="the split's seed (training keeps its own, 42)")
    ap.add_argument("--fit-queries", type=int, default=100, help="training claims that choose the BM25 weight")
    args = ap.parse_args()
    qrels_file = args.data / "qrels.train.tsv"
    if not (args.data / "corpus.jsonl").exists() or not qrels_file.exists():
        print(f"missing {args.data}: the benchmark needs ../shared/data/scifact", file=sys.stderr)
        return 2

    import random

    from scipy.stats import ttest_rel

    from r2r_synth.atomic import write_json_atomic
    from r2r_synth.config import TrainConfig
    from r2r_synth.io.candidates import load_candidates
    from r2r_synth.metrics import ir_eval, ir_eval_per_query
    from r2r_synth.student.cross_encoder import default_base
    from r2r_synth.student.train import train

    t0 = time.perf_counter()
    cands = load_candidates(args.data, qrels=qrels_file, depth=args.depth)
    bm25_s = time.perf_counter() - t0
    dev = [c for c in cands if is_dev(c.query.qid, seed=args.seed, fraction=args.dev_fraction)]
    trainq = [c for c in cands if not is_dev(c.query.qid, seed=args.seed, fraction=args.dev_fraction)]
    fit = random.Random(args.seed).sample(trainq, min(args.fit_queries, len(trainq)))
    args.out.mkdir(parents=True, exist_ok=True)
    train_file = args.out / "train.jsonl"
    train_file.write_text("".join(c.model_dump_json() + "\n" for c in trainq))
    (args.out / "dev.jsonl").write_text("".join(c.model_dump_json() + "\n" for c in dev))
    qrels = {c.query.qid: dict(c.qrels) for c in cands}
    print(f"SciFact training claims: {len(cands)} (BM25 top {args.depth} in {bm25_s:.0f} s); split by query, seed "
          f"{args.seed}: {len(trainq)} train, {len(dev)} dev; BM25 weight fitted on {len(fit)} train claims")

    models: dict[str, tuple[str, str]] = {"base": (default_base(), "bi-encoder")}
    train_s: dict[str, float] = {}
    for kind in [k for k in args.students.split(",") if k]:
        out = args.out / kind
        t = time.perf_counter()
        train(TrainConfig(student=kind, corpus=[train_file], qrels=qrels_file, labels="gold", out=out,
                          epochs=args.epochs, max_minutes=args.max_minutes))
        train_s[kind] = time.perf_counter() - t
        models[kind] = (str(out), "bi-encoder" if kind == "bi-encoder" else "student")
    for spec in args.model:
        name, _, path = spec.partition("=")
        models[name] = (path, "student")

    bm25 = {c.query.qid: dict(zip([d.docid for d in c.documents],
                                  c.scores or [-float(i) for i in range(len(c.documents))])) for c in cands}
    runs: dict[str, dict] = {"bm25": {c.query.qid: bm25[c.query.qid] for c in dev}}
    weights: dict[str, float] = {}
    score_s: dict[str, float] = {}
    grid = [i / 20 for i in range(21)]
    for name, (path, kind) in models.items():
        t = time.perf_counter()
        scorer = Scorer(path, kind)
        on_dev, on_fit = scorer.run(dev), scorer.run(fit)
        score_s[name] = time.perf_counter() - t
        fit_q = {c.query.qid: qrels[c.query.qid] for c in fit}
        w = max(grid, key=lambda w: (ir_eval(fit_q, fused(bm25, on_fit, w), ["nDCG@10"])["nDCG@10"], -w))
        weights[name] = w
        runs[name] = on_dev
        runs[f"{name} + BM25 (w={w:.2f})"] = fused(bm25, on_dev, w)

    dev_q = {c.query.qid: qrels[c.query.qid] for c in dev}
    rows = {name: ir_eval(dev_q, run, ["nDCG@10", "RR@10", "R@100"]) for name, run in runs.items()}
    per_q = {name: ir_eval_per_query(dev_q, run, ["nDCG@10"]) for name, run in runs.items()}
    ref = max(("bm25", "base"), key=lambda n: rows[n]["nDCG@10"])
    qids = sorted(per_q[ref])
    print(f"\nSciFact dev split ({len(dev)} training claims never trained on), BM25 top-{args.depth} rerank")
    print(f"{'system':<36}{'nDCG@10':>9}{'RR@10':>8}{'R@100':>8}{'p vs ' + ref:>12}")
    for name, r in rows.items():
        if name == ref:
            p = "-"
        else:
            a = [per_q[name][q]["nDCG@10"] for q in qids]
            b = [per_q[ref][q]["nDCG@10"] for q in qids]
            p = f"{ttest_rel(a, b).pvalue:.3g}" if a != b else "1"
        print(f"{name:<36}{r['nDCG@10']:>9.4f}{r['RR@10']:>8.4f}{r['R@100']:>8.4f}{p:>12}")
    # the table in evaluation.json's shape, for `publish --evaluation` of a student trained here
    write_json_atomic(args.out / "evaluation.json", {
        "input": f"{args.data.name} dev split (seed {args.seed})", "qrels": qrels_file.name,
        "queries": len(dev), "judged_queries": len(dev_q), "depth": args.depth,
        "measures": ["nDCG@10", "RR@10", "R@100"], "systems": rows, "bm25_weights": weights})
    print()
    for kind, s in train_s.items():
        print(f"training {kind}: {s:.0f} s")
    for name, s in score_s.items():
        print(f"scoring {name} on {len(dev) + len(fit)} queries: {s:.0f} s")

    bar = max(rows["bm25"]["nDCG@10"], rows["base"]["nDCG@10"]) + GAIN
    students = {n: r["nDCG@10"] for n, r in rows.items() if n not in ("bm25", "base") and not n.startswith("base +")}
    if not students:
        print("no student measured")
        return 2
    best = max(students, key=students.get)
    ok = students[best] >= bar
    print(f"\n{'PASS' if ok else 'MISS'}  best student >= max(BM25, base) + {GAIN} on the dev split: "
          f"{best} {students[best]:.4f} vs {bar:.4f}")
    print("note: the issue's bar is on SciFact's 300 test claims (BM25 0.6762, base 0.6668 there), which are not "
          "in ../shared/data: this project cannot measure it; the dev split above is the figure it has.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
