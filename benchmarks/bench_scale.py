"""The student stages at corpus scale: SciFact (5,183 abstracts) through the command line, and the parts
that grow with the corpus on a synthetic 1M-passage corpus.

Parts (each can be skipped):

- **evaluate**: `r2r-synth evaluate --system <bi-encoder student>` over SciFact's 809 training claims x
  their BM25 top 100, with this checkout, beside the same command with the code of `--old-ref`
  (checked out into a temporary `git worktree`), which re-embeds every query's candidates: the old code
  runs on the first `--old-queries` claims only (at ~25 pairs/s all 809 would take about an hour; its
  cost per pair does not depend on the number of queries), and this checkout runs on that subset too.
  The student is all-MiniLM-L6-v2 saved as an untrained bi-encoder student (`--student DIR` for
  another): the throughput does not depend on its weights. Bar: pairs/s >= 10 x the old code's.
- **train**: peak RSS (`/usr/bin/time -v`) of `r2r-synth train --corpus <scifact> --qrels
  qrels.train.tsv --labels gold --out DIR`, every other option at its default. Bar: <= 2 GB.
  `--old-train-steps N` also runs the old code's train for N steps (its peak comes in the first steps).
- **explain**: `r2r-synth rerank --explain --json` with the bi-encoder student over 10 SciFact
  abstracts for a claim. Bar: one evidence sentence per result, a verbatim sentence of that document.
- **scale**: a synthetic corpus of `--passages` (1,000,000) passages made here (not written to disk)
  and a tiny model built in code (2 layers, 32 hidden, a dense layer to 384 dimensions so rows are
  MiniLM-sized): the embedding cache filled with every passage (float32, then int8 from the same rows),
  its bytes and the process's RSS; 1,000 queries x 100 candidates scored from it; hard negatives mined
  for 800 queries over the whole corpus in chunks. MiniLM's own embedding speed is measured on SciFact
  (the evaluate part), and the 1M figures for MiniLM are extrapolated from it, as the table says.

    .venv/bin/python benchmarks/bench_scale.py [--skip evaluate,train,explain,scale] [--old-queries 40]
        [--passages 1000000] [--student DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "scifact"
OLD_REF = "7a3a69b"
SPEEDUP_BAR = 10.0
TRAIN_RSS_BAR_GB = 2.0


def cli(checkout: Path, *args: str, timed: bool = True) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run `python -m r2r_synth.cli ARGS` with `checkout` first on the path under /usr/bin/time -v:
    (process, wall seconds, peak RSS in GB)."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "r2r_synth.cli", *args]
    if timed:
        cmd = ["/usr/bin/time", "-v", *cmd]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    rss = 0.0
    for line in proc.stderr.splitlines():
        if "Maximum resident set size" in line:
            rss = int(line.split(":")[1]) / 1024 / 1024
    return proc, wall, rss


def student_dir(out: Path) -> Path:
    """all-MiniLM-L6-v2 saved as an untrained bi-encoder student (the student starts where its base stands)."""
    from sentence_transformers import SentenceTransformer

    from r2r_synth.student.base import r2r_config, write_r2r_config
    from r2r_synth.student.cross_encoder import DEFAULT_BASE_ID, default_base

    path = out / "student"
    if not (path / "r2r_config.json").exists():
        SentenceTransformer(default_base(), device="cpu").save(str(path))
        write_r2r_config(path, r2r_config("bi-encoder", base=DEFAULT_BASE_ID))
    return path


def old_checkout(ref: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="r2r-old-")) / "checkout"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), ref], check=True,
                   capture_output=True)
    return path


def run_evaluate(checkout: Path, student: Path, out: Path, limit: int | None) -> dict:
    args = ["evaluate", "--input", str(DATA), "--qrels", str(DATA / "qrels.train.tsv"), "--system",
            f"student={student}", "--out", str(out), "--permutations", "100"]
    if limit:
        args += ["--limit", str(limit)]
    proc, wall, rss = cli(checkout, *args)
    if proc.returncode != 0:
        raise SystemExit(f"evaluate failed in {checkout}:\n{proc.stderr[-3000:]}")
    row = json.loads((out / "evaluation.json").read_text())["systems"]["student"]
    return {"pairs": row["pairs"], "seconds": row["seconds"], "pairs_per_s": row["pairs"] / row["seconds"],
            "nDCG@10": row["nDCG@10"], "wall": wall, "rss": rss}


def for_old_code(student: Path, out: Path) -> Path:
    """A copy of `student` whose r2r_config.json leaves out the keys the old code's schema does not know
    (it forbids extra keys): the ones this checkout writes as null (`hybrid`, `heldout`)."""
    path = out / "student-for-old"
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(student, path)
    meta = json.loads((path / "r2r_config.json").read_text())
    (path / "r2r_config.json").write_text(json.dumps({k: v for k, v in meta.items() if v is not None}, indent=2))
    return path


def part_evaluate(args, out: Path, student: Path, results: dict) -> bool:
    old = old_checkout(args.old_ref)
    try:
        rows = {
            f"old ({args.old_ref}), first {args.old_queries} claims": run_evaluate(old, for_old_code(student, out),
                                                                                   out / "ev-old", args.old_queries),
            f"this checkout, first {args.old_queries} claims": run_evaluate(REPO, student, out / "ev-new-subset",
                                                                            args.old_queries),
            "this checkout, all 809 claims": run_evaluate(REPO, student, out / "ev-new", None),
        }
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], check=False,
                       capture_output=True)
        shutil.rmtree(old.parent, ignore_errors=True)
    print("\nevaluate, bi-encoder student, SciFact training claims x BM25 top 100")
    print(f"{'code, queries':<44}{'pairs':>8}{'scoring s':>11}{'pairs/s':>10}{'nDCG@10':>9}{'wall s':>8}{'RSS GB':>8}")
    for name, r in rows.items():
        print(f"{name:<44}{r['pairs']:>8}{r['seconds']:>11.1f}{r['pairs_per_s']:>10.1f}{r['nDCG@10']:>9.4f}"
              f"{r['wall']:>8.0f}{r['rss']:>8.2f}")
    old_rate = next(iter(rows.values()))["pairs_per_s"]
    new_rate = rows["this checkout, all 809 claims"]["pairs_per_s"]
    ratio = new_rate / old_rate
    results["evaluate"] = rows
    ok = ratio >= SPEEDUP_BAR
    print(f"{'PASS' if ok else 'MISS'}  all 809 claims {new_rate:.0f} pairs/s vs the old code's {old_rate:.1f} "
          f"= {ratio:.1f}x (bar >= {SPEEDUP_BAR:g}x)")
    return ok


def part_train(args, out: Path, results: dict) -> bool:
    target = out / "train"
    shutil.rmtree(target, ignore_errors=True)
    proc, wall, rss = cli(REPO, "train", "--corpus", str(DATA), "--qrels", str(DATA / "qrels.train.tsv"),
                          "--labels", "gold", "--out", str(target))
    if proc.returncode != 0:
        raise SystemExit(f"train failed:\n{proc.stderr[-3000:]}")
    rows = {"this checkout, defaults": (wall, rss)}
    if args.old_train_steps:
        old = old_checkout(args.old_ref)
        try:
            _, w, r = cli(old, "train", "--corpus", str(DATA), "--qrels", str(DATA / "qrels.train.tsv"), "--labels",
                          "gold", "--out", str(out / "train-old"), "--max-steps", str(args.old_train_steps))
            rows[f"old ({args.old_ref}), {args.old_train_steps} steps"] = (w, r)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], check=False,
                           capture_output=True)
            shutil.rmtree(old.parent, ignore_errors=True)
    print("\ntrain --corpus scifact --qrels qrels.train.tsv --labels gold")
    print(f"{'code':<40}{'wall s':>8}{'peak RSS GB':>13}")
    for name, (w, r) in rows.items():
        print(f"{name:<40}{w:>8.0f}{r:>13.2f}")
    results["train"] = {k: {"wall": w, "rss_gb": r} for k, (w, r) in rows.items()}
    ok = rss <= TRAIN_RSS_BAR_GB
    print(f"{'PASS' if ok else 'MISS'}  peak RSS {rss:.2f} GB (bar <= {TRAIN_RSS_BAR_GB:g} GB)")
    return ok


def part_explain(out: Path, student: Path, results: dict) -> bool:
    from r2r_synth.evaluate.evidence import split_sentences

    docs = [json.loads(line) for _, line in zip(range(10), (DATA / "corpus.jsonl").open())]
    path = out / "docs.jsonl"
    path.write_text("".join(json.dumps({"docid": d["_id"], "title": d.get("title") or None, "text": d["text"]}) + "\n"
                            for d in docs))
    query = "Vitamin D deficiency is associated with a higher risk of infection."
    proc, wall, _ = cli(REPO, "rerank", "--model", str(student), "-q", query, "--docs", str(path), "--explain",
                        "--json", timed=False)
    if proc.returncode != 0:
        raise SystemExit(f"rerank failed:\n{proc.stderr[-3000:]}")
    rows = json.loads(proc.stdout)
    good = [r for r in rows if r["evidence"] and r["evidence"] in split_sentences(r["text"])]
    print(f"\nrerank --explain --json, bi-encoder student, {len(docs)} SciFact abstracts ({wall:.1f} s)")
    for r in rows[:3]:
        print(f"  {r['rank']}. {r['docid']}: {r['evidence'][:120]}")
    ok = len(rows) == len(docs) and len(good) == len(rows)
    results["explain"] = {"results": len(rows), "verbatim_evidence": len(good), "wall": wall}
    print(f"{'PASS' if ok else 'MISS'}  {len(good)} of {len(rows)} results carry one verbatim sentence of their document")
    return ok


def rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024**3


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def tiny_model(dim: int = 384):
    """A 2-layer, 32-hidden BERT with MiniLM's tokenizer and a dense layer to `dim`: MiniLM-sized rows."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from r2r_synth.student.cross_encoder import default_base

    path = Path(tempfile.mkdtemp(prefix="tiny-"))
    tok = AutoTokenizer.from_pretrained(default_base())
    tok.save_pretrained(path)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=512)).save_pretrained(path)
    word = models.Transformer(str(path), max_seq_length=64)
    pool = models.Pooling(32, "mean")
    dense = models.Dense(32, dim, activation_function=torch.nn.Tanh())
    return SentenceTransformer(modules=[word, pool, dense, models.Normalize()], device="cpu")


def passages(n: int, *, seed: int = 0):
    """`n` synthetic passages of 40-80 words drawn from SciFact's vocabulary (yielded, never stored)."""
    import numpy as np

    vocab = sorted({w for line in (DATA / "corpus.jsonl").open() for w in json.loads(line)["text"].split()})[:50_000]
    rng = np.random.default_rng(seed)
    for i in range(n):
        yield f"p{i} " + " ".join(vocab[j] for j in rng.integers(0, len(vocab), size=int(rng.integers(40, 80))))


def part_scale(args, results: dict) -> bool:
    import numpy as np
    import torch

    from r2r_synth.student.embedding_cache import EmbeddingCache
    from r2r_synth.student.mining import mine_negatives

    torch.set_num_threads(2)
    model = tiny_model()
    n = args.passages
    print(f"\nsynthetic corpus of {n:,} passages, tiny model (32 hidden, 384-dimension rows)", flush=True)

    class Rows(list):
        def append(self, row: tuple[str, str, str]) -> None:  # printed as measured: a long run shows progress
            super().append(row)
            print(f"  {row[0]:<95} {row[1]:<38} {row[2]}", flush=True)

    rows: list[tuple[str, str, str]] = Rows()

    def encode(texts: list[str]):
        with torch.inference_mode():
            return model.encode(texts, batch_size=256, normalize_embeddings=True, convert_to_numpy=True,
                                show_progress_bar=False)

    base = rss_gb()
    texts = list(passages(n))
    text_gb = rss_gb() - base
    rows.append((f"{n:,} synthetic passages held as Python strings", f"{text_gb:.2f} GB RSS", "linear in N"))
    cache = EmbeddingCache(encode, chunk=8192)
    before = rss_gb()
    t0 = time.perf_counter()
    cache.add(texts)
    fill_s = time.perf_counter() - t0
    grown = rss_gb() - before
    rows.append(("fill the float32 cache with every passage (tiny model)", f"{fill_s:.0f} s, {n / fill_s:,.0f} passages/s",
                 "linear in N"))
    rows.append(("float32 cache: rows / RSS growth", f"{cache.nbytes / 1024**3:.2f} GB / {grown:.2f} GB",
                 f"{cache.nbytes / n:.0f} B rows + {(grown * 1024**3 - cache.nbytes) / n:.0f} B index per passage"))
    # int8 from the same rows: what `student-int8` keeps (the model is not run again)
    rows_f32 = cache.get(texts)
    done = 0

    def replay(batch: list[str]):  # the rows the model gave, in the order the cache asks for them
        nonlocal done
        done += len(batch)
        return rows_f32[done - len(batch):done]

    i8 = EmbeddingCache(replay, int8=True, chunk=8192)
    i8.add(texts)
    err = float(np.abs(i8.get(texts[:1000]) @ rows_f32[0] - rows_f32[:1000] @ rows_f32[0]).max())
    rows_f32 = None  # the float rows go before the next part
    rows.append(("int8 cache rows", f"{i8.nbytes / 1024**3:.2f} GB (max |score error| {err:.4f})",
                 f"{i8.nbytes / n:.0f} B a passage"))
    del i8
    rng = np.random.default_rng(1)
    queries = [texts[int(i)].split(" ", 1)[1][:120] for i in rng.integers(0, n, 1000)]
    cands = [[texts[int(j)] for j in rng.integers(0, n, 100)] for _ in queries]
    t0 = time.perf_counter()
    for q, c in zip(queries, cands):
        cache.scores(encode([q])[0], c)
    score_s = time.perf_counter() - t0
    rows.append(("score 1,000 queries x 100 candidates from the cache", f"{100_000 / score_s:,.0f} pairs/s",
                 "per query: constant in N"))
    anchors = queries[:800]
    positives = [c[0] for c in cands[:800]]
    before_peak = peak_gb()
    t0 = time.perf_counter()
    mined = mine_negatives(anchors=anchors, positives=positives, corpus=iter(texts), encode=cache.get,
                           num_negatives=1, range_max=30, relative_margin=0.05)
    mine_s = time.perf_counter() - t0
    rows.append(("mine 1 hard negative for 800 queries over every passage, 4,096 a chunk (rows from the cache)",
                 f"{mine_s:.0f} s, {len(mined['anchor'])} rows", "time linear in N; memory 800 x (34 + 4,096) scores"))
    rows.append(("peak RSS of this process", f"{peak_gb():.2f} GB (before mining {before_peak:.2f} GB)", ""))
    results["scale"] = list(rows)
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "bench-scale")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: evaluate, train, explain, scale")
    ap.add_argument("--old-ref", default=OLD_REF)
    ap.add_argument("--old-queries", type=int, default=40)
    ap.add_argument("--old-train-steps", type=int, default=0)
    ap.add_argument("--passages", type=int, default=1_000_000)
    ap.add_argument("--student", type=Path, default=None)
    args = ap.parse_args()
    if not (DATA / "corpus.jsonl").exists():
        print(f"missing {DATA}: the benchmark needs ../shared/data/scifact", file=sys.stderr)
        return 2
    skip = {s for s in args.skip.split(",") if s}
    args.out.mkdir(parents=True, exist_ok=True)
    student = args.student or (student_dir(args.out) if {"evaluate", "explain"} - skip else None)
    results: dict = {}
    ok = True
    if "explain" not in skip:
        ok &= part_explain(args.out, student, results)
    if "evaluate" not in skip:
        ok &= part_evaluate(args, args.out, student, results)
    if "scale" not in skip:
        ok &= part_scale(args, results)
    if "train" not in skip:
        ok &= part_train(args, args.out, results)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
