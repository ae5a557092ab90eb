"""BEIR splits are read one at a time: `test` by default where a directory has it, else its only split,
several without --split refused; the queries and qrels files read are what `describe_input` says."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import shared_data
from test_io_beir import DOCS, QUERIES, jsonl

from r2r_synth.errors import InputError
from r2r_synth.io.candidates import describe_input, load_candidates


@pytest.fixture
def two_splits(tmp_path) -> Path:
    """One queries.jsonl for every split (as BEIR ships it), qrels/test.tsv and qrels/train.tsv."""
    root = tmp_path / "beir"
    jsonl(root / "corpus.jsonl", [{"_id": d, "title": t, "text": x} for d, t, x in DOCS])
    jsonl(root / "queries.jsonl", [{"_id": q, "text": t} for q, t in QUERIES])
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td3\t2\n")
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td1\t1\nq3\td4\t1\n")
    return root


def test_without_split_the_test_split_is_read_and_named(two_splits, caplog):
    with caplog.at_level(logging.WARNING):
        cands = load_candidates(two_splits)
    assert [c.query.qid for c in cands] == ["q1"] and cands[0].qrels == {"d3": 2}
    assert "no --split given: reading split 'test'" in caplog.text
    assert str(two_splits / "qrels" / "test.tsv") in caplog.text and "of test, train" in caplog.text
    read = describe_input(two_splits)
    assert read == {"split": "test", "queries": [str(two_splits / "queries.jsonl")],
                    "qrels": [str(two_splits / "qrels" / "test.tsv")]}


def test_split_train_reads_only_the_train_queries(two_splits):
    cands = load_candidates(two_splits, split="train")
    assert [c.query.qid for c in cands] == ["q2", "q3"]
    assert cands[0].qrels == {"d1": 1} and cands[1].qrels == {"d4": 1}
    assert describe_input(two_splits, split="train")["qrels"] == [str(two_splits / "qrels" / "train.tsv")]


def test_an_unknown_split_is_refused_naming_the_splits(two_splits):
    with pytest.raises(InputError, match=r"beir: no qrels for split 'dev' \(it holds test, train\)"):
        load_candidates(two_splits, split="dev")


def test_several_splits_and_none_test_need_split(two_splits):
    (two_splits / "qrels" / "test.tsv").rename(two_splits / "qrels" / "dev.tsv")
    with pytest.raises(InputError, match=r"holds the splits dev, train and no --split chose one") as e:
        load_candidates(two_splits)
    assert "pass --split dev" in str(e.value)


def test_the_only_split_is_read_without_split(tmp_path):
    root = tmp_path / "one"
    jsonl(root / "corpus.jsonl", [{"_id": d, "title": t, "text": x} for d, t, x in DOCS])
    jsonl(root / "queries.train.jsonl", [{"_id": "q2", "text": "why do cats purr"}])
    (root / "qrels.train.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td1\t1\n")
    [c] = load_candidates(root)
    assert c.query.qid == "q2"
    assert describe_input(root) == {"split": "train", "queries": [str(root / "queries.train.jsonl")],
                                    "qrels": [str(root / "qrels.train.tsv")]}


def test_qrels_given_keep_every_query_and_name_that_file(two_splits, tmp_path):
    mine = tmp_path / "mine.txt"
    mine.write_text("q3 0 d4 2\n")
    cands = load_candidates(two_splits, qrels=mine)
    assert [c.query.qid for c in cands] == ["q1", "q2", "q3"] and cands[2].qrels == {"d4": 2}
    assert describe_input(two_splits, qrels=mine) == {"split": None, "queries": [str(two_splits / "queries.jsonl")],
                                                      "qrels": [str(mine)]}


def test_split_on_a_file_is_refused(tmp_path):
    f = jsonl(tmp_path / "c.jsonl", [{"query": {"qid": "1", "text": "q"}, "documents": []}])
    with pytest.raises(InputError, match=r"--split test: .*c.jsonl is not a BEIR directory or a BRIGHT copy"):
        load_candidates(f, split="test")


def test_scifact_train_is_its_only_split():
    root = shared_data("scifact")
    read = describe_input(root)
    assert read["split"] == "train" and read["qrels"] == [str(root / "qrels.train.tsv")]
