"""Usage: .venv/bin/python scripts/teacher_vs_base.py [R2R_FILE] [--encoder PATH]

Is the teacher of R2R's release better than the student's starting point on the release's own
queries? R2R's rows carry an undocumented `scores` list beside `unsorted_docs`; it marks at most a
passage or two per query with "1", and reads as MS MARCO's train judgments (the first row, query
1185869, marks MS MARCO's passage 0, the first line of its train qrels). On the queries with a
marked passage this prints where the teacher's order (`re_rank_id`) and the encoder's cosine
(all-MiniLM-L6-v2 by default, the cross-encoder's base and label encoder) put it: top-1 hits and MRR
over the five passages, and for an even blend of the two (the cosines handed out in the teacher's
order, as `r2r_synth.student.distill.reorder` writes the distillation labels, mixed half and half
with the cosines in their own order).

A diagnostic of the data, not a benchmark: it has no bar and exits 0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "r2r-gpt4-msmarco" / "msmarco_500.jsonl"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path, nargs="?", default=DATA)
    ap.add_argument("--encoder", default=None, help="sentence-transformers model (default: the cross-encoder's base)")
    args = ap.parse_args()

    from sentence_transformers import SentenceTransformer

    from r2r_synth.io.r2r import R2RRow
    from r2r_synth.student.cross_encoder import default_base

    encoder = args.encoder or default_base()
    model = SentenceTransformer(encoder, local_files_only=Path(encoder).exists())
    weights = (0.0, 0.5, 1.0)
    rr: dict[float, list[float]] = {w: [] for w in weights}
    agree = pairs = queries = 0
    for line in args.corpus.read_text().splitlines():
        row = R2RRow.model_validate(json.loads(line))
        marks = [str(v) != "0" for v in (row.model_extra or {}).get("scores", [])]
        if len(marks) != len(row.unsorted_docs) or not any(marks):
            continue
        queries += 1
        emb = model.encode([row.query, *row.unsorted_docs], normalize_embeddings=True)
        cos = emb[1:] @ emb[0]
        n = len(cos)
        teacher_rank = np.empty(n, dtype=int)
        teacher_rank[[i - 1 for i in row.re_rank_id]] = np.arange(n)
        reordered = np.sort(cos)[::-1][teacher_rank]  # the cosines handed out in the teacher's order
        for i in range(n):
            for j in range(i + 1, n):
                pairs += 1
                agree += (teacher_rank[i] < teacher_rank[j]) == (cos[i] > cos[j])
        for w in weights:
            label = (1 - w) * cos + w * reordered
            order = list(np.argsort(-label, kind="stable"))
            rr[w].append(1.0 / (1 + min(order.index(k) for k in np.flatnonzero(marks))))
    print(f"{args.corpus.name}: {queries} queries with a marked passage; teacher and encoder agree on "
          f"{agree / max(pairs, 1):.3f} of their {pairs} passage pairs")
    print(f"{'order':<44}{'top-1':>7}{'MRR':>8}")
    names = {0.0: "encoder's cosine (the base)", 0.5: "half each", 1.0: "teacher's re_rank_id (distill labels)"}
    for w in weights:
        top1 = sum(v == 1.0 for v in rr[w])
        print(f"{names[w]:<44}{top1:>7}{np.mean(rr[w]) if rr[w] else 0:>8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
