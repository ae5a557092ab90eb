"""generate on BEIR inputs against the real loopback server through LiteLLM: `--pairs gold` on SciFact's
positive-only qrels writes comparisons and says unjudged candidates counted as grade 0; the run's
config.json names the split and the queries and qrels files it read."""

from __future__ import annotations

import json
import re

import pytest
from conftest import shared_data
from test_generate import cfg, cli, lines, manifest, run

from r2r_synth.pairs import PairStrategy


def test_pairs_gold_on_scifact_writes_comparisons(openai_server, tmp_path):
    root = shared_data("scifact")
    out = tmp_path / "run"
    res = run(cfg(openai_server, out, input=str(root), limit=2, depth=5, pairs=PairStrategy.gold.value,
                  direct=False))
    comps = lines(out / "comparison.jsonl")
    assert res.manifest.status == "complete" and res.manifest.counts["comparison"].records == len(comps) > 0
    # each pair holds one relevant document of the qrels and one unjudged candidate counted as 0
    for c in comps:
        assert {c["gold_a"], c["gold_b"]} == {0, 1}, c
    gold = manifest(out).extra["gold_pairs"]
    # the queries asked about (a query whose relevant documents are all below --depth has no gold pair)
    assert gold["queries_unjudged_as_0"] == len({c["query"]["qid"] for c in comps}) >= 1
    assert gold["candidates_unjudged_as_0"] >= 4
    config = json.loads((out / "config.json").read_text())
    assert config["split"] is None  # not given: the directory's only split, train, was read
    assert config["read"] == {"split": "train", "queries": [str(root / "queries.train.jsonl")],
                              "qrels": [str(root / "qrels.train.tsv")]}


def test_cli_pairs_gold_prints_the_grade_0_rule(openai_server, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    code, _, err = cli(monkeypatch, capsys, "generate", "-i", str(shared_data("scifact")), "-o", str(out),
                       "-t", "openai/loopback", "--api-base", openai_server.url, "--limit", "2", "--depth", "5",
                       "--pairs", "gold", "--no-direct")
    assert code == 0, err
    flat = " ".join(err.split())
    assert re.search(r"--pairs gold: \d+ unjudged candidates of 1 query with positive-only qrels counted as grade 0",
                     flat), flat


def test_cli_pairs_gold_without_a_pair_exits_2_with_the_fix(openai_server, tmp_path, monkeypatch, capsys):
    # SciFact's first query has its one relevant abstract below BM25's top 4: no gold pair to ask
    out = tmp_path / "run"
    code, _, err = cli(monkeypatch, capsys, "generate", "-i", str(shared_data("scifact")), "-o", str(out),
                       "-t", "openai/loopback", "--api-base", openai_server.url, "--limit", "1", "--depth", "4",
                       "--pairs", "gold", "--no-direct")
    flat = " ".join(err.split())
    assert code == 2 and "--pairs gold finds no pair to compare" in flat and "fix: raise --depth" in flat
    assert not out.exists() and openai_server.requests == []


def test_a_rerun_on_another_split_is_refused(openai_server, tmp_path):
    from test_evaluate_first_stage import DOCS, QUERIES
    from test_io_beir import jsonl

    from r2r_synth.errors import ConfigError

    root = tmp_path / "beir"
    jsonl(root / "corpus.jsonl", [{"_id": d, "title": t, "text": x} for d, t, x in DOCS])
    jsonl(root / "queries.jsonl", [{"_id": q, "text": t} for q, t in QUERIES])
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nt1\td1\t2\n")
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nr1\td3\t1\n")
    out = tmp_path / "run"
    run(cfg(openai_server, out, input=str(root), split="train", depth=2, pairs="none"))
    asked = len(openai_server.requests)
    with pytest.raises(ConfigError, match=r"holds a run of split 'train'; this command reads split 'test'"):
        run(cfg(openai_server, out, input=str(root), depth=2, pairs="none"))
    assert len(openai_server.requests) == asked
    run(cfg(openai_server, out, input=str(root), split="train", depth=2, pairs="none"))  # resumes
