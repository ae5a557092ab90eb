"""`train` under `torchrun --nproc-per-node 2` on the CPU (gloo) beside one process, same global batch.

Trains the bi-encoder student (all-MiniLM-L6-v2, offline) on R2R's GPT-4 corpus twice: one process with
`--batch-size 2B`, and two processes under torchrun with `--batch-size B` each; every filesystem write of
each rank is logged (tests/ddp_writes.py, an audit hook). Then reranks DL19's BM25 top-100 with both
students through `evaluate` and prints the table: wall time of each command, the training time
`r2r_config.json` records, nDCG@10 of each student and the paired test between them.

Bar (exit 1 when missed): the two-process run wrote its student directory once (rank 1 wrote nothing,
the same files as one process), the directory loads with plain sentence-transformers, and its
`r2r_config.json` says how it was trained (world size 2, gloo, per-device and global batch). The times
are reported, not barred: two processes on a 2-core machine share the cores a single process already
uses, so no speed-up is expected here; the figure to watch is the overhead.

    .venv/bin/python benchmarks/bench_ddp.py [--limit 100] [--max-steps 30] [--batch 16] [--eval-limit 43]
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


def _run(cmd: list[str], *, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DATA / "r2r-gpt4-msmarco" / "msmarco_500.jsonl")
    ap.add_argument("--dl19", type=Path, default=DATA / "trec-dl19")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "bench-ddp")
    ap.add_argument("--limit", type=int, default=100, help="train on the first N queries")
    ap.add_argument("--max-steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=16, help="the global batch (2 processes take half each)")
    ap.add_argument("--eval-limit", type=int, default=None, help="DL19 queries to rerank (default: all)")
    args = ap.parse_args()
    for p in (args.corpus, args.dl19):
        if not p.exists():
            print(f"missing {p}: the benchmark needs ../shared/data", file=sys.stderr)
            return 2
    if args.batch % 2:
        print("--batch must be even: two processes take half each", file=sys.stderr)
        return 2
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    logs = args.out / "writes"
    logs.mkdir()
    one, two = args.out / "one-process", args.out / "two-processes"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    common = ["train", "--corpus", str(args.corpus), "--limit", str(args.limit), "--max-steps", str(args.max_steps),
              "--device", "cpu"]
    # one process: the machine's threads as usual; two: torchrun gives each one thread (OMP_NUM_THREADS=1)
    wall_one = _run([sys.executable, "-m", "r2r_synth.cli", *common, "--out", str(one), "--batch-size",
                     str(args.batch)], env=env)
    wall_two = _run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                     str(REPO / "tests" / "ddp_writes.py"), str(logs), *common, "--out", str(two), "--batch-size",
                     str(args.batch // 2)], env=env)

    from sentence_transformers import SentenceTransformer

    from r2r_synth.config import EvaluateConfig
    from r2r_synth.evaluate import evaluate

    meta_one = json.loads((one / "r2r_config.json").read_text())["training"]
    meta_two = json.loads((two / "r2r_config.json").read_text())["training"]
    rank1 = [w for w in (logs / "writes-rank1.txt").read_text().splitlines() if str(args.out) in w]
    rank0 = [w for w in (logs / "writes-rank0.txt").read_text().splitlines() if str(two) in w]
    try:
        SentenceTransformer(str(two), device="cpu").encode(["loads"])
        loads, why = True, "SentenceTransformer(DIR) encodes"
    except Exception as e:  # noqa: BLE001 - the bar reports it
        loads, why = False, f"{type(e).__name__}: {e}"
    expected = {"world_size": 2, "backend": "gloo", "per_device_batch": args.batch // 2, "gradient_accumulation": 1,
                "global_batch": args.batch}

    ev = evaluate(EvaluateConfig(input=str(args.dl19 / "bm25_top100.json"), qrels=args.dl19 / "qrels.txt",
                                 systems=[f"one={one}", f"two={two}"], out=args.out / "eval", limit=args.eval_limit,
                                 measures=["nDCG@10"]))
    rows = ev.report["systems"]
    p = ev.report["significance"]["systems"]["two"]["nDCG@10"]["randomization"]

    print(f"bi-encoder on {args.corpus.name} (first {args.limit} queries), {args.max_steps} steps, global batch "
          f"{args.batch}; DL19 BM25 top-100, {ev.report['judged_queries']} queries reranked")
    print(f"{'run':<28}{'command wall s':>15}{'training s':>12}{'steps':>7}{'train loss':>12}{'nDCG@10':>9}")
    for name, wall, meta, row in ((f"1 process, batch {args.batch}", wall_one, meta_one, rows["one"]),
                                  (f"torchrun 2 x batch {args.batch // 2}", wall_two, meta_two, rows["two"])):
        print(f"{name:<28}{wall:>15.1f}{meta['wall_s']:>12.1f}{meta['steps']:>7}{meta['train_loss']:>12.4f}"
              f"{row['nDCG@10']:>9.4f}")
    print(f"ratio 2 procs / 1 proc: command {wall_two / wall_one:.2f}, training {meta_two['wall_s'] / meta_one['wall_s']:.2f}; "
          f"nDCG@10 paired randomization p = {p:.3f}")
    bars = [
        ("rank 1 wrote nothing", not rank1, f"{len(rank1)} writes" + (f", e.g. {rank1[0]}" if rank1 else "")),
        ("rank 0 wrote the student", any(w.endswith("r2r_config.json") for w in rank0), f"{len(rank0)} writes"),
        ("the same files as one process", sorted(x.name for x in two.iterdir()) == sorted(x.name for x in one.iterdir()),
         ", ".join(sorted(x.name for x in two.iterdir()))),
        ("loads with plain sentence-transformers", loads, why),
        ("r2r_config.json says how it was trained", meta_two.get("distributed") == expected,
         json.dumps(meta_two.get("distributed"))),
    ]
    print()
    for name, ok, detail in bars:
        print(f"{'PASS' if ok else 'MISS':<5} {name}: {detail}")
    return 0 if all(ok for _, ok, _ in bars) else 1


if __name__ == "__main__":
    sys.exit(main())
