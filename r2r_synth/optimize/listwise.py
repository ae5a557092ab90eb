"""The listwise program under `optimize`: its labeled set and its metric.

- **Examples** (`listwise_examples`): per judged query, one window of its top `--depth` candidates
  in first-stage order (the order `generate --listwise` shows a query's first window in), the
  passages numbered 1..n; the gold grade of each judged passage (an unjudged one gains 0, as in
  trec_eval). A query whose window holds no passage judged relevant (grade >= 1) is left out: its
  nDCG is undefined.
- **Metric** (`listwise_scores`): the teacher's ranking of the window (repaired the RankGPT way,
  `repair_ranking`) scored with nDCG@10 against the gold grades of the window (the ideal ranking is
  the window's own best), pairwise accuracy over judged passages of different grades, and Kendall's
  tau. A reply that names none of the window's passages scores 0 (the DSPy metric) and counts as
  `invalid` in the report.
- **Demos**: bootstrapping keeps a prediction as a demo only when its permutation needed no repair
  and it ranks the window at least as well as the first stage does (`listwise_metric` with a trace).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import dspy

from r2r_synth import metrics as M
from r2r_synth.optimize.labeled import grade
from r2r_synth.schemas import Candidates
from r2r_synth.teacher.signatures import Passage, repair_ranking


def listwise_examples(candidates: Sequence[Candidates], *, depth: int | None = None) -> list[dspy.Example]:
    """One example per query with a relevant judged passage among its top `depth` (see the module
    docstring): inputs ``query``, ``passages``; labels ``gold`` ({docid: grade} of the judged
    passages), ``docids`` (in the order shown) and ``first_stage`` (the window's first-stage scores)."""
    out = []
    for c in candidates:
        docs = c.documents if depth is None else c.documents[:depth]
        gold = {d.docid: grade(c.qrels[d.docid]) for d in docs if d.docid in c.qrels}
        if len(docs) < 2 or not any(g > 0 for g in gold.values()):
            continue
        docids = [d.docid for d in docs]
        out.append(dspy.Example(
            qid=c.query.qid, query=c.query.text,
            passages=[Passage(identifier=i + 1, text=d.full_text()) for i, d in enumerate(docs)],
            docids=docids, gold=gold, first_stage=ranking_scores(docids, list(range(1, len(docs) + 1))),
        ).with_inputs("query", "passages"))
    return out


def ranking_scores(docids: Sequence[str], order: Sequence[int]) -> dict[str, float]:
    """``{docid: score}`` of a ranking given as 1-based identifiers best first (higher score ranks higher)."""
    n = len(order)
    return {docids[i - 1]: float(n - pos) for pos, i in enumerate(order)}


def predicted_order(pred: Any, n: int) -> tuple[list[int] | None, bool]:
    """``(order, repaired)``: the prediction's ranking of a window of `n` as a permutation of 1..n
    (RankGPT's repair), or ``(None, False)`` when it names none of the passages or did not parse."""
    ranked = getattr(pred, "ranked_passages", None) if pred is not None else None
    try:
        ids = [int(p.identifier if hasattr(p, "identifier") else p["identifier"]) for p in ranked or []]
    except (TypeError, ValueError, KeyError):
        return None, False
    if not any(1 <= i <= n for i in ids):
        return None, False
    order, fix = repair_ranking(ids, n)
    return order, fix is not None


def listwise_scores(example: Any, pred: Any) -> dict[str, float]:
    """nDCG@10, pairwise accuracy and Kendall's tau of the prediction's window ranking (0, 0 and NaN
    for an unusable reply), and whether it was ``repaired`` / ``invalid`` (1.0 or 0.0)."""
    order, repaired = predicted_order(pred, len(example.docids))
    if order is None:
        return {"nDCG@10": 0.0, "pairwise_accuracy": 0.0, "kendall_tau": math.nan, "repaired": 0.0, "invalid": 1.0}
    scores = ranking_scores(example.docids, order)
    return {**M.ranking_metrics(example.gold, scores), "repaired": float(repaired), "invalid": 0.0}


def listwise_metric(example: Any, pred: Any, trace: Any = None) -> float | bool:
    """DSPy metric of the listwise program: nDCG@10 of the window's ranking (see the module
    docstring), or with a trace, whether the prediction may become a demo (no repair, and at least
    the first stage's nDCG@10)."""
    s = listwise_scores(example, pred)
    if trace is not None:
        first = M.ndcg_at_k(example.gold, example.first_stage)
        return not s["invalid"] and not s["repaired"] and s["nDCG@10"] >= first
    return s["nDCG@10"]


def listwise_feedback(example: Any, pred: Any) -> str:
    """Textual feedback on one listwise prediction, for GEPA's reflection LM."""
    n = len(example.docids)
    order, repaired = predicted_order(pred, n)
    if order is None:
        return (f"Your reply named none of the {n} passages by its identifier (1..{n}). Return every passage "
                "exactly once in `ranked_passages`, most relevant first, each with its identifier.")
    s = listwise_scores(example, pred)
    best = sorted(example.gold, key=lambda d: -example.gold[d])[:3]
    ids = {d: i + 1 for i, d in enumerate(example.docids)}
    gold_top = ", ".join(f"[{ids[d]}] (grade {example.gold[d]})" for d in best)
    text = (f"nDCG@10 {s['nDCG@10']:.2f} against the human grades; the passages the assessors graded highest are "
            f"{gold_top}; you ranked first [{order[0]}].")
    if repaired:
        text += (f" Your ranking was not a permutation of the {n} passages (some were repeated, missing or unknown): "
                 "name every identifier exactly once.")
    return text


def listwise_feedback_metric(gold: Any, pred: Any, trace: Any = None, pred_name: str | None = None,
                             pred_trace: Any = None) -> Any:
    """GEPA metric for the listwise program: ``dspy.Prediction(score, feedback)``."""
    return dspy.Prediction(score=float(listwise_metric(gold, pred)), feedback=listwise_feedback(gold, pred))


def first_stage_listwise(examples: Sequence[dspy.Example]) -> dict[str, float]:
    """The first stage's ranking metrics on the same windows: the bar a teacher has to clear."""
    per = [M.ranking_metrics(ex.gold, ex.first_stage) for ex in examples]
    return {k: M.nanmean(m[k] for m in per) for k in ("nDCG@10", "pairwise_accuracy", "kendall_tau")}
