"""The training view: R2R release, generate's record files and run directories -> one view."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r2r_synth.errors import InputError
from r2r_synth.schemas import (
    ComparisonAnswer,
    ComparisonRecord,
    DirectRecord,
    Document,
    Provenance,
    Query,
)
from r2r_synth.student.corpus import load_training_view

PROV = Provenance(teacher="openai/test", program="direct", program_hash="p", prompt_hash="h")


def _direct(qid: str, docid: str, text: str, *, grade: int, score: float, gold: int | None = None) -> DirectRecord:
    return DirectRecord(key=f"d-{qid}-{docid}", query=Query(qid=qid, text=f"query {qid}"),
                        document=Document(docid=docid, text=text), reasoning=f"why {docid}", relevance=grade,
                        score=score, gold=gold, provenance=PROV)


def _cmp(qid: str, a: str, b: str, preferred: str, *, agrees: bool = True) -> ComparisonRecord:
    swapped = ComparisonAnswer(reasoning="other order", preferred=preferred if agrees else ("B" if preferred == "A" else "A"),
                               confidence=0.6)
    return ComparisonRecord(key=f"c-{qid}-{a}-{b}", query=Query(qid=qid, text=f"query {qid}"),
                            doc_a=Document(docid=a, text=f"text {a}"), doc_b=Document(docid=b, text=f"text {b}"),
                            reasoning="A says more", preferred=preferred, confidence=0.8, swapped=swapped,
                            gold_a=0, provenance=PROV)


def _write(path: Path, records) -> Path:
    path.write_text("".join(r.model_dump_json() + "\n" for r in records))
    return path


def _r2r_row(qid: str, n: int = 3, perm: list[int] | None = None) -> dict:
    perm = perm or list(range(n, 0, -1))
    return {
        "query": f"what is {qid}", "qid": qid, "unsorted_docs": [f"{qid} passage {i}" for i in range(1, n + 1)],
        "re_rank_id": perm,
        "reason": {"ranked_passages": [{"identifier": i, "direct_reason": f"direct {i}", "listwise_reason": f"list {i}"}
                                       for i in perm]},
    }


def test_real_r2r_release_becomes_permutations_and_reasons(r2r_corpus):
    view = load_training_view([r2r_corpus / "msmarco_100.jsonl"])
    s = view.summary()
    assert s["queries"] == 100 and s["listwise_records"] == 100 and s["documents"] == 500
    q = view.queries[0]
    assert len(q.permutations) == 1 and sorted(q.permutations[0]) == sorted(q.docs)
    best = q.docs[q.permutations[0][0]]
    assert best.reasons and best.listwise_reasons  # GPT-4's direct_reason / listwise_reason
    ranks = q.teacher_ranks()
    assert ranks[q.permutations[0][0]] == 0.0 and ranks[q.permutations[0][-1]] == 1.0
    assert view.has_permutations and not view.has_scores and not view.has_preferences


def test_direct_and_comparison_files_keep_gold_beside_teacher(tmp_path):
    d = _write(tmp_path / "direct.jsonl", [
        _direct("q1", "a", "text a", grade=3, score=0.9, gold=0),
        _direct("q1", "b", "text b", grade=0, score=0.1),
        _direct("q1", "a", "text a", grade=2, score=0.7, gold=0),  # a second rollout
    ])
    c = _write(tmp_path / "comparison.jsonl", [_cmp("q1", "a", "b", "A"), _cmp("q1", "b", "c", "B", agrees=False)])
    view = load_training_view([d, c])
    q = view.queries[0]
    a = q.docs["a"]
    assert a.teacher_scores == [0.9, 0.7] and a.teacher_score == pytest.approx(0.8)
    assert a.teacher_grade == pytest.approx(2.5)
    assert a.gold == 0  # gold is kept on its own: the teacher's 3 and 2 are untouched
    assert a.reasons == ["why a", "why a"]
    prefs = [(p.winner, p.loser, p.consistent) for p in q.preferences]
    assert prefs == [("a", "b", True), ("c", "b", False)]
    assert view.summary()["comparison_records"] == 2


def test_run_directory_reads_every_record_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _write(run / "direct.jsonl", [_direct("q1", "a", "text a", grade=1, score=0.4)])
    _write(run / "comparison.jsonl", [_cmp("q2", "x", "y", "B")])
    view = load_training_view([run])
    assert [q.qid for q in view.queries] == ["q1", "q2"]
    assert view.sources == [str(run)]


def test_bad_r2r_rows_become_rejects_not_silence(tmp_path):
    f = tmp_path / "r2r.jsonl"
    rows = [_r2r_row("1"), {**_r2r_row("2"), "re_rank_id": [1, 1, 2]}, _r2r_row("3")]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    view = load_training_view([f])
    assert [q.qid for q in view.queries] == ["1", "3"]
    assert len(view.rejects) == 1 and view.rejects[0][0] == f"{f}:2" and "permutation" in view.rejects[0][1]


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no such corpus file or directory"):
        load_training_view([tmp_path / "nope.jsonl"])


def test_directory_without_records_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="a directory without direct.jsonl"):
        load_training_view([tmp_path])


def test_unknown_record_kind_names_the_file(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps({"kind": "candidates", "query": {"qid": "1", "text": "t"}}) + "\n")
    with pytest.raises(InputError, match=r"x\.jsonl:1: not a record r2r-synth can train on"):
        load_training_view([f])


def test_mixed_kinds_in_one_file_name_the_line(tmp_path):
    f = _write(tmp_path / "mixed.jsonl", [_direct("q1", "a", "t", grade=1, score=0.5), _cmp("q1", "a", "b", "A")])
    with pytest.raises(InputError, match=r"mixed\.jsonl:2: a 'comparison' record in a file of 'direct' records"):
        load_training_view([f])


def test_invalid_record_names_file_and_line(tmp_path):
    f = tmp_path / "direct.jsonl"
    good = _direct("q1", "a", "t", grade=1, score=0.5).model_dump(mode="json")
    bad = {**good, "relevance": 7}
    f.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(InputError, match=r"direct\.jsonl:2: not a valid DirectRecord record: relevance"):
        load_training_view([f])


def test_one_docid_with_two_texts_is_refused(tmp_path):
    f = _write(tmp_path / "direct.jsonl", [_direct("q1", "a", "one text", grade=1, score=0.5),
                                           _direct("q1", "a", "another text", grade=1, score=0.5)])
    with pytest.raises(InputError, match="docid 'a' has two different texts"):
        load_training_view([f])


def test_limit_keeps_the_first_queries(tmp_path):
    f = tmp_path / "r2r.jsonl"
    f.write_text("".join(json.dumps(_r2r_row(str(i))) + "\n" for i in range(5)))
    view = load_training_view([f]).limit(2)
    assert [q.qid for q in view.queries] == ["0", "1"] and view.summary()["listwise_records"] == 2


def test_a_beir_directory_trains_on_one_split_of_its_own_qrels(tmp_path):
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in [
        ("d1", "cats purr when content"), ("d2", "flea life cycle"), ("d3", "dogs bark at fleas")]))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in [
        ("q1", "why do cats purr"), ("q2", "flea life cycle")]))
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td2\t1\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    view = load_training_view([root], split="train")  # no --qrels: the directory's own, one split
    assert [q.qid for q in view.queries] == ["q2"]
    view = load_training_view([root])  # the default split, test
    assert [q.qid for q in view.queries] == ["q1"]
