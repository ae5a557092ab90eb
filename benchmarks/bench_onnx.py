"""int8 on the CPU: the students' `int8` path on its two runtimes (OpenVINO static int8, the default
where installed; ONNX Runtime dynamic int8) against PyTorch's dynamic int8 (the path before them) and
the float model, side by side in one run, reranking DL19's BM25 top-100.

For each DL19 query the four scorers rerank its 100 candidates in turn (the order rotates per query,
so drift in a shared machine's load falls on all alike); the table gives each one's median seconds
per query, the ratio to PyTorch int8, and nDCG@10 / RR@10 with ir-measures.

Bars (exit 1 when one is missed), on the default int8 runtime (`R2R_INT8_BACKEND=auto`): >= 1.5x faster
than PyTorch int8 (median seconds per query), and nDCG@10 within 0.01 of the float model's.
A student trained before `train` wrote `calibration.jsonl` gets one from `--calibration CORPUS` (the
corpus it was trained on) for OpenVINO's static quantization.

    .venv/bin/python benchmarks/bench_onnx.py --model DIR          # any bi-encoder or cross-encoder student
    .venv/bin/python benchmarks/bench_onnx.py --train-minutes 8   # first trains a cross-encoder on msmarco_500

The first int8 load exports and quantizes the model (`DIR/onnx/`); the export time is printed apart.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="a student directory (bi-encoder or cross-encoder)")
    ap.add_argument("--train-minutes", type=float, default=8.0,
                    help="without --model: train a cross-encoder on msmarco_500 for this long first")
    ap.add_argument("--dl19", type=Path, default=DATA / "trec-dl19")
    ap.add_argument("--corpus", type=Path, default=DATA / "r2r-gpt4-msmarco" / "msmarco_500.jsonl")
    ap.add_argument("--calibration", type=Path, nargs="*", default=None,
                    help="the training corpus (files `train` reads) to draw calibration.jsonl from, where the "
                         "student lacks it")
    ap.add_argument("--calibration-qrels", type=Path, default=None,
                    help="the qrels the student trained with, where --calibration is candidate lists")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "bench-onnx")
    ap.add_argument("--limit", type=int, default=None, help="the first N DL19 queries only")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--speedup", type=float, default=1.5)
    ap.add_argument("--max-ndcg-drop", type=float, default=0.01)
    args = ap.parse_args()
    if not args.dl19.exists():
        print(f"missing {args.dl19}: the benchmark needs ../shared/data", file=sys.stderr)
        return 2

    from r2r_synth.config import TrainConfig
    from r2r_synth.io.candidates import load_candidates
    from r2r_synth.metrics import ir_eval
    from r2r_synth.student.base import load_student
    from r2r_synth.student.cross_encoder import quantize_int8
    from r2r_synth.student.train import train

    model_dir = args.model
    if model_dir is None:
        model_dir = args.out / "cross-encoder"
        t = time.perf_counter()
        train(TrainConfig(student="cross-encoder", corpus=[args.corpus], out=model_dir, epochs=1.2,
                          max_minutes=args.train_minutes, device="cpu"))
        print(f"trained a cross-encoder on {args.corpus.name} in {time.perf_counter() - t:.0f} s")

    cands = load_candidates(args.dl19 / "bm25_top100.json", qrels=args.dl19 / "qrels.txt", limit=args.limit)
    import os

    from r2r_synth.student.int8 import choose_backend
    from r2r_synth.student.openvino_int8 import CALIBRATION_FILE, write_calibration

    if args.calibration and not (model_dir / CALIBRATION_FILE).is_file():
        from r2r_synth.student.corpus import load_training_view

        print(f"calibration: {write_calibration(model_dir, load_training_view(args.calibration, qrels=args.calibration_qrels))} pairs "
              f"from {', '.join(p.name for p in args.calibration)}")
    default = choose_backend(model_dir)
    fp32 = load_student(model_dir, device="cpu")
    scorers = {"float (PyTorch)": fp32}
    export_s = {}
    for backend, label in (("openvino", "int8 (OpenVINO static)"), ("onnx", "int8 (ONNX Runtime)")):
        if backend == "openvino" and default != "openvino":
            continue
        os.environ["R2R_INT8_BACKEND"] = backend
        t = time.perf_counter()
        scorers[label] = load_student(model_dir, device="cpu", int8=True)
        export_s[label] = time.perf_counter() - t
    os.environ.pop("R2R_INT8_BACKEND")
    default_label = "int8 (OpenVINO static)" if default == "openvino" else "int8 (ONNX Runtime)"
    # PyTorch dynamic int8 of the same model: what `student-int8:` / `rerank --int8` ran before.
    torch8 = load_student(model_dir, device="cpu")
    torch8.model = quantize_int8(torch8.model)
    scorers["int8 (PyTorch dynamic)"] = torch8
    names = list(scorers)
    times: dict[str, list[float]] = {n: [] for n in names}
    runs: dict[str, dict] = {n: {} for n in names}
    for i, c in enumerate(cands):
        docs = [d.full_text() for d in c.documents]
        for n in names[i % len(names):] + names[:i % len(names)]:  # rotate who goes first
            t = time.perf_counter()
            scores = scorers[n].score(c.query.text, docs, batch_size=args.batch_size)
            times[n].append(time.perf_counter() - t)
            runs[n][c.query.qid] = dict(zip([d.docid for d in c.documents], scores))
    qrels = {c.query.qid: c.qrels for c in cands}
    rows = {n: ir_eval(qrels, runs[n], ["nDCG@10", "RR@10"]) for n in names}
    med = {n: statistics.median(times[n]) for n in names}
    kind = fp32.kind
    print(f"\nDL19, {len(cands)} queries x 100 BM25 candidates; the {kind} student {model_dir}")
    print(f"{'scorer':<26}{'median s/query':>16}{'vs torch int8':>15}{'nDCG@10':>10}{'RR@10':>8}")
    for n in names:
        print(f"{n:<26}{med[n]:>16.3f}{med['int8 (PyTorch dynamic)'] / med[n]:>14.2f}x"
              f"{rows[n]['nDCG@10']:>10.4f}{rows[n]['RR@10']:>8.4f}")
    for label, sec in export_s.items():
        print(f"(first load of {label}, export + quantization included; once per model: {sec:.1f} s)")
    speedup = med["int8 (PyTorch dynamic)"] / med[default_label]
    drop = rows["float (PyTorch)"]["nDCG@10"] - rows[default_label]["nDCG@10"]
    speedup_ok = speedup >= args.speedup
    drop_ok = abs(drop) <= args.max_ndcg_drop
    print(f"\nthe default int8 runtime here: {default_label}")
    print(f"bar: int8 >= {args.speedup}x faster than PyTorch int8 -> {speedup:.2f}x: "
          f"{'PASS' if speedup_ok else 'MISS'}")
    print(f"bar: int8 nDCG@10 within {args.max_ndcg_drop} of float -> {drop:+.4f}: {'PASS' if drop_ok else 'MISS'}")
    return 0 if speedup_ok and drop_ok else 1


if __name__ == "__main__":
    sys.exit(main())
