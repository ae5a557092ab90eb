"""Metrics against hand-computed values, and nDCG@10 against ir-measures (an independent implementation)."""

from __future__ import annotations

import inspect
import math
import random

import dspy
import pytest

from r2r_synth import metrics as M
from r2r_synth.errors import InputError

GOLD = {"d1": 3, "d2": 0, "d3": 2, "d4": 1}
SCORES = {"d1": 0.9, "d2": 0.8, "d3": 0.6, "d4": 0.5}  # order d1 d2 d3 d4


def test_graded_agreement_by_hand():
    gold = [3, 2, 0, 1, 0]
    pred = [3, 1, 2, None, 0]
    assert M.exact_agreement(gold, pred) == pytest.approx(2 / 5)
    assert M.within_one_agreement(gold, pred) == pytest.approx(3 / 5)  # 3=3, |1-2|=1, 0=0
    # binarized at >= 2: gold T T F F F; pred T F T (None=wrong) F -> right: 1st, 5th
    assert M.binary_accuracy(gold, pred) == pytest.approx(2 / 5)
    # at >= 1: gold T T F T F; pred T T T wrong F -> right: 1st, 2nd, 5th
    assert M.binary_accuracy(gold, pred, threshold=1) == pytest.approx(3 / 5)
    assert math.isnan(M.exact_agreement([], []))
    with pytest.raises(ValueError, match="gold has 2 labels but pred has 1"):
        M.exact_agreement([1, 2], [1])


def test_preferences_and_swap_consistency_by_hand():
    assert M.preference_accuracy(["A", "B", "B", "A"], ["A", "A", "b", None]) == pytest.approx(2 / 4)
    # record frame: the swapped answer is already translated, agreement = equal labels
    assert M.swap_consistency([("A", "A"), ("A", "B"), ("B", "B"), ("B", None)]) == pytest.approx(2 / 4)
    # raw frame: the teacher saw the documents the other way round, agreement = opposite labels
    assert M.swap_consistency([("A", "B"), ("A", "A"), ("B", "A")], frame="raw") == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="frame must be 'record' or 'raw'"):
        M.swap_consistency([("A", "B")], frame="other")


def test_ranking_metrics_by_hand():
    # pairs with their gold and score order: (d1,d2) C, (d1,d3) C, (d1,d4) C, (d2,d3) D, (d2,d4) D, (d3,d4) C
    assert M.pairwise_accuracy(GOLD, SCORES) == pytest.approx(4 / 6)
    assert M.kendall_tau(GOLD, SCORES) == pytest.approx((4 - 2) / 6)
    dcg = 3 / math.log2(2) + 0 / math.log2(3) + 2 / math.log2(4) + 1 / math.log2(5)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert M.ndcg_at_k(GOLD, SCORES) == pytest.approx(dcg / idcg)
    assert M.ndcg_at_k(GOLD, SCORES, k=1) == pytest.approx(1.0)
    # the ideal uses every judged document, also one the run never scored
    dcg_missing = 3 / math.log2(2) + 0 / math.log2(3)
    assert M.ndcg_at_k(GOLD, {"d1": 1.0, "d2": 0.5}) == pytest.approx(dcg_missing / idcg)
    assert math.isnan(M.ndcg_at_k({"d1": 0}, {"d1": 1.0}))  # no relevant document: undefined
    by_name = M.ranking_metrics(GOLD, SCORES)
    assert set(by_name) == {"nDCG@10", "kendall_tau", "pairwise_accuracy"}


def test_kendall_tau_b_with_ties_by_hand():
    gold = {"a": 1, "b": 1, "c": 0}
    scores = {"a": 0.5, "b": 0.4, "c": 0.4}
    # (a,b) tied in gold, (a,c) concordant, (b,c) tied in score: tau_b = 1 / sqrt(2 * 2)
    assert M.kendall_tau(gold, scores) == pytest.approx(0.5)
    assert M.pairwise_accuracy(gold, scores) == pytest.approx((1 + 0.5) / 2)
    assert math.isnan(M.kendall_tau({"a": 1, "b": 1}, {"a": 0.1, "b": 0.9}))
    scipy_stats = pytest.importorskip("scipy.stats")
    ref = scipy_stats.kendalltau([1, 1, 0], [0.5, 0.4, 0.4]).statistic
    assert M.kendall_tau(gold, scores) == pytest.approx(ref)


def test_ties_break_by_docid_descending_like_trec_eval():
    assert M.rank({"a": 1.0, "b": 1.0, "c": 2.0, "d": 1.0}) == ["c", "d", "b", "a"]


def test_ndcg_matches_ir_measures_on_random_rankings_with_ties():
    rng = random.Random(7)
    qrels, run = {}, {}
    for q in range(30):
        docs = [f"p{q}_{i}" for i in range(rng.randint(3, 25))]
        judged = rng.sample(docs, k=max(1, len(docs) // 2))
        qrels[f"q{q}"] = {d: rng.choice([0, 0, 1, 2, 3]) for d in judged}
        qrels[f"q{q}"][f"unretrieved{q}"] = rng.choice([1, 3])  # judged but never ranked
        # coarse scores so that ties happen often
        run[f"q{q}"] = {d: float(rng.randint(0, 4)) for d in docs}
    per_query = M.ir_eval_per_query(qrels, run, measures=["nDCG@10", "nDCG@5"])
    assert len(per_query) == 30
    for qid, ranked in run.items():
        assert M.ndcg_at_k(qrels[qid], ranked) == pytest.approx(per_query[qid]["nDCG@10"], abs=1e-6), qid
        assert M.ndcg_at_k(qrels[qid], ranked, k=5) == pytest.approx(per_query[qid]["nDCG@5"], abs=1e-6), qid
    mean = M.ir_eval(qrels, run, measures=["nDCG@10"])
    assert mean["nDCG@10"] == pytest.approx(M.nanmean(M.ndcg_at_k(qrels[q], run[q]) for q in run), abs=1e-6)


def test_ir_eval_default_measures_by_hand():
    qrels = {"1": {"a": 0, "b": 2, "c": 1}, "2": {"x": 3}}
    run = {1: {"a": 3.0, "b": 2.0, "c": 1.0}, "2": {"y": 1.0, "x": 0.5}}  # int qid on purpose
    out = M.ir_eval(qrels, run)
    assert set(out) == {"nDCG@10", "RR@10", "R@100"}
    # RR counts grade >= 1 as relevant by default: q1 first relevant at rank 2, q2 at rank 2
    assert out["RR@10"] == pytest.approx(0.5)
    assert out["R@100"] == pytest.approx(1.0)
    q1 = (2 / math.log2(3) + 1 / math.log2(4)) / (2 + 1 / math.log2(3))
    q2 = (3 / math.log2(3)) / 3
    assert out["nDCG@10"] == pytest.approx((q1 + q2) / 2)


def test_ir_eval_errors_say_what_and_how():
    with pytest.raises(InputError, match="unknown measure 'nDGC@10'"):
        M.ir_eval({"1": {"a": 1}}, {"1": {"a": 1.0}}, measures=["nDGC@10"])
    with pytest.raises(InputError, match="no query of the run has qrels"):
        M.ir_eval({"1": {"a": 1}}, {"2": {"a": 1.0}})
    with pytest.raises(InputError, match="the run is empty"):
        M.ir_eval({"1": {"a": 1}}, {})


def test_dspy_metrics_strict_bool_with_trace_float_without():
    ex = dspy.Example(query="q", document="d", gold=3).with_inputs("query", "document")
    assert M.direct_metric(ex, dspy.Prediction(relevance=3, score=0.9), trace=[]) is True
    assert M.direct_metric(ex, dspy.Prediction(relevance=2, score=0.9), trace=[]) is False
    assert M.direct_metric(ex, dspy.Prediction(relevance=2, score=0.9)) == 0.5
    assert M.direct_metric(ex, dspy.Prediction(relevance=0, score=0.1)) == 0.0
    assert M.direct_metric(ex, dspy.Prediction(relevance="three")) == 0.0
    cx = dspy.Example(query="q", document_a="a", document_b="b", gold="B", gold_a=0, gold_b=2)
    assert M.comparison_metric(cx, dspy.Prediction(preferred="B"), trace=[]) is True
    assert M.comparison_metric(cx, dspy.Prediction(preferred="A"), trace=[]) is False
    assert M.comparison_metric(cx, dspy.Prediction(preferred="B")) == 1.0


def test_gepa_feedback_metrics_explain_the_miss():
    ex = dspy.Example(query="q", document="d", gold=3).with_inputs("query", "document")
    fb = M.direct_feedback_metric(ex, dspy.Prediction(relevance=0, score=0.1, reasoning="It is about cats."))
    assert fb.score == 0.0
    assert "You rated a grade-3 (perfectly relevant) passage as 0" in fb.feedback
    assert 'because you reasoned: "It is about cats."' in fb.feedback
    ok = M.direct_feedback_metric(ex, dspy.Prediction(relevance=3, score=0.9, reasoning="r"), None, "predict", None)
    assert ok.score == 1.0 and ok.feedback.startswith("Correct")
    cx = dspy.Example(query="q", document_a="a", document_b="b", gold="A", gold_a=2, gold_b=0)
    cfb = M.comparison_feedback_metric(cx, dspy.Prediction(preferred="B", reasoning=""))
    assert cfb.score == 0.0 and "You preferred B but the human labels prefer A (human grades: A=2, B=0)" in cfb.feedback


def test_gepa_metric_signature_matches_installed_gepa():
    """GEPA calls metric(gold, pred, trace, pred_name, pred_trace): bind it the way GEPA checks it, and
    keep GEPA's parameter names (it may pass them by keyword)."""
    gepa_mod = pytest.importorskip("dspy.teleprompt.gepa.gepa")
    proto = [p for p in inspect.signature(gepa_mod.GEPAFeedbackMetric.__call__).parameters if p != "self"]
    for fn in (M.direct_feedback_metric, M.comparison_feedback_metric):
        inspect.signature(fn).bind(None, None, None, None, None)
        assert list(inspect.signature(fn).parameters) == proto[:5]


def test_ir_eval_averages_over_the_runs_judged_queries_only():
    # A run over a --limit slice is scored on its own queries, not diluted by the qrels' others.
    qrels = {"1": {"a": 1}, "2": {"b": 1}, "3": {"c": 1}}
    run = {"1": {"a": 2.0, "x": 1.0}}
    assert M.ir_eval(qrels, run, measures=["nDCG@10"]) == {"nDCG@10": pytest.approx(1.0)}
    assert set(M.ir_eval_per_query(qrels, run, measures=["nDCG@10"])) == {"1"}


# --------------------------------------------------------------------------- reranking and paired tests


def test_unchanged_by_reranking_names_set_based_measures_at_or_past_the_depth():
    measures = ["nDCG@10", "RR@10", "R@100", "R@5", "P@10", "P@5", "Success@20", "AP", "R", "NumRel", "nDCG@100"]
    assert M.unchanged_by_reranking(measures, depth=10) == ["R@100", "P@10", "Success@20", "R", "NumRel"]
    assert M.unchanged_by_reranking(measures, depth=100) == ["R@100", "R", "NumRel"]
    assert M.unchanged_by_reranking(["R@1000"], depth=None) == []  # the whole list reranked: only no-cutoff ones
    with pytest.raises(InputError, match="unknown measure 'Recall@x'"):
        M.unchanged_by_reranking(["Recall@x"], depth=10)


def test_randomization_test_by_hand_and_against_scipy_exact():
    # Three queries, each +1: of the 8 sign assignments only all-plus and all-minus reach |mean| 1.
    assert M.paired_randomization_test([1, 1, 1], [0, 0, 0]) == pytest.approx(2 / 8)
    assert M.paired_randomization_test([0.3, 0.5], [0.3, 0.5]) == 1.0
    assert M.paired_randomization_test([], []) is None
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(3)
    a = [rng.random() for _ in range(9)]
    b = [x - rng.uniform(-0.2, 0.4) for x in a]
    ref = stats.permutation_test((a, b), lambda x, y, axis: (x - y).mean(axis=axis), permutation_type="samples",
                                 n_resamples=10_000, vectorized=True)  # 2^9 < 10_000: scipy enumerates too
    assert M.paired_randomization_test(a, b) == pytest.approx(ref.pvalue, abs=1e-9)


def test_randomization_test_sampled_is_seeded_and_close_to_exact():
    rng = random.Random(11)
    a = [rng.random() for _ in range(20)]
    b = [x - rng.gauss(0.05, 0.2) for x in a]
    exact = M.paired_randomization_test(a, b, samples=2**20)  # all 2^20 assignments
    sampled = M.paired_randomization_test(a, b, samples=20_000, seed=1)
    assert sampled == M.paired_randomization_test(a, b, samples=20_000, seed=1)
    assert sampled == pytest.approx(exact, abs=0.01) and sampled != exact
    assert M.paired_randomization_test([1.0] * 40, [0.0] * 40, samples=1000) == pytest.approx(1 / 1001)  # never 0


def test_paired_t_test_by_hand():
    a, b = [0.9, 0.7, 0.4, 0.8], [0.5, 0.6, 0.5, 0.4]
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 3)
    t = mean / (sd / 2)
    stats = pytest.importorskip("scipy.stats")
    assert M.paired_t_test(a, b) == pytest.approx(2 * stats.t.sf(abs(t), df=3))
    assert M.paired_t_test([1, 2], [1, 2]) == 1.0  # no difference at all
    assert M.paired_t_test([1, 2], [0, 1]) == 0.0  # the same difference everywhere: certain
    assert M.paired_t_test([1], [0]) is None
    with pytest.raises(ValueError, match="the first system has 2 per-query values but the second has 1"):
        M.paired_t_test([1, 2], [1])
