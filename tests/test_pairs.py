"""Which documents get direct reasoning, which pairs get compared, and sharding."""

from __future__ import annotations

import pytest

from r2r_synth.errors import ConfigError
from r2r_synth.pairs import (
    check_pairs_possible,
    gold_grades,
    gold_pairs_summary,
    in_shard,
    parse_shard,
    select_documents,
    select_pairs,
    shard_of,
)
from r2r_synth.schemas import Candidates


def cands(n: int = 5, qrels: dict[str, int] | None = None, qid: str = "q1") -> Candidates:
    return Candidates(query={"qid": qid, "text": "query"},
                      documents=[{"docid": f"d{i}", "text": f"text {i}"} for i in range(1, n + 1)],
                      qrels=qrels or {})


def ids(pairs):
    return [(a.docid, b.docid) for a, b in pairs]


def test_depth_takes_the_top_k_with_ranks():
    assert [(r, d.docid) for r, d in select_documents(cands(5), depth=3)] == [(1, "d1"), (2, "d2"), (3, "d3")]
    assert len(select_documents(cands(2), depth=10)) == 2


def test_adjacent_pairs_within_depth():
    assert ids(select_pairs(cands(5), strategy="adjacent", depth=4)) == [("d1", "d2"), ("d2", "d3"), ("d3", "d4")]


def test_topk_nearest_ranks_first_and_capped():
    got = ids(select_pairs(cands(4), strategy="topk", depth=4))
    assert len(got) == 6
    assert got[:3] == [("d1", "d2"), ("d2", "d3"), ("d3", "d4")]
    assert got[3:5] == [("d1", "d3"), ("d2", "d4")]
    assert ids(select_pairs(cands(4), strategy="topk", depth=4, max_pairs=2)) == [("d1", "d2"), ("d2", "d3")]


def test_gold_pairs_differ_in_grade_largest_gap_first():
    c = cands(5, qrels={"d1": 0, "d2": 3, "d3": 1, "d5": 3})
    got = ids(select_pairs(c, strategy="gold", depth=5))
    # unjudged d4 is never paired; equal grades (d2, d5) are not a preference
    assert got[0] == ("d1", "d2") and ("d2", "d5") not in got
    assert all("d4" not in p for p in got)
    assert set(got) == {("d1", "d2"), ("d1", "d5"), ("d2", "d3"), ("d3", "d5"), ("d1", "d3")}


def test_none_and_too_few():
    assert select_pairs(cands(5), strategy="none", depth=5) == []
    assert select_pairs(cands(1), strategy="adjacent", depth=5) == []


def test_gold_needs_qrels():
    with pytest.raises(ConfigError, match="--pairs gold needs gold labels"):
        check_pairs_possible([cands(3)], "gold")
    check_pairs_possible([cands(3, qrels={"d1": 1})], "gold")


def test_positive_only_qrels_count_unjudged_candidates_as_zero():
    # BEIR-style qrels list only relevant documents: the unjudged top-K candidates are grade 0
    c = cands(4, qrels={"d3": 1})
    assert ids(select_pairs(c, strategy="gold", depth=4)) == [("d1", "d3"), ("d2", "d3"), ("d3", "d4")]
    assert gold_grades(c, c.documents) == [0, 0, 1, 0]
    summary = gold_pairs_summary([c, cands(4, qrels={"d1": 2, "d2": 0}, qid="q2")], depth=3)
    assert summary["queries_unjudged_as_0"] == 1 and summary["candidates_unjudged_as_0"] == 2
    assert "count as grade 0" in summary["rule"]


def test_gold_without_any_pair_is_refused_with_the_fix():
    # the only relevant document sits below the depth: every top-2 candidate is grade 0
    with pytest.raises(ConfigError, match=r"--pairs gold finds no pair to compare: no query of the 1 has two "
                                          r"candidates of different gold grades in its top 2") as e:
        check_pairs_possible([cands(4, qrels={"d4": 1})], "gold", depth=2)
    assert "raise --depth" in str(e.value)
    check_pairs_possible([cands(4, qrels={"d4": 1})], "gold", depth=4)


def test_shards_partition_the_queries_deterministically():
    qids = [f"q{i}" for i in range(200)]
    parts = [[q for q in qids if in_shard(q, (i, 4))] for i in range(4)]
    assert sorted(q for p in parts for q in p) == sorted(qids)
    assert all(len(p) > 20 for p in parts)  # a hash, not a first-N split
    assert shard_of("q7", 4) == shard_of("q7", 4)


def test_good_shard_specs():
    assert parse_shard(None) is None
    assert parse_shard("0/1") == (0, 1)
    assert parse_shard("3/4") == (3, 4)


@pytest.mark.parametrize(
    ("spec", "message", "hint"),
    [
        ("1/0", r"'1/0': N, the number of shards, must be at least 1, got 0", r"e\.g\. --shard 0/4, 1/4, 2/4 and 3/4"),
        ("2/2", r"'2/2': I, the shard to run, must be from 0 to N-1 = 1, got 2", r"--shard 0/2 \.\.\. --shard 1/2"),
        ("-1/3", r"'-1/3': I, the shard to run, must be from 0 to N-1 = 2, got -1", r"--shard 0/3 \.\.\. --shard 2/3"),
        ("1/1", r"'1/1': I, the shard to run, must be from 0 to N-1 = 0, got 1", r"the only shard is 0/1"),
        ("a/b", r"'a/b' is not of the form I/N \(two whole numbers\)", r"e\.g\. --shard 0/4"),
        ("1", r"'1' is not of the form I/N \(two whole numbers\)", r"e\.g\. --shard 0/4"),
        ("1/2/3", r"'1/2/3' is not of the form I/N \(two whole numbers\)", r"e\.g\. --shard 0/4"),
    ],
)
def test_bad_shard_specs_say_what_and_the_fix(spec, message, hint):
    with pytest.raises(ConfigError, match=rf"--shard {message}\n  fix: .*{hint}"):
        parse_shard(spec)
