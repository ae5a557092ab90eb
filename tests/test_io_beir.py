"""BEIR and TREC collection directories through load_candidates, with the BM25 first stage."""

from __future__ import annotations

import json
from pathlib import Path

import ir_measures
import pytest
from conftest import shared_data
from ir_measures import nDCG

from r2r_synth.errors import InputError
from r2r_synth.io.beir import read_corpus, read_queries
from r2r_synth.io.candidates import load_candidates
from r2r_synth.io.first_stage import BM25Index, bm25_run
from r2r_synth.io.trec import read_qrels
from r2r_synth.schemas import Document

DOCS = [
    ("d1", "Cats", "Cats are small domesticated felines that purr."),
    ("d2", "Dogs", "Dogs are loyal domesticated canines that bark."),
    ("d3", "Fleas", "A flea lives on cats and dogs and its life cycle lasts weeks."),
    ("d4", "Stocks", "The stock market fell sharply on Monday."),
]
QUERIES = [("q1", "how long is the life cycle of a flea"), ("q2", "why do cats purr"), ("q3", "zyxwv qqq")]


def jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def beir_dir(tmp_path) -> Path:
    root = tmp_path / "beir"
    jsonl(root / "corpus.jsonl", [{"_id": d, "title": t, "text": x} for d, t, x in DOCS])
    jsonl(root / "queries.jsonl", [{"_id": q, "text": t} for q, t in QUERIES])
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td3\t2\n")
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td1\t1\n")
    return root


@pytest.fixture
def trec_dir(tmp_path) -> Path:
    root = tmp_path / "trec"
    root.mkdir()
    (root / "docs.trec").write_text(
        "".join(f"<DOC>\n<DOCNO>{d}</DOCNO>\n{t}. {x}\n</DOC>\n" for d, t, x in DOCS), encoding="utf-8"
    )
    (root / "topics.trec").write_text(
        "".join(f"<top>\n<num>{q}</num><title>\n{t}\n</title>\n</top>\n" for q, t in QUERIES[:2]), encoding="utf-8"
    )
    (root / "qrels").write_text("q1 0 d3 1\nq2 0 d1 1\n")
    (root / "README.md").write_text("A tiny collection.\n")
    return root


# --------------------------------------------------------------------------- BM25


def test_bm25_ranks_matching_documents_and_drops_non_matching():
    docs = {d: Document(docid=d, title=t, text=x) for d, t, x in DOCS}
    index = BM25Index.build(docs)
    flea, purr, nothing = index.search([q for _, q in QUERIES], k=10)
    assert flea[0][0] == "d3" and all(s > 0 for _, s in flea)
    assert "d4" not in dict(flea)  # shares no term with the query: not a candidate
    assert purr[0][0] == "d1"
    assert nothing == []  # no query term is in the corpus
    # Stemming: "feline" matches "felines", and stopwords alone match nothing.
    assert [[d for d, _ in hits] for hits in index.search(["feline", "the and of"], k=2)] == [["d1"], []]
    assert list(bm25_run(docs, {"q": "dogs bark"}, k=1)) == ["q"]


def test_bm25_k_is_validated_and_capped():
    index = BM25Index.build([Document(docid="a", text="alpha beta"), Document(docid="b", text="beta gamma")])
    assert [d for d, _ in index.search(["beta"], k=50)[0]] in (["a", "b"], ["b", "a"])
    with pytest.raises(InputError, match="k must be at least 1, got 0"):
        index.search(["beta"], k=0)
    with pytest.raises(InputError, match="cannot build a BM25 index over an empty corpus"):
        BM25Index.build([])


def test_bm25_score_all_is_the_search_scores_as_a_matrix():
    docs = [Document(docid=d, title=t, text=x) for d, t, x in DOCS]
    index = BM25Index.build(docs)
    queries = [q for _, q in QUERIES]
    matrix = index.score_all(queries)
    assert matrix.shape == (len(queries), len(docs))
    for row, hits in zip(matrix, index.search(queries, k=len(docs))):
        expected = dict(hits)
        for j, d in enumerate(docs):
            assert row[j] == pytest.approx(expected.get(d.docid, 0.0))  # 0 where no term is shared
    assert not matrix[2].any()  # the query with no corpus term


# --------------------------------------------------------------------------- BEIR directories


def test_beir_dir_reads_one_split_with_its_qrels(beir_dir, tmp_path, caplog):
    # test by default (the train split's q2 is not scored beside it); see test_io_splits.py
    [c] = load_candidates(beir_dir, depth=2)
    assert c.query.qid == "q1" and c.documents[0].docid == "d3" and c.documents[0].title == "Fleas"
    assert c.qrels == {"d3": 2}
    [c] = load_candidates(beir_dir, depth=2, split="train")
    assert c.query.qid == "q2" and c.qrels == {"d1": 1} and c.scores[0] > c.scores[1] > 0
    # With qrels of its own, every query is kept; q3 matches nothing: kept (an evaluation must count it).
    every = tmp_path / "all.txt"
    every.write_text("q1 0 d3 2\nq2 0 d1 1\nq3 0 d4 1\n")
    cands = load_candidates(beir_dir, depth=2, qrels=every)
    assert [len(c.documents) for c in cands] == [1, 2, 0] and cands[2].documents == []
    assert "1 of 3 queries have no candidates (qids q3)" in caplog.text


def test_beir_dir_limit_and_explicit_qrels(beir_dir, tmp_path):
    qrels = tmp_path / "mine.txt"
    qrels.write_text("q1 Q0 d1 3\n")
    cands = load_candidates(beir_dir, qrels=qrels, limit=1)
    assert len(cands) == 1 and cands[0].qrels == {"d1": 3}


def test_beir_split_files(tmp_path):
    root = tmp_path / "split"
    jsonl(root / "corpus.jsonl", [{"_id": d, "title": t, "text": x} for d, t, x in DOCS])
    jsonl(root / "queries.train.jsonl", [{"_id": "q2", "text": "why do cats purr"}])
    (root / "qrels.train.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td1\t1\n")
    [c] = load_candidates(root)
    assert c.query.qid == "q2" and c.qrels == {"d1": 1} and c.documents[0].docid == "d1"


def test_beir_malformed_lines_are_named(beir_dir):
    jsonl(beir_dir / "corpus.jsonl", [{"_id": "d1", "text": "a"}, {"_id": "d2", "text": "b"}, {"_id": "d3"}])
    with pytest.raises(InputError, match=r"corpus.jsonl:3: missing \"text\""):
        load_candidates(beir_dir)
    jsonl(beir_dir / "corpus.jsonl", [{"_id": "d1", "text": "a"}, {"_id": "d1", "text": "b"}])
    with pytest.raises(InputError, match=r"corpus.jsonl:2: document d1 appears twice"):
        load_candidates(beir_dir)
    jsonl(beir_dir / "corpus.jsonl", [{"_id": 7, "text": "numeric ids are fine"}])
    jsonl(beir_dir / "queries.jsonl", [{"_id": "q1", "text": "ids"}, {"_id": "q2", "text": ["not", "text"]}])
    with pytest.raises(InputError, match=r"queries.jsonl:2: \"text\" must be a string, got list"):
        load_candidates(beir_dir)


def test_beir_bad_qrels_line_is_named(beir_dir):
    (beir_dir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td3\t2\nq1\td2\n")
    with pytest.raises(InputError, match=r"test.tsv:3: expected 3 columns like the first line, got 2"):
        load_candidates(beir_dir)


def test_beir_without_queries(tmp_path):
    jsonl(tmp_path / "c" / "corpus.jsonl", [{"_id": "d", "text": "x"}])
    with pytest.raises(InputError, match=r"a BEIR directory without queries.jsonl"):
        load_candidates(tmp_path / "c")


def test_read_corpus_and_queries_readers(beir_dir):
    docs = read_corpus(beir_dir / "corpus.jsonl")
    assert list(docs) == ["d1", "d2", "d3", "d4"] and docs["d1"].full_text().startswith("Cats. Cats are")
    assert read_queries(beir_dir / "queries.jsonl")["q2"] == "why do cats purr"


# --------------------------------------------------------------------------- TREC collection directories


def test_trec_collection_dir(trec_dir):
    cands = load_candidates(trec_dir, depth=3)
    assert [c.query.qid for c in cands] == ["q1", "q2"]
    assert cands[0].documents[0].docid == "d3" and cands[0].qrels == {"d3": 1}
    assert cands[1].documents[0].docid == "d1"


def test_trec_collection_dir_missing_pieces(trec_dir):
    (trec_dir / "qrels").unlink()
    with pytest.raises(InputError, match=r"a TREC collection directory needs documents, topics and qrels; found no qrels"):
        load_candidates(trec_dir)


def test_trec_collection_bad_topic_is_named(trec_dir):
    (trec_dir / "topics.trec").write_text("<top>\n<num>q1</num><title>flea</title>\n</top>\n<top>\n<title>x</title>\n</top>\n")
    with pytest.raises(InputError, match=r"topics.trec:4: topic without <num> or <title>"):
        load_candidates(trec_dir)


# --------------------------------------------------------------------------- real collections


def test_vaswani_bm25_is_a_sane_first_stage():
    root = shared_data("vaswani")
    cands = load_candidates(root)
    assert len(cands) == 93 and all(len(c.documents) == 100 for c in cands)
    run = {c.query.qid: dict(zip((d.docid for d in c.documents), c.scores)) for c in cands}
    ndcg = ir_measures.calc_aggregate([nDCG @ 10], read_qrels(root / "qrels"), run)[nDCG @ 10]
    assert ndcg > 0.40, ndcg  # measured 0.4449 (Terrier's BM25 on Vaswani is in the same range)


def test_scifact_bm25_all_queries():
    root = shared_data("scifact")
    cands = load_candidates(root, depth=100)
    assert len(cands) == 809
    assert [c.query.qid for c in cands[:3]] == ["0", "2", "4"]
    assert all(c.qrels for c in cands)
    run = {c.query.qid: dict(zip((d.docid for d in c.documents), c.scores)) for c in cands}
    ndcg = ir_measures.calc_aggregate([nDCG @ 10], read_qrels(root / "qrels.train.tsv"), run)[nDCG @ 10]
    assert ndcg > 0.60, ndcg  # measured 0.6965 (BEIR's published BM25 on SciFact test: 0.665)



def test_foreign_qrels_with_a_limit_warn_rather_than_fail(beir_dir, tmp_path, caplog):
    # The first slice of a BEIR collection may hold only queries of another split: not an error.
    qrels = tmp_path / "test.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq3\td4\t1\n")
    [c] = load_candidates(beir_dir, qrels=qrels, limit=1)
    assert c.qrels == {} and "test.tsv: judges none of the 1 query " in caplog.text
    assert load_candidates(beir_dir, qrels=qrels)[2].qrels == {"d4": 1}
    # Over the whole input, qrels that judge nothing are for another collection: an error.
    foreign = tmp_path / "foreign.tsv"
    foreign.write_text("query-id\tcorpus-id\tscore\nq9\td4\t1\n")
    with pytest.raises(InputError, match=r"foreign.tsv: judges none of the 3 queries"):
        load_candidates(beir_dir, qrels=foreign)


def test_gzipped_beir_corpus(beir_dir):
    import gzip

    raw = (beir_dir / "corpus.jsonl").read_bytes()
    (beir_dir / "corpus.jsonl").unlink()
    with gzip.open(beir_dir / "corpus.jsonl.gz", "wb") as fh:
        fh.write(raw)
    cands = load_candidates(beir_dir, limit=1)
    assert cands[0].documents[0].docid == "d3"
