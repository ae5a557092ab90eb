"""load_candidates on RankGPT JSON and Candidates JSONL (real DL19 and tiny files), and TREC run + corpus."""

from __future__ import annotations

import json
from pathlib import Path

import ir_measures
import pytest
from ir_measures import nDCG

from r2r_synth.errors import InputError
from r2r_synth.io.candidates import candidates_from_run, load_candidates
from r2r_synth.io.trec import read_qrels, write_run
from r2r_synth.schemas import Candidates, Document, Query


def hit(qid, docid, text="t", score=1.0):
    return {"content": text, "qid": qid, "docid": docid, "score": score}


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    return path


def write_lines(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def tiny_rankgpt(tmp_path) -> Path:
    return write_json(
        tmp_path / "cands.json",
        [
            {"query": "q one", "hits": [hit(1, "a", score=3), hit(1, "b", score=2), hit(1, "c", score=1)]},
            {"query": "q two", "hits": [hit(2, "d"), hit(2, "e")]},
            {"query": "q three", "hits": [hit("3", 30)]},
        ],
    )


# --------------------------------------------------------------------------- RankGPT, real data


def test_dl19_rankgpt_bm25_order_gives_published_ndcg(dl19):
    cands = load_candidates(dl19 / "bm25_top100.json", qrels=dl19 / "qrels.txt")
    assert len(cands) == 43 and all(len(c.documents) == 100 for c in cands)
    assert all(c.qrels for c in cands)
    # Rank by position (the BM25 order), not by the stored scores, so ties cannot reorder.
    run = {c.query.qid: {d.docid: -float(i) for i, d in enumerate(c.documents)} for c in cands}
    ndcg = ir_measures.calc_aggregate([nDCG @ 10], read_qrels(dl19 / "qrels.txt"), run)[nDCG @ 10]
    assert round(ndcg, 4) == 0.5058


def test_dl19_limit_depth_and_gold(dl19):
    cands = load_candidates(dl19 / "bm25_top100.json", qrels=dl19 / "qrels.txt", limit=5, depth=10)
    assert [c.query.qid for c in cands] == ["264014", "104861", "130510", "1114819", "1110199"]
    assert all(len(c.documents) == 10 and len(c.scores) == 10 for c in cands)
    assert cands[0].query.text == "how long is life cycle of flea"
    # qrels judge documents outside the top 10 too: they are all kept.
    assert len(cands[0].qrels) == 382


# --------------------------------------------------------------------------- RankGPT, tiny files


def test_rankgpt_ids_are_strings_and_order_kept(tiny_rankgpt, tmp_path):
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("1 Q0 a 3\n1 Q0 zz 1\n3 Q0 30 0\n")
    cands = load_candidates(tiny_rankgpt, qrels=qrels)
    assert [c.query.qid for c in cands] == ["1", "2", "3"]
    assert [d.docid for d in cands[0].documents] == ["a", "b", "c"]
    assert cands[0].scores == [3.0, 2.0, 1.0]
    assert cands[0].qrels == {"a": 3, "zz": 1} and cands[1].qrels == {} and cands[2].qrels == {"30": 0}
    assert cands[2].documents[0].docid == "30"
    assert cands[0].gold("a") == 3 and cands[0].gold("b") is None


def test_rankgpt_without_qrels_has_no_labels(tiny_rankgpt):
    cands = load_candidates(tiny_rankgpt, limit=2, depth=1)
    assert len(cands) == 2 and [len(c.documents) for c in cands] == [1, 1]
    assert all(c.qrels == {} for c in cands)


def test_rankgpt_entry_without_hits_is_named(tmp_path):
    p = write_json(tmp_path / "c.json", [{"query": "ok", "hits": [hit(1, "a")]}, {"query": "lonely", "hits": []}])
    with pytest.raises(InputError, match=r"c.json: entry 1: query 'lonely' has no hits, so its qid is unknown"):
        load_candidates(p)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"hits": [hit(1, "a")]}], r"entry 0: missing or empty \"query\" text"),
        ([{"query": "x", "hits": [hit(1, "a"), {"qid": 1, "docid": "b"}]}], r"entry 0, hit 1: missing content"),
        ([{"query": "x", "hits": [hit(1, "a"), hit(2, "b")]}], r"entry 0, hit 1: qid 2 differs from the entry's"),
        ([{"query": "x", "hits": [hit(1, "a"), hit(1, "a")]}], r"entry 0: docid 'a' appears twice"),
        ([{"query": "x", "hits": [hit(1, "a", score="high")]}], r"entry 0, hit 0: score 'high' is not a number"),
        ([{"query": "x", "hits": [hit(1, "a")]}, {"query": "y", "hits": [hit(1, "b")]}],
         r"entry 1: qid 1 already appeared in entry 0"),
        ([{"query": "x", "hits": [hit(1, "a")]}, "oops"], r"entry 1: expected an object, got str"),
        ([{"query": "x", "hits": [hit([1], "a")]}], r"entry 0, hit 0: \"qid\" must be a string or an integer, got list"),
        ([{"query": "x", "hits": [hit(True, "a")]}], r"entry 0, hit 0: \"qid\" must be a string or an integer, got bool"),
        ([{"query": "x", "hits": [hit(1, {"id": "a"})]}],
         r"entry 0, hit 0: \"docid\" must be a string or an integer, got dict"),
    ],
)
def test_rankgpt_malformed_entries(tmp_path, entries, message):
    with pytest.raises(InputError, match=r"c.json: " + message):
        load_candidates(write_json(tmp_path / "c.json", entries))


def test_rankgpt_broken_json_names_line(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('[\n{"query": "x",\n "hits": [}\n]\n')
    with pytest.raises(InputError, match=r"c.json:3: not valid JSON"):
        load_candidates(p)


def test_rankgpt_entries_one_per_line(tmp_path):
    p = write_lines(tmp_path / "c.jsonl", [{"query": "x", "hits": [hit(7, "a")]}, {"query": "y", "hits": []}])
    with pytest.raises(InputError, match=r"c.jsonl:2: query 'y' has no hits"):
        load_candidates(p)
    p = write_lines(tmp_path / "ok.jsonl", [{"query": "x", "hits": [hit(7, "a")]}])
    assert load_candidates(p)[0].query.qid == "7"


@pytest.mark.parametrize("indent", [None, 1], ids=["one line", "pretty"])
def test_a_json_file_with_one_rankgpt_object_is_refused(tmp_path, indent):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"query": "x", "hits": [hit(7, "a")]}, indent=indent) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"c.json: expected a JSON list of RankGPT entries, got a single entry") as e:
        load_candidates(p)
    assert "wrap the object in [ ]" in e.value.hint and ".jsonl" in e.value.hint


def test_the_refusal_is_for_one_rankgpt_object_in_a_json_file_only(tmp_path):
    entry = {"query": "x", "hits": [hit(7, "a")]}
    assert [c.query.qid for c in load_candidates(write_json(tmp_path / "list.json", [entry]))] == ["7"]
    assert [c.query.qid for c in load_candidates(write_lines(tmp_path / "one.jsonl", [entry]))] == ["7"]
    assert load_candidates(write_lines(tmp_path / "cand.json", [cand("1", ["a"])]))[0].query.qid == "1"


# --------------------------------------------------------------------------- Candidates JSONL


def cand(qid, docids, **kw) -> dict:
    c = Candidates(query=Query(qid=qid, text=f"query {qid}"), documents=[Document(docid=d, text=d) for d in docids], **kw)
    return c.model_dump()


def test_candidates_jsonl_roundtrip_and_qrels_override(tmp_path):
    p = write_lines(tmp_path / "c.jsonl", [cand("1", ["a", "b"], qrels={"a": 1}), cand("2", ["c"], scores=[0.5])])
    cands = load_candidates(p)
    assert [c.query.qid for c in cands] == ["1", "2"]
    assert cands[0].qrels == {"a": 1} and cands[1].scores == [0.5]
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n2\tc\t2\n")
    relabeled = load_candidates(p, qrels=qrels)
    assert relabeled[0].qrels == {} and relabeled[1].qrels == {"c": 2}


def test_candidates_jsonl_bad_line_named(tmp_path):
    p = write_lines(tmp_path / "file.jsonl", [cand("1", ["a"]), cand("2", ["b"]), {"query": {"qid": "3"}, "documents": []}])
    with pytest.raises(InputError, match=r"file.jsonl:3: not a valid Candidates record: query.text: Field required"):
        load_candidates(p)


def test_candidates_jsonl_typo_field_and_broken_json(tmp_path):
    bad = cand("1", ["a"])
    bad["qrel"] = {}
    with pytest.raises(InputError, match=r"file.jsonl:1: not a valid Candidates record: qrel: Extra inputs"):
        load_candidates(write_lines(tmp_path / "file.jsonl", [bad]))
    with pytest.raises(InputError, match=r"torn.jsonl:2: not valid JSON"):
        load_candidates(write_lines(tmp_path / "torn.jsonl", [cand("1", ["a"]), '{"query": ']))


def test_candidates_jsonl_duplicate_qid(tmp_path):
    p = write_lines(tmp_path / "c.jsonl", [cand("1", ["a"]), "", cand("1", ["b"])])
    with pytest.raises(InputError, match=r"c.jsonl:3: qid 1 already appeared on line 1"):
        load_candidates(p)


def test_other_jsonl_kinds_are_recognised(tmp_path):
    r2r = {"query": "x", "qid": 1, "unsorted_docs": ["a"], "re_rank_id": [1]}
    with pytest.raises(InputError, match=r"r2r.jsonl:1: this is an R2R listwise corpus") as e:
        load_candidates(write_lines(tmp_path / "r2r.jsonl", [r2r]))
    assert "r2r-synth import" in str(e.value)
    with pytest.raises(InputError, match=r"corpus.jsonl:1: this looks like a BEIR corpus"):
        load_candidates(write_lines(tmp_path / "corpus.jsonl", [{"_id": "1", "title": "", "text": "x"}]))


# --------------------------------------------------------------------------- sources and flags


def test_unknown_sources_list_accepted_forms(tmp_path):
    with pytest.raises(InputError, match=r"missing.json: no such file or directory") as e:
        load_candidates(tmp_path / "missing.json")
    assert "irds:<ir_datasets id>" in str(e.value) and "BEIR directory" in str(e.value)
    run = tmp_path / "run.trec"
    run.write_text("1 Q0 a 1 2.0 bm25\n")
    with pytest.raises(InputError, match=r"run.trec: not a JSON or JSONL candidates file .* TREC run"):
        load_candidates(run)
    with pytest.raises(InputError, match=r"empty.json: the file is empty"):
        load_candidates(write_lines(tmp_path / "empty.json", [""]))
    (tmp_path / "somedir").mkdir()
    (tmp_path / "somedir" / "notes.txt").write_text("hi")
    with pytest.raises(InputError, match=r"somedir: a directory that is neither a BEIR nor a TREC collection"):
        load_candidates(tmp_path / "somedir")


def test_limit_and_depth_must_be_positive(tiny_rankgpt):
    with pytest.raises(InputError, match="limit must be at least 1, got 0"):
        load_candidates(tiny_rankgpt, limit=0)
    with pytest.raises(InputError, match="depth must be at least 1, got -2"):
        load_candidates(tiny_rankgpt, depth=-2)


def test_qrels_of_another_collection_is_an_error(tiny_rankgpt, tmp_path):
    qrels = tmp_path / "other.txt"
    qrels.write_text("900 Q0 a 1\n901 Q0 b 0\n")
    with pytest.raises(InputError, match=r"other.txt: judges none of the 3 queries"):
        load_candidates(tiny_rankgpt, qrels=qrels)


def test_bad_qrels_line_is_named_through_load_candidates(tiny_rankgpt, tmp_path):
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("1 Q0 a 1\n1 Q0 b\n")
    with pytest.raises(InputError, match=r"qrels.txt:2: expected 4 columns"):
        load_candidates(tiny_rankgpt, qrels=qrels)


# --------------------------------------------------------------------------- run + corpus


def test_candidates_from_run_with_beir_corpus(tmp_path):
    corpus = write_lines(tmp_path / "corpus.jsonl", [{"_id": "a", "title": "T", "text": "alpha"}, {"_id": "b", "text": "beta"}])
    queries = write_lines(tmp_path / "queries.jsonl", [{"_id": "1", "text": "first"}])
    run = write_run(tmp_path / "run.trec", {"1": {"a": 1.0, "b": 2.0}})
    cands = candidates_from_run(run, corpus=corpus, queries=queries, qrels={"1": {"a": 1}}, depth=5)
    assert [d.docid for d in cands[0].documents] == ["b", "a"] and cands[0].scores == [2.0, 1.0]
    assert cands[0].documents[1].title == "T" and cands[0].qrels == {"a": 1}
    assert candidates_from_run(run, corpus=corpus, queries=queries, depth=1)[0].documents[0].docid == "b"


def test_candidates_from_run_missing_doc_names_run_line(tmp_path):
    corpus = write_lines(tmp_path / "corpus.jsonl", [{"_id": "a", "text": "alpha"}])
    run = tmp_path / "run.trec"
    run.write_text("1 Q0 a 1 2.0 t\n1 Q0 zz 2 1.0 t\n")
    with pytest.raises(InputError, match=r"run.trec:2: docid zz is not in the corpus"):
        candidates_from_run(run, corpus=corpus, queries={"1": "q"})
    with pytest.raises(InputError, match=r"run.trec:1: qid 1 is not among the queries"):
        candidates_from_run(run, corpus=corpus, queries={"2": "q"})
