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


def score_pool(view: TrainingView, *, encoder: str, device: str | None = None, batch_size: int = 64) -> PoolScores:
    """Embed the view's queries and documents with the sentence-transformers model `encoder` (a
    local directory or HF id) and return their cosine similarities."""
    from pathlib import Path

    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(encoder, device=device, local_files_only=Path(encoder).exists())
    except (OSError, ValueError) as e:
        raise InputError(
            f"cannot load the encoder {encoder!r} that scores the distillation lists: {e}",
            hint="pass --encoder with a sentence-transformers model directory or HF id, or --encoder none "
            "to train on the teacher's labels alone",
        ) from None
    owners, docids, texts = [], [], []
    for q in view.queries:
        for d in q.docs.values():
            owners.append(q.qid)
            docids.append(d.docid)
            texts.append(d.text)
    kw = {"batch_size": batch_size, "normalize_embeddings": True, "convert_to_numpy": True, "show_progress_bar": False}
    docs = model.encode(texts, **kw)
    queries = model.encode([q.text for q in view.queries], **kw)
    return PoolScores(owners=owners, docids=docids, texts=texts, sims=queries @ docs.T)


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
) -> dict[str, list]:
    """ListNet columns (`query`, `docs`, `labels`): per query its own documents, re-ordered by the
    teacher, then `hard_negatives` nearest and `negatives` random documents of other queries, every
    label an encoder cosine divided by `temperature`."""
    import numpy as np

    if temperature <= 0:
        raise InputError(f"the distillation temperature is {temperature}", hint="use a value > 0, e.g. 0.05")
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
        own = reorder({pool.docids[j]: float(sims[j]) for j in own_idx}, grades_of(q))
        docs = [pool.texts[j] for j in own_idx] + [pool.texts[j] for j in hard + easy]
        labels = [own[pool.docids[j]] for j in own_idx] + [float(sims[j]) for j in hard + easy]
        if len(docs) < 2:
            continue  # a one-document list has no order to learn; its query still trains other objectives
        cols["query"].append(q.text)
        cols["docs"].append(docs)
        cols["labels"].append([v / temperature for v in labels])
    log.info("distillation lists: %d queries, %d documents", len(cols["query"]), sum(map(len, cols["docs"])))
    return cols
