"""The listwise teacher program: its signature (R2R's reply shape), the RankGPT repair of a flawed
permutation, and `optimize --program listwise` (labeled windows from qrels, nDCG@10) on DSPy's DummyLM."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import dspy
import pytest
from dspy.utils.dummies import DummyLM

from r2r_synth.config import OptimizeConfig
from r2r_synth.optimize import run_optimize
from r2r_synth.optimize.listwise import listwise_examples, listwise_metric, listwise_scores
from r2r_synth.schemas import RankingRepair
from r2r_synth.teacher.programs import build_program, load_program, program_hash, save_program
from r2r_synth.teacher.signatures import ListwiseRanking, RankedPassage, read_prompt, repair_ranking

sys.path.insert(0, str(Path(__file__).parent))
from test_optimize import make_candidates

# --------------------------------------------------------------------------- the contract


def test_signature_keeps_r2rs_fields_and_reads_its_prompt_file():
    assert list(ListwiseRanking.input_fields) == ["query", "passages"]
    assert list(ListwiseRanking.output_fields) == ["ranked_passages"]
    assert list(RankedPassage.model_fields) == ["identifier", "relevance", "direct_reason", "listwise_reason",
                                                "direct_answer_sentence"]
    prog = build_program("listwise")
    assert prog.predictors()[0].signature.instructions == read_prompt("listwise")
    assert "every passage exactly once" in read_prompt("listwise")


def test_the_prompt_shows_passages_with_identifiers_and_an_inline_schema():
    adapter = dspy.ChatAdapter()
    msgs = adapter.format(ListwiseRanking, [], {"query": "q?", "passages": [{"identifier": 1, "text": "one"},
                                                                          {"identifier": 2, "text": "two"}]})
    assert '[{"identifier": 1, "text": "one"}, {"identifier": 2, "text": "two"}]' in msgs[-1]["content"]
    assert "$ref" not in msgs[0]["content"] and '"direct_reason"' in msgs[0]["content"]
    parsed = adapter.parse(ListwiseRanking, '[[ ## ranked_passages ## ]]\n[{"identifier": 2, "relevance": 3, '
                           '"direct_reason": "d", "listwise_reason": "l", "direct_answer_sentence": ""}]\n'
                           "[[ ## completed ## ]]")
    assert parsed["ranked_passages"][0].identifier == 2 and parsed["ranked_passages"][0].relevance == 3


@pytest.mark.parametrize("given,order,fix", [
    ([2, 1, 3], [2, 1, 3], None),
    ([2, 2, 1], [2, 1, 3], RankingRepair(duplicates=[2], missing=[3])),
    ([3, 9, 1, 0], [3, 1, 2], RankingRepair(unknown=[9, 0], missing=[2])),
    ([], [1, 2, 3], RankingRepair(missing=[1, 2, 3])),
])
def test_repair_ranking_is_rankgpts_receive_permutation(given, order, fix):
    assert repair_ranking(given, 3) == (order, fix)


def test_a_program_with_demos_saves_loads_and_changes_its_hash(tmp_path):
    prog = build_program("listwise")
    fresh = program_hash(prog)
    prog.predictors()[0].demos = [dspy.Example(
        query="q", passages=[{"identifier": 1, "text": "a"}, {"identifier": 2, "text": "b"}],
        ranked_passages=[RankedPassage(identifier=2, relevance=2, direct_reason="d", listwise_reason="l",
                                       direct_answer_sentence="s")])]
    save_program(prog, "listwise", programs_dir=tmp_path)
    loaded = load_program("listwise", programs_dir=tmp_path)
    assert loaded.optimized and loaded.program_hash == program_hash(prog) != fresh
    # The demo is shown to the teacher the way a live window is.
    msgs = dspy.ChatAdapter().format(loaded.predictor.signature, list(loaded.predictor.demos),
                                     {"query": "q2", "passages": [{"identifier": 1, "text": "x"}]})
    assert any('"identifier": 2' in m["content"] for m in msgs if m["role"] == "assistant")


# --------------------------------------------------------------------------- the metric


def oracle(cands, *, reverse: bool = False, flaw: bool = False) -> DummyLM:
    """Ranks each query's window by its gold grades (or the other way round); `flaw` repeats the
    first identifier in place of the last."""
    answers = {}
    for c in cands:
        order = sorted(range(len(c.documents)), key=lambda i: c.qrels.get(c.documents[i].docid, 0),
                       reverse=not reverse)
        ids = [i + 1 for i in order]
        if flaw:
            ids = ids[:-1] + ids[:1]
        answers[c.query.text] = {"ranked_passages": [
            {"identifier": i, "relevance": 0, "direct_reason": "r", "listwise_reason": "l",
             "direct_answer_sentence": ""} for i in ids]}
    return DummyLM(answers)


def test_listwise_examples_take_one_window_per_judged_query():
    cands = make_candidates(4)
    exs = listwise_examples(cands)
    assert len(exs) == 4 and exs[0].docids == [d.docid for d in cands[0].documents]
    assert [p.identifier for p in exs[0].passages] == [1, 2, 3, 4, 5] and exs[0].gold == cands[0].qrels
    unjudged = cands[0].model_copy(update={"qrels": {}})
    assert listwise_examples([unjudged]) == []  # no relevant passage: nDCG is undefined


def test_the_metric_scores_the_ranking_against_the_gold_grades():
    ex = listwise_examples(make_candidates(1))[0]
    def pred(ids: list[int]) -> dspy.Prediction:
        return dspy.Prediction(ranked_passages=[RankedPassage(
            identifier=i, relevance=0, direct_reason="", listwise_reason="", direct_answer_sentence="") for i in ids])

    perfect = listwise_scores(ex, pred([1, 2, 4, 3, 5]))  # GRADES = [3, 2, 0, 1, 0]
    assert perfect["nDCG@10"] == 1.0 and perfect["pairwise_accuracy"] == 1.0 and perfect["repaired"] == 0.0
    worst = listwise_scores(ex, pred([5, 3, 4, 2, 1]))
    assert worst["nDCG@10"] < listwise_scores(ex, pred([1, 2, 3, 4, 5]))["nDCG@10"] < 1.0
    repaired = listwise_scores(ex, pred([1, 1, 2]))
    assert repaired["repaired"] == 1.0 and repaired["invalid"] == 0.0
    unusable = listwise_scores(ex, pred([]))
    assert unusable["invalid"] == 1.0 and unusable["nDCG@10"] == 0.0 and math.isnan(unusable["kendall_tau"])
    # A demo needs a clean permutation at least as good as the first stage.
    assert listwise_metric(ex, pred([1, 2, 4, 3, 5]), trace=[]) is True
    assert listwise_metric(ex, pred([1, 2, 4, 3]), trace=[]) is False  # repaired
    assert listwise_metric(ex, pred([5, 3, 4, 2, 1]), trace=[]) is False  # worse than BM25's order


def test_optimize_listwise_reports_ndcg_before_after_and_the_first_stage(tmp_path):
    cands = make_candidates(8)
    cfg = OptimizeConfig(input="-", program="listwise", programs_dir=tmp_path, optimizer="bootstrap", max_demos=2,
                         concurrency=1)
    rep = run_optimize(cfg, candidates=cands, lm=oracle(cands))
    pr = rep.programs["listwise"]
    assert pr.primary_metric == "nDCG@10" and pr.before["nDCG@10"] == pr.after["nDCG@10"] == 1.0
    assert pr.first_stage["nDCG@10"] < 1.0 and pr.val_examples == len(rep.split["val_qids"]) == 2
    assert pr.demos == 2 and (tmp_path / "listwise.json").is_file()
    assert set(rep.split["val_qids"]).isdisjoint(rep.split["train_qids"])
    meta = json.loads((tmp_path / "listwise.meta.json").read_text())
    assert meta["metric"] == "nDCG@10" and meta["labeled_set"]["listwise_examples"] == 8


def test_optimize_listwise_counts_repaired_and_scores_a_bad_teacher_low(tmp_path):
    cands = make_candidates(8)
    cfg = OptimizeConfig(input="-", program="listwise", programs_dir=tmp_path, evaluate_only=True, concurrency=1)
    flawed = run_optimize(cfg, candidates=cands, lm=oracle(cands, flaw=True)).programs["listwise"].before
    assert flawed["repaired"] == 1.0 and flawed["invalid"] == 0.0
    wrong = run_optimize(cfg, candidates=cands, lm=oracle(cands, reverse=True)).programs["listwise"].before
    assert wrong["nDCG@10"] < 0.6 and wrong["pairwise_accuracy"] == 0.0


def test_the_program_hash_covers_the_schema_the_teacher_is_shown():
    from r2r_synth.teacher.programs import _content

    listwise = {f["name"]: f for f in _content(build_program("listwise"))[0]["fields"]}
    item = listwise["ranked_passages"]["schema"]["items"]["properties"]
    assert item["direct_reason"]["maxLength"] == 160 and "schema" in listwise["passages"]
    direct = {f["name"]: f for f in _content(build_program("direct"))[0]["fields"]}
    assert not any("schema" in f for f in direct.values())  # plain types: their hashes stay as they were
