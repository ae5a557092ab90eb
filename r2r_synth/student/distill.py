"""Distillation lists for the cross-encoder: the teacher's order on a bi-encoder's scale.

A query of R2R's corpus comes with five BM25 passages, all on topic; the teacher orders them but says
nothing about how they compare with the thousands of passages a reranker will meet. A bi-encoder
(all-MiniLM-L6-v2 by default, which already ranks DL19 at nDCG@10 0.64 on its own) fills that gap:

- it mines **hard negatives** for each query among the passages of *other* queries (the nearest by
  cosine; BM25 neighbours of a different question), plus a few random ones;
- it gives every (query, passage) of the list a **soft label**, its cosine similarity;
- the teacher's judgement then **re-orders the query's own passages**: their cosines, sorted, are
  handed out in the teacher's order (best first). The scale stays the encoder's (how close these
  passages are to the query compared with the negatives); the order among them is the teacher's.

With `lexical_weight` w > 0 the labels fuse the encoder with BM25 (over the view's own passages), the
way a hybrid retriever does: per list, z(cosine) and z(BM25) are mixed (1 - w) : w and mapped back
onto the cosines' spread, so `temperature` keeps its meaning. On DL19 such a fusion of the base with
BM25 (w = 0.3) ranks at nDCG@10 0.6585 against the base's 0.6424, a better teacher on paper; a student
trained on such lists was no better (0.6246 vs 0.6302 without; docs/benchmarks.md), so it is off by default.

The cross-encoder learns the lists with ListNet (softmax cross-entropy against the labels divided by
a temperature). Gold labels, when the caller trains on them on purpose, take the teacher's place in
the re-ordering; the two are never mixed.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from r2r_synth.errors import InputError
from r2r_synth.student.corpus import TrainingView

log = logging.getLogger(__name__)


@dataclass
class PoolScores:
    """Cosine similarities of every query of a view against every document of the view."""

    owners: list[str]  # qid of each pool document
    docids: list[str]
    texts: list[str]
    sims: Any  # numpy array, queries x pool
    lexical: Any = None  # BM25, queries x pool (score_pool(lexical=True))


def score_pool(view: TrainingView, *, encoder: str, device: str | None = None, batch_size: int = 64,
               lexical: bool = False) -> PoolScores:
    """Embed the view's queries and documents with the sentence-transformers model `encoder` (a
    local directory or HF id) and return their cosine similarities (and, with `lexical`, the BM25
    of every query against every pool document)."""
    from r2r_synth.student.bi_encoder import build_model

    model = build_model(encoder, device=device, what="the encoder", why=" that scores the distillation lists",
                        hint="pass --encoder with a sentence-transformers model directory or HF id, or --encoder "
                        "none to train on the teacher's labels alone")
    owners, docids, texts = [], [], []
    for q in view.queries:
        for d in q.docs.values():
            owners.append(q.qid)
            docids.append(d.docid)
            texts.append(d.text)
    kw = {"batch_size": batch_size, "normalize_embeddings": True, "convert_to_numpy": True, "show_progress_bar": False}
    docs = model.encode(texts, **kw)
    queries = model.encode([q.text for q in view.queries], **kw)
    bm25 = None
    if lexical:
        from r2r_synth.io.first_stage import BM25Index
        from r2r_synth.schemas import Document

        index = BM25Index.build([Document(docid=str(j), text=t) for j, t in enumerate(texts)])
        bm25 = index.score_all([q.text for q in view.queries])
    return PoolScores(owners=owners, docids=docids, texts=texts, sims=queries @ docs.T, lexical=bm25)


def fuse(cos: Any, bm25: Any, weight: float) -> Any:
    """Mix z(cos) and z(bm25) (1 - weight) : weight and map the mix back onto the cosines' mean and
    spread. A constant column (no spread) contributes zeros."""
    import numpy as np

    def z(x: Any) -> Any:
        sd = x.std()
        return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)

    cos = np.asarray(cos, dtype=np.float64)
    mixed = (1.0 - weight) * z(cos) + weight * z(np.asarray(bm25, dtype=np.float64))
    return cos.mean() + cos.std() * mixed


def reorder(own: dict[str, float], grades: dict[str, float]) -> dict[str, float]:
    """Hand the encoder's scores of a query's own documents out in the teacher's order.

    `own`: docid -> encoder score; `grades`: docid -> teacher grade (higher is better) for the
    documents the teacher judged. Judged documents get the judged documents' scores, sorted, best
    grade first (ties keep the encoder's order); unjudged ones keep their own score.
    """
    judged = [d for d in own if d in grades]
    order = sorted(judged, key=lambda d: (-grades[d], -own[d]))
    values = sorted((own[d] for d in judged), reverse=True)
    out = dict(own)
    out.update(zip(order, values))
    return out


def distill_lists(
    view: TrainingView,
    pool: PoolScores,
    *,
    grades_of: Callable[[Any], dict[str, float]],
    hard_negatives: int,
    negatives: int,
    temperature: float,
    seed: int,
    lexical_weight: float = 0.0,
) -> dict[str, list]:
    """ListNet columns (`query`, `docs`, `labels`): per query its own documents, re-ordered by the
    teacher, then `hard_negatives` nearest and `negatives` random documents of other queries, every
    label an encoder cosine (fused with BM25 when `lexical_weight` > 0) divided by `temperature`."""
    import numpy as np

    if temperature <= 0:
        raise InputError(f"the distillation temperature is {temperature}", hint="use a value > 0, e.g. 0.05")
    if not 0.0 <= lexical_weight <= 1.0:
        raise InputError(f"the lexical weight is {lexical_weight}", hint="use a value from 0 (encoder only) to 1")
    if lexical_weight > 0 and pool.lexical is None:
        raise InputError("a lexical weight needs BM25 scores", hint="score the pool with score_pool(..., lexical=True)")
    rng = random.Random(seed)
    owners = np.asarray(pool.owners)
    cols: dict[str, list] = {"query": [], "docs": [], "labels": []}
    for i, q in enumerate(view.queries):
        sims = pool.sims[i]
        own_idx = np.flatnonzero(owners == q.qid)
        other = np.flatnonzero(owners != q.qid)
        hard = other[np.argsort(-sims[other], kind="stable")[:hard_negatives]].tolist() if hard_negatives else []
        taken = set(hard)
        rest = [j for j in other.tolist() if j not in taken]
        easy = rng.sample(rest, min(negatives, len(rest)))
        members = own_idx.tolist() + hard + easy
        values = sims[members]
        if lexical_weight > 0:
            values = fuse(values, pool.lexical[i][members], lexical_weight)
        score = dict(zip(members, (float(v) for v in values)))
        own = reorder({pool.docids[j]: score[j] for j in own_idx}, grades_of(q))
        docs = [pool.texts[j] for j in members]
        labels = [own[pool.docids[j]] for j in own_idx] + [score[j] for j in hard + easy]
        if len(docs) < 2:
            continue  # a one-document list has no order to learn; its query still trains other objectives
        cols["query"].append(q.text)
        cols["docs"].append(docs)
        cols["labels"].append([v / temperature for v in labels])
    log.info("distillation lists: %d queries, %d documents", len(cols["query"]), sum(map(len, cols["docs"])))
    return cols
