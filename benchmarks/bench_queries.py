"""Queries from the corpus end to end on BEIR SciFact: corpus -> `r2r-synth queries` (the loopback teacher,
which answers with sentences of the document) -> candidates -> `r2r-synth train` -> the student on the
dev split of SciFact's training claims, beside BM25 and the untouched base.

1. `queries` over a seeded sample of `--docs` abstracts is SIGKILLed once `--kill-after` documents
   have their answer, then rerun to the end. The bar: the rerun asks no key that was finished before
   the kill (read from the run's journal), and its final records and outputs equal those of an
   uninterrupted run of the same command (a second run directory).
2. `train --corpus candidates.jsonl --qrels qrels.tsv --labels gold` (every other option default,
   `--max-minutes` as a budget): the student learns from the synthetic queries only.
3. Evaluation as in benchmarks/bench_domain.py: the real training claims split by query (seed 13, 20%
   dev), each dev claim's BM25 top 100 reranked whole; BM25, the base, the student alone
   (`--no-hybrid`) and as shipped (the hybrid `train` fitted on its own held-out synthetic queries);
   nDCG@10 with paired t and randomization tests against BM25.
   No SciFact test claim is read. The quality figure is reported whatever it is (the loopback
   teacher copies sentences, so its queries are easier than real claims).

    .venv/bin/python benchmarks/bench_queries.py [--docs 1000] [--per-doc 3] [--kill-after 300]
        [--train-minutes 12] [--out DIR] [--data DIR] [--skip-train]
    .venv/bin/python benchmarks/bench_queries.py --student DIR [--skip-base]   # step 3 only

Exit 1 when the resume bar is missed, 2 when the data is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "scifact"
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
KEY = "sk-bench-loopback-0000"


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(1 for line in f if line.endswith(b"\n"))


def records(path: Path) -> dict[str, list[str]]:
    """{key: queries} of a generated_queries.jsonl (a torn last line skipped)."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        out[r["key"]] = r["queries"]
    return out


def sessions_sent(journal: Path) -> list[set[str]]:
    """The keys each session of the journal sent, in session order."""
    order: list[str] = []
    sent: dict[str, set[str]] = {}
    for line in journal.read_text(encoding="utf-8").splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if e["s"] not in sent:
            order.append(e["s"])
            sent[e["s"]] = set()
        if e["t"] == "send":
            sent[e["s"]].add(e["key"])
    return [sent[s] for s in order]


def queries_cmd(args: argparse.Namespace, url: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "r2r_synth.cli", "queries", "--corpus", str(args.data / "corpus.jsonl"),
            "--out", str(out), "--docs", str(args.docs), "--per-doc", str(args.per_doc), "--keep-top",
            str(args.keep_top), "--depth", str(args.depth), "-t", "openai/loopback", "--api-base", url,
            "--api-key", KEY, "--concurrency", "8"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "bench-queries")
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--per-doc", type=int, default=3)
    ap.add_argument("--keep-top", type=int, default=3)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--kill-after", type=int, default=300, help="documents answered before the SIGKILL")
    ap.add_argument("--train-minutes", type=float, default=12.0)
    ap.add_argument("--train-limit", type=int, default=None, help="train on the first N kept queries only")
    ap.add_argument("--train-depth", type=int, default=None, help="train on each query's top K candidates only")
    ap.add_argument("--dev-limit", type=int, default=None, help="measure on the first N dev claims only")
    ap.add_argument("--eval-depth", type=int, default=100,
                    help="rerank each dev claim's BM25 top K (the rest keeps BM25's order)")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--student", type=Path, default=None,
                    help="evaluate this student only (a finished run's): no queries run, no training")
    ap.add_argument("--skip-base", action="store_true",
                    help="leave out the untouched base (bench_domain.py measures it on the same split)")
    ap.add_argument("--seed", type=int, default=13, help="the dev split's seed (bench_domain's)")
    args = ap.parse_args()
    if not (args.data / "corpus.jsonl").exists():
        print(f"missing {args.data}: the benchmark needs ../shared/data/scifact", file=sys.stderr)
        return 2
    if args.student is not None:
        evaluate(args, args.student)
        return 0
    import shutil

    from openai_server import spawn_server

    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    run_dir, ref_dir = args.out / "queries", args.out / "queries-uninterrupted"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ok = True
    with spawn_server(log_path=str(args.out / "server.log")) as url:
        # 1. killed, then resumed
        t0 = time.perf_counter()
        proc = subprocess.Popen(queries_cmd(args, url, run_dir), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        recs = run_dir / "generated_queries.jsonl"
        while proc.poll() is None and count_lines(recs) < args.kill_after:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_s = time.perf_counter() - t0
        before = records(recs)
        t1 = time.perf_counter()
        done = subprocess.run(queries_cmd(args, url, run_dir), env=env, capture_output=True, text=True, check=False)
        resume_s = time.perf_counter() - t1
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            print(f"MISS  the resumed run exited {done.returncode}")
            return 1
        sent = sessions_sent(run_dir / "journal.jsonl")
        again = set().union(*sent[1:]) & set(before) if len(sent) > 1 else set()
        # 2. the same command, never interrupted
        t2 = time.perf_counter()
        ref = subprocess.run(queries_cmd(args, url, ref_dir), env=env, capture_output=True, text=True, check=False)
        ref_s = time.perf_counter() - t2
        if ref.returncode != 0:
            print(ref.stderr[-3000:], file=sys.stderr)
            return 1
    final, reference = records(recs), records(ref_dir / "generated_queries.jsonl")
    same_records = final == reference
    same_outputs = all((run_dir / n).read_bytes() == (ref_dir / n).read_bytes()
                       for n in ("consistency.jsonl", "queries.jsonl", "qrels.tsv", "candidates.jsonl"))
    m = json.loads((run_dir / "manifest.json").read_text())
    q = m["extra"]["queries"]
    print(f"SciFact corpus {q['corpus_documents']:,} abstracts; {q['documents']:,} sampled (seed 0), {args.per_doc} "
          f"queries each, loopback teacher over HTTP through LiteLLM")
    print(f"{'step':<44}{'figure':>24}")
    print(f"{'SIGKILLed after (documents answered)':<44}{len(before):>24,}")
    print(f"{'  wall until the kill (s)':<44}{killed_s:>24.1f}")
    print(f"{'resumed run: keys asked again that were done':<44}{len(again):>24}")
    print(f"{'resumed run: keys sent':<44}{len(sent[-1]) if sent else 0:>24,}")
    print(f"{'  wall of the resumed run (s)':<44}{resume_s:>24.1f}")
    print(f"{'uninterrupted run wall (s)':<44}{ref_s:>24.1f}")
    print(f"{'final records equal the uninterrupted run':<44}{same_records!s:>24}")
    print(f"{'outputs byte-equal to the uninterrupted run':<44}{same_outputs!s:>24}")
    print(f"{'queries written / kept (consistency filter)':<44}{q['written']:>15,} / {q['kept']:,}")
    print(f"{'  kept with the document first in BM25':<44}{q['top1']:>24,}")
    ok = not again and same_records and same_outputs and bool(before) and len(before) < len(final)
    print(f"\n{'PASS' if ok else 'MISS'}  resume after SIGKILL: no finished key asked again, same final records")
    if args.skip_train:
        return 0 if ok else 1

    # 3. train on the synthetic queries only
    student = args.out / "student"
    t3 = time.perf_counter()
    tr = subprocess.run([sys.executable, "-m", "r2r_synth.cli", "train", "--corpus", str(run_dir / "candidates.jsonl"),
                         "--qrels", str(run_dir / "qrels.tsv"), "--labels", "gold", "--out", str(student),
                         "--max-minutes", str(args.train_minutes),
                         *(["--limit", str(args.train_limit)] if args.train_limit else []),
                         *(["--depth", str(args.train_depth)] if args.train_depth else [])],
                        env=env, capture_output=True, text=True, check=False)
    train_s = time.perf_counter() - t3
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    if tr.returncode != 0:
        print(tr.stderr[-3000:], file=sys.stderr)
        print(f"MISS  train exited {tr.returncode}")
        return 1
    print(f"\ntrain (bi-encoder, defaults, --max-minutes {args.train_minutes:g}) on {q['kept']:,} synthetic queries: "
          f"{train_s:.0f} s, peak RSS of the largest child {peak_gb:.2f} GB")
    evaluate(args, student)
    return 0 if ok else 1


def top(cands: list, k: int) -> list:
    """Each query's top `k` candidates (what a reranker is asked to order)."""
    return [c.model_copy(update={"documents": c.documents[:k], "scores": (c.scores or [])[:k] or None})
            for c in cands]


def below(run: dict, bm25: dict, k: int) -> dict:
    """A reranked top `k` with the rest of each query's candidates below it in BM25's order."""
    out = {}
    for qid, scores in run.items():
        rest = sorted(((d, s) for d, s in bm25[qid].items() if d not in scores), key=lambda t: -t[1])
        lo = min(scores.values(), default=0.0)
        out[qid] = {**scores, **{d: lo - 1.0 - i for i, (d, _) in enumerate(rest)}}
    return out


def evaluate(args: argparse.Namespace, student: Path) -> None:
    """The dev split of SciFact's training claims (bench_domain's), BM25 top 100 reranked: BM25, the
    base, the student alone (`--no-hybrid`) and as shipped (its hybrid, fitted by `train` on its own
    held-out synthetic queries), with paired t and randomization tests against BM25."""
    from bench_domain import Scorer, as_shipped, is_dev, table

    from r2r_synth.io.candidates import load_candidates
    from r2r_synth.student.cross_encoder import default_base

    cands = load_candidates(args.data, qrels=args.data / "qrels.train.tsv", depth=100)
    dev = [c for c in cands if is_dev(c.query.qid, seed=args.seed, fraction=0.2)][: args.dev_limit]
    qrels = {c.query.qid: dict(c.qrels) for c in dev}
    bm25 = {c.query.qid: dict(zip([d.docid for d in c.documents], c.scores or [])) for c in dev}
    runs = {"bm25": bm25}
    systems = [] if args.skip_base else [("base (all-MiniLM-L6-v2)", default_base())]
    for name, path in [*systems, ("student (synthetic queries)", str(student))]:
        t = time.perf_counter()
        on_dev = below(Scorer(path, "bi-encoder").run(top(dev, args.eval_depth)), bm25, args.eval_depth)
        print(f"scored {name} on {len(dev)} claims x {args.eval_depth} candidates: {time.perf_counter() - t:.0f} s",
              flush=True)
        if not name.startswith("student"):
            runs[name] = on_dev
            continue
        runs[f"{name} alone (--no-hybrid)"] = on_dev
        label, runs[label], meta = as_shipped(name, path, on_dev, dev)
        if meta.hybrid is not None:
            print(f"its hybrid, fitted by train on its held-out synthetic queries: {meta.hybrid.reason}")
    print(f"\nSciFact dev split ({len(dev)} training claims; seed {args.seed}), BM25 top-{args.eval_depth} reranked "
          "(the rest of the top 100 below it in BM25's order)")
    table(runs, qrels, ["nDCG@10", "RR@10"], width=60)


if __name__ == "__main__":
    sys.exit(main())
