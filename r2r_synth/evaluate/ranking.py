"""Rerank the top K candidates of each query with one system and keep the rest in first-stage order,
as IR evaluates a reranker: every system's run holds every candidate, so measures below the depth
see the first stage and a shallow reranker is not scored as if it had retrieved less.

The run's scores are the system's own (rounded to the 6 decimals a TREC run keeps), lowered by one
unit of the last decimal where they would tie with or rise above the document ranked just before:
every reader (ir-measures, trec_eval) then sees exactly the order measured here, where ties in a
system's scores keep the first-stage order instead of trec_eval's docid order. The candidates below
the depth follow in first-stage order, 1.0 apart, below the last reranked one; the first stage's own
run (`bm25`) keeps its scores there too, so `run.bm25.trec` holds the first stage's scores throughout.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from r2r_synth.evaluate.fusion import order_by_score
from r2r_synth.evaluate.systems import System, TopK
from r2r_synth.schemas import Candidates, Document

UNIT = 1_000_000  # a TREC run keeps 6 decimals (`r2r_synth.io.trec.write_run`)


@dataclass
class RankedRun:
    """One system over every query: the full `run` (``{qid: {docid: score}}``, what is measured and
    written), the reranked `tops` with the system's own scores (what a fusion reads), the wall time
    per query, the qids left out (a teacher call failed) and the pairs reranked."""

    run: dict[str, dict[str, float]] = field(default_factory=dict)
    tops: dict[str, TopK] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    pairs: int = 0


def run_scores(top: TopK, tail: Sequence[Document], *, tail_scores: Sequence[float] | None = None
               ) -> dict[str, float]:
    """The run of one query: `top` in its order with its scores made strictly decreasing at 6
    decimals, then `tail` in its order below (see the module docstring), with `tail_scores` where
    given (the first stage's own scores), else 1.0 apart."""
    out: dict[str, float] = {}
    prev: int | None = None
    if tail_scores is not None:
        top = [*top, *zip((d.docid for d in tail), tail_scores)]
        tail = ()
    for docid, raw in top:
        units = _units(raw)
        if units is None or (prev is not None and units >= prev):
            units = (prev - (UNIT if units is None else 1)) if prev is not None else 0
        out[docid] = units / UNIT
        prev = units
    for d in tail:
        prev = (prev - UNIT) if prev is not None else 0
        out[d.docid] = prev / UNIT
    return out


def _units(raw: float | None) -> int | None:
    if raw is None or not math.isfinite(raw):
        return None
    return round(raw * UNIT)


def rerank_candidates(system: System, cands: Sequence[Candidates], *, depth: int | None,
                      on_query: Callable[[], None] | None = None) -> RankedRun:
    """Rerank the top `depth` candidates of every query with `system` (None: all of them) and append
    the rest in first-stage order. A query with a failed teacher call leaves the run (`left_out`)."""
    out = RankedRun()
    for c in cands:
        k = len(c.documents) if depth is None else min(depth, len(c.documents))
        head, tail = list(c.documents[:k]), c.documents[k:]
        t0 = time.perf_counter()
        if system.order is not None:
            top = system.order(c, head)
        else:
            scores = system.score(c.query.text, [d.full_text() for d in head])
            if len(scores) != len(head):
                raise RuntimeError(f"system {system.name} returned {len(scores)} scores for {len(head)} documents")
            top = None if any(s is None for s in scores) else order_by_score(head, scores)
        out.times[c.query.qid] = time.perf_counter() - t0
        out.pairs += k
        if top is None:
            out.left_out.append(c.query.qid)
        else:
            out.tops[c.query.qid] = top
            own = c.scores[k:] if system.first_stage and c.scores is not None else None
            out.run[c.query.qid] = run_scores(top, tail, tail_scores=own)
        if on_query:
            on_query()
    return out
