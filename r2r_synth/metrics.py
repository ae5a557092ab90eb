"""Metrics of a teacher (or a student) against human relevance labels: plain functions.

Everything here takes plain Python data (grades, labels, ``{docid: score}`` maps), so the same
function serves a DSPy optimizer, the `optimize` report, `evaluate` and `report`. Conventions:

- Grades are TREC DL's 0..3; *relevant* means ``grade >= threshold`` (2 by default, as in the
  TREC DL passage task's binary measures).
- A ranking is a ``{docid: score}`` map, higher first. Ties are broken by docid, *descending*, which
  is what trec_eval (and so ir-measures) does, so `ndcg_at_k` agrees with `ir_eval` to the last digit.
- `ir_eval` is the one entry point to ir-measures (TREC-standard measures over whole runs); the
  small per-query functions exist because DSPy metrics and per-query tables need them without
  building runs.

The DSPy metric wrappers at the bottom follow DSPy's contract ``metric(example, pred, trace=None)``:
with ``trace`` given (bootstrapping), a strict ``bool`` says whether the prediction may become a
demo; without, a ``float`` in [0, 1] scores it. The GEPA variants take GEPA's extra arguments and
return ``dspy.Prediction(score=..., feedback=...)`` with feedback a reflection LM can act on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from r2r_synth.errors import InputError

DEFAULT_MEASURES = ("nDCG@10", "RR@10", "R@100")
RELEVANT_GRADE = 2

# --------------------------------------------------------------------------- graded labels


def _check_same_length(gold: Sequence[Any], pred: Sequence[Any]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} labels but pred has {len(pred)}; pass one prediction per gold label")


def exact_agreement(gold: Sequence[int], pred: Sequence[int | None]) -> float:
    """Fraction of items whose predicted grade equals the gold grade (a missing prediction counts as wrong)."""
    _check_same_length(gold, pred)
    if not gold:
        return math.nan
    return sum(p is not None and int(p) == int(g) for g, p in zip(gold, pred)) / len(gold)


def within_one_agreement(gold: Sequence[int], pred: Sequence[int | None]) -> float:
    """Fraction of items whose predicted grade is at most one step from the gold grade."""
    _check_same_length(gold, pred)
    if not gold:
        return math.nan
    return sum(p is not None and abs(int(p) - int(g)) <= 1 for g, p in zip(gold, pred)) / len(gold)


def binary_accuracy(gold: Sequence[int], pred: Sequence[int | None], *, threshold: int = RELEVANT_GRADE) -> float:
    """Accuracy of the relevant / not-relevant decision, both sides binarized at ``grade >= threshold``."""
    _check_same_length(gold, pred)
    if not gold:
        return math.nan
    return sum(p is not None and (int(p) >= threshold) == (int(g) >= threshold) for g, p in zip(gold, pred)) / len(
        gold
    )


# --------------------------------------------------------------------------- preferences


def preference_accuracy(gold: Sequence[str], pred: Sequence[str | None]) -> float:
    """Fraction of comparisons where the predicted preferred label ("A"/"B") is the gold one."""
    _check_same_length(gold, pred)
    if not gold:
        return math.nan
    return sum(p is not None and str(p).strip().upper() == str(g).strip().upper() for g, p in zip(gold, pred)) / len(
        gold
    )


def swap_consistency(answers: Iterable[tuple[str | None, str | None]], *, frame: str = "record") -> float:
    """Fraction of pairs whose two answers (documents shown in both orders) prefer the same document.

    Each item is ``(preferred as asked, preferred with the documents swapped)``. With
    ``frame="record"`` the swapped answer is already translated back into the record's labels (as in
    `ComparisonRecord.swapped`), so agreement means equal labels; with ``frame="raw"`` it is the label
    the teacher gave in the swapped prompt, so agreement means opposite labels. A missing answer
    counts as inconsistent.
    """
    if frame not in ("record", "raw"):
        raise ValueError(f"frame must be 'record' or 'raw', not {frame!r}")
    n = agree = 0
    for first, second in answers:
        n += 1
        if first is None or second is None:
            continue
        a, b = str(first).strip().upper(), str(second).strip().upper()
        agree += (a == b) if frame == "record" else ({a, b} == {"A", "B"})
    return agree / n if n else math.nan


def pairwise_accuracy(gold: Mapping[str, int], scores: Mapping[str, float]) -> float:
    """Over every pair of scored documents whose gold grades differ, the fraction the scores order
    correctly (a tie in score counts one half). Documents without a gold grade are left out."""
    docs = [d for d in scores if d in gold]
    right = total = 0.0
    for i, a in enumerate(docs):
        for b in docs[i + 1 :]:
            if gold[a] == gold[b]:
                continue
            total += 1
            hi, lo = (a, b) if gold[a] > gold[b] else (b, a)
            if scores[hi] > scores[lo]:
                right += 1
            elif scores[hi] == scores[lo]:
                right += 0.5
    return right / total if total else math.nan


# --------------------------------------------------------------------------- rankings


def kendall_tau(gold: Mapping[str, int], scores: Mapping[str, float]) -> float:
    """Kendall's tau-b between the gold grades and the scores over the scored, judged documents.

    tau-b corrects for ties, which graded labels have plenty of. NaN when either side is constant
    (the correlation is undefined there, not zero).
    """
    docs = [d for d in scores if d in gold]
    concordant = discordant = ties_gold = ties_score = 0
    for i, a in enumerate(docs):
        for b in docs[i + 1 :]:
            dg = (gold[a] > gold[b]) - (gold[a] < gold[b])
            ds = (scores[a] > scores[b]) - (scores[a] < scores[b])
            if dg == 0 and ds == 0:
                continue
            if dg == 0:
                ties_gold += 1
            elif ds == 0:
                ties_score += 1
            elif dg == ds:
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_gold) * (concordant + discordant + ties_score))
    return (concordant - discordant) / denom if denom else math.nan


def rank(scores: Mapping[str, float]) -> list[str]:
    """Docids best first, ties broken by docid descending (trec_eval's order)."""
    # Two stable sorts: docid descending first, then score descending keeps that order among ties.
    by_docid = sorted(scores, reverse=True)
    return sorted(by_docid, key=lambda d: scores[d], reverse=True)


def ndcg_at_k(gold: Mapping[str, int], scores: Mapping[str, float], *, k: int = 10) -> float:
    """nDCG@k with trec_eval's definition: gain = grade (linear), discount log2(rank + 1), the ideal
    ranking built from *every* judged document in `gold` (also those not scored), grades <= 0 gain 0.

    NaN when `gold` has no relevant document (trec_eval leaves such queries out of the mean).
    """
    ideal = sorted((g for g in gold.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    if idcg == 0:
        return math.nan
    dcg = sum(max(gold.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(rank(scores)[:k]))
    return dcg / idcg


def ranking_metrics(gold: Mapping[str, int], scores: Mapping[str, float], *, k: int = 10) -> dict[str, float]:
    """The per-query ranking metrics of one query's scored candidates, by name."""
    return {
        f"nDCG@{k}": ndcg_at_k(gold, scores, k=k),
        "kendall_tau": kendall_tau(gold, scores),
        "pairwise_accuracy": pairwise_accuracy(gold, scores),
    }


def nanmean(values: Iterable[float]) -> float:
    """Mean of the values that are not NaN (NaN when none are): how per-query metrics are averaged."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


# --------------------------------------------------------------------------- ir-measures


def _parse_measures(measures: Sequence[str]) -> list[Any]:
    import ir_measures

    parsed = []
    for m in measures:
        try:
            parsed.append(ir_measures.parse_measure(m))
        except Exception as e:  # ir-measures raises a bare ValueError/NameError on a bad name
            raise InputError(
                f"unknown measure {m!r}: {e}",
                hint="use ir-measures names, e.g. nDCG@10, RR@10, R@100, AP, P@5 (see ir-measur.es)",
            ) from e
    return parsed


def _check_overlap(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]) -> None:
    if not run:
        raise InputError("the run is empty: there is nothing to evaluate", hint="score at least one query")
    if not set(map(str, run)) & set(map(str, qrels)):
        some_run = sorted(map(str, run))[:3]
        some_qrels = sorted(map(str, qrels))[:3]
        raise InputError(
            f"no query of the run has qrels (run qids {some_run}..., qrels qids {some_qrels}...)",
            hint="pass the qrels of the queries you ranked (check the qid spelling on both sides)",
        )


def _str_keys(d: Mapping[Any, Mapping[Any, Any]], cast: type) -> dict[str, dict[str, Any]]:
    # ir-measures wants str qids/docids; callers often have int qids from JSON.
    return {str(q): {str(doc): cast(v) for doc, v in docs.items()} for q, docs in d.items()}


def ir_eval(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    measures: Sequence[str] = DEFAULT_MEASURES,
) -> dict[str, float]:
    """Mean of each measure over the queries that are in both `run` and `qrels`, via ir-measures.

    `qrels` is ``{qid: {docid: grade}}``, `run` is ``{qid: {docid: score}}`` (higher is better).
    Returns ``{measure name as given: mean}``. Raises `InputError` on an unknown measure name or
    when no query of the run is judged (a silent 0.0 there hides a qid mismatch).
    """
    import ir_measures

    _check_overlap(qrels, run)
    parsed = _parse_measures(measures)
    agg = ir_measures.calc_aggregate(parsed, _judged_in_run(qrels, run), _str_keys(run, float))
    return {name: float(agg[m]) for name, m in zip(measures, parsed)}


def _judged_in_run(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]) -> dict:
    """The qrels of the run's queries only: ir-measures averages over every query of the qrels (a
    query the run lacks counts as 0), so `--limit 20` against all 43 DL19 qrels would halve nDCG."""
    in_run = {str(q) for q in run}
    return _str_keys({q: v for q, v in qrels.items() if str(q) in in_run}, int)


def ir_eval_per_query(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    measures: Sequence[str] = DEFAULT_MEASURES,
) -> dict[str, dict[str, float]]:
    """Per-query values of each measure, ``{qid: {measure: value}}``, for the judged queries of the run."""
    import ir_measures

    _check_overlap(qrels, run)
    parsed = _parse_measures(measures)
    names = {m: name for name, m in zip(measures, parsed)}
    out: dict[str, dict[str, float]] = {}
    for row in ir_measures.iter_calc(parsed, _judged_in_run(qrels, run), _str_keys(run, float)):
        out.setdefault(row.query_id, {})[names[row.measure]] = float(row.value)
    return out


# --------------------------------------------------------------------------- reranking and paired tests

# ir-measures families whose value at a cutoff depends only on *which* documents sit above it, not
# on their order (and NumRel/NumQ, which read the qrels alone).
SET_BASED = frozenset({"P", "R", "SetP", "SetR", "SetF", "SetAP", "SetRelP", "Success", "Judged", "NumRet",
                       "NumRelRet", "NumRel", "NumQ"})


def unchanged_by_reranking(measures: Sequence[str], *, depth: int | None) -> list[str]:
    """The `measures` no reranker can change when each system reorders the same top `depth`
    candidates of every query and the rest follow in first-stage order (None: the whole list).

    A set-based measure (recall, precision, success, ...) at a cutoff k >= depth sees the top-depth set,
    which reordering keeps, plus the first-stage tail, which it never touches; without a cutoff it
    sees the whole list. Such a measure scores every system alike, query by query (R@100 of a top-100
    rerank is the first stage's recall).
    """
    out = []
    for name, m in zip(measures, _parse_measures(measures)):
        if m.NAME not in SET_BASED:
            continue
        cutoff = m.params.get("cutoff")
        if cutoff is None or (depth is not None and cutoff >= depth) or m.NAME in ("NumRel", "NumQ"):
            out.append(name)
    return out


def _check_paired(a: Sequence[float], b: Sequence[float]) -> None:
    if len(a) != len(b):
        raise ValueError(f"the first system has {len(a)} per-query values but the second has {len(b)}; pass "
                         "one value per query for both, in the same query order")


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided paired Student's t-test of mean(a) == mean(b) over the same queries (``scipy.stats.ttest_rel``).

    Returns the p-value: 1.0 when every difference is zero, 0.0 when every difference is the same
    non-zero value (no variance: the difference is certain), None under two pairs (undefined).
    """
    from scipy.stats import ttest_rel

    _check_paired(a, b)
    diffs = [x - y for x, y in zip(a, b)]
    if len(diffs) < 2:
        return None
    if all(d == diffs[0] for d in diffs):
        return 1.0 if diffs[0] == 0 else 0.0
    return float(ttest_rel(a, b, alternative="two-sided").pvalue)


def paired_randomization_test(a: Sequence[float], b: Sequence[float], *, samples: int = 10_000,
                              seed: int = 0) -> float | None:
    """Two-sided paired randomization test (Fisher's; Smucker, Allan & Carterette, CIKM 2007).

    Under the null hypothesis the two systems are exchangeable within each query, so each per-query
    difference keeps or flips its sign with probability 1/2. The p-value is the share of sign
    assignments whose |mean difference| is at least the observed one: all 2^n of them when that is
    at most `samples` (exact), else `samples` random ones drawn with `seed`, counted with the
    observed assignment, ``(hits + 1) / (samples + 1)`` (Phipson & Smyth 2010: never 0). None when
    there is no pair.
    """
    import numpy as np

    _check_paired(a, b)
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(d)
    if n == 0:
        return None
    observed = abs(d.mean())
    if observed == 0:
        return 1.0
    tol = 1e-12 * max(1.0, observed)  # equal means computed in another order must count as equal
    if n < 63 and 2**n <= samples:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
        return float(np.mean(np.abs(signs @ d) / n >= observed - tol))
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, samples, 1000):  # bounded memory on collections of thousands of queries
        signs = rng.choice((-1.0, 1.0), size=(min(1000, samples - start), n))
        hits += int(np.sum(np.abs(signs @ d) / n >= observed - tol))
    return (hits + 1) / (samples + 1)


# --------------------------------------------------------------------------- DSPy metric wrappers
# Examples carry the gold label in `gold` (a grade for direct, "A"/"B" for comparison); predictions
# carry the signature's outputs (`relevance`, `score` / `preferred`, `confidence`).


def _pred_grade(pred: Any) -> int | None:
    value = getattr(pred, "relevance", None) if pred is not None else None
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _pred_label(pred: Any) -> str | None:
    value = getattr(pred, "preferred", None) if pred is not None else None
    return None if value is None else str(value).strip().upper()


def direct_score(gold: int, predicted: int | None) -> float:
    """One direct prediction's score: 1 for the exact grade, 0.5 one step off, 0 otherwise."""
    if predicted is None:
        return 0.0
    off = abs(int(predicted) - int(gold))
    return 1.0 if off == 0 else 0.5 if off == 1 else 0.0


def direct_metric(example: Any, pred: Any, trace: Any = None) -> float | bool:
    """DSPy metric for the direct program: a float (see `direct_score`), or with a trace, True only
    for the exact gold grade (only exactly right answers become demos)."""
    grade = _pred_grade(pred)
    if trace is not None:
        return grade is not None and grade == int(example.gold)
    return direct_score(int(example.gold), grade)


def comparison_metric(example: Any, pred: Any, trace: Any = None) -> float | bool:
    """DSPy metric for the comparison program: the gold document preferred (1.0 / True) or not."""
    right = _pred_label(pred) == str(example.gold).upper()
    return right if trace is not None else float(right)


GRADE_NAMES = {0: "irrelevant", 1: "related but not answering", 2: "highly relevant", 3: "perfectly relevant"}


def _because(pred: Any) -> str:
    """'because you reasoned: "..."', quoting the prediction's reasoning (capped: feedback is a prompt)."""
    reasoning = getattr(pred, "reasoning", None) if pred is not None else None
    if not reasoning:
        return "without giving any reasoning"
    text = " ".join(str(reasoning).split())
    return f'because you reasoned: "{text[:400]}{"..." if len(text) > 400 else ""}"'


def direct_feedback(example: Any, pred: Any) -> str:
    """Textual feedback on one direct prediction, for GEPA's reflection LM."""
    gold = int(example.gold)
    grade = _pred_grade(pred)
    if grade is None:
        return (
            f"You gave no valid relevance grade; the human grade is {gold} ({GRADE_NAMES[gold]}). "
            "Always answer with an integer 0..3."
        )
    if grade == gold:
        return f"Correct: you rated this grade-{gold} ({GRADE_NAMES[gold]}) passage as {grade}."
    direction = "too low" if grade < gold else "too high"
    return (
        f"You rated a grade-{gold} ({GRADE_NAMES[gold]}) passage as {grade} ({GRADE_NAMES.get(grade, '?')}), "
        f"{direction}, {_because(pred)}. Re-read what the query asks and whether the passage "
        f"actually answers it."
    )


def comparison_feedback(example: Any, pred: Any) -> str:
    """Textual feedback on one comparison prediction, for GEPA's reflection LM."""
    gold = str(example.gold).upper()
    label = _pred_label(pred)
    grades = f"(human grades: A={example.gold_a}, B={example.gold_b})"
    if label == gold:
        return f"Correct: you preferred {label} {grades}."
    if label not in ("A", "B"):
        return f"You gave no valid preference; the human labels prefer {gold} {grades}. Answer 'A' or 'B'."
    return (
        f"You preferred {label} but the human labels prefer {gold} {grades}, {_because(pred)}. "
        "Judge which passage answers the query, not which is longer or shown first."
    )


def direct_feedback_metric(
    gold: Any, pred: Any, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None
) -> Any:
    """GEPA metric for the direct program: ``dspy.Prediction(score, feedback)``."""
    import dspy

    return dspy.Prediction(score=direct_score(int(gold.gold), _pred_grade(pred)), feedback=direct_feedback(gold, pred))


def comparison_feedback_metric(
    gold: Any, pred: Any, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None
) -> Any:
    """GEPA metric for the comparison program: ``dspy.Prediction(score, feedback)``."""
    import dspy

    return dspy.Prediction(score=float(comparison_metric(gold, pred)), feedback=comparison_feedback(gold, pred))
