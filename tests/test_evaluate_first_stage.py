"""evaluate on a BEIR directory: one split, named in evaluation.json and on stderr; `bm25` keeps the
first stage's real BM25 scores in its run file, and `fuse:combsum:` fuses those scores. Real files,
the real BM25 first stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_generate import cli
from test_io_beir import jsonl

from r2r_synth.config import EvaluateConfig
from r2r_synth.evaluate import evaluate
from r2r_synth.io.candidates import load_candidates

# Documents that share words with the queries in different amounts: BM25 scores unevenly spaced, so a
# fusion of scores and a fusion of ranks come apart.
DOCS = [
    ("d1", "flea life cycle", "The flea life cycle has four stages: egg, larva, pupa and adult flea."),
    ("d2", "flea", "A flea is a small jumping insect."),
    ("d3", "pets", "Cats and dogs carry a flea now and then, and a flea bite itches."),
    ("d4", "cycle", "A life cycle is the series of changes in the life of an organism, larva to adult."),
    ("d5", "cats", "Cats purr when content; cats also purr when stressed."),
    ("d6", "purring", "Why cats purr: the larynx muscles twitch."),
    ("d7", "markets", "The stock market fell on Monday."),
]
QUERIES = [("t1", "flea life cycle stages"), ("t2", "why do cats purr"),
           ("r1", "flea bite on cats"), ("r2", "life cycle of an organism")]


@pytest.fixture
def beir(tmp_path) -> Path:
    root = tmp_path / "beir"
    jsonl(root / "corpus.jsonl", [{"_id": d, "title": t, "text": x} for d, t, x in DOCS])
    jsonl(root / "queries.jsonl", [{"_id": q, "text": t} for q, t in QUERIES])
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nt1\td1\t2\nt2\td6\t1\n")
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nr1\td3\t1\nr2\td4\t1\n")
    return root


def trec_scores(path: Path) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        q, _, d, _, score, _ = line.split()
        out.setdefault(q, {})[d] = float(score)
    return out


def test_without_split_the_test_split_is_scored_and_recorded(beir, tmp_path):
    ev = evaluate(EvaluateConfig(input=str(beir), systems=["bm25"], out=tmp_path / "ev"))
    saved = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert saved["split"] == "test" and saved["qrels"] == str(beir / "qrels" / "test.tsv")
    assert saved["queries_files"] == [str(beir / "queries.jsonl")]
    assert saved["queries"] == saved["judged_queries"] == 2
    assert set(saved["per_query"]["bm25"]["nDCG@10"]) == {"t1", "t2"} == set(ev.report["per_query"]["bm25"]["RR@10"])


def test_split_train_scores_only_train_queries(beir, tmp_path):
    evaluate(EvaluateConfig(input=str(beir), split="train", systems=["bm25"], out=tmp_path / "ev"))
    saved = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert saved["split"] == "train" and saved["qrels"] == str(beir / "qrels" / "train.tsv")
    assert set(saved["per_query"]["bm25"]["nDCG@10"]) == {"r1", "r2"}
    assert saved["config"]["split"] == "train"


def test_cli_says_which_split_it_scored(beir, tmp_path, monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, "evaluate", "-i", str(beir), "-s", "bm25", "-o", str(tmp_path / "ev"))
    flat = " ".join(err.split())
    assert code == 0, err
    assert "evaluate: scored split test, the default: --split chooses another" in flat
    assert str(beir / "qrels" / "test.tsv") in flat
    code, _, err = cli(monkeypatch, capsys, "evaluate", "-i", str(beir), "-s", "bm25", "-o", str(tmp_path / "ev2"),
                       "--split", "nope")
    assert code == 2 and "no qrels for split 'nope' (it holds test, train)" in " ".join(err.split())
    assert not (tmp_path / "ev2").exists()


def test_run_bm25_holds_the_first_stage_scores(beir, tmp_path):
    # depth 1: the candidates below the reranked top keep their BM25 scores too
    evaluate(EvaluateConfig(input=str(beir), split="train", systems=["bm25"], out=tmp_path / "ev", depth=1))
    run = trec_scores(tmp_path / "ev" / "run.bm25.trec")
    cands = load_candidates(beir, split="train", depth=100)
    assert sum(len(c.documents) for c in cands) >= 5
    for c in cands:
        assert list(run[c.query.qid]) == [d.docid for d in c.documents]
        for d, s in zip(c.documents, c.scores):
            assert run[c.query.qid][d.docid] == pytest.approx(s, abs=2e-6)
    assert any(s != int(s) for c in cands for s in c.scores)  # real scores, not 0, -1, -2, ...


def test_combsum_fuses_the_bm25_scores(beir, tmp_path):
    cands = {c.query.qid: c for c in load_candidates(beir, split="test", depth=100)}
    other = {q: {d.docid: float(i) for i, d in enumerate(c.documents)} for q, c in cands.items()}  # reversed
    run_file = tmp_path / "other.trec"
    run_file.write_text("".join(f"{q} Q0 {d} 1 {s} x\n" for q, docs in other.items() for d, s in docs.items()))
    evaluate(EvaluateConfig(input=str(beir), systems=["bm25", f"o=run:{run_file}", "f=fuse:combsum:bm25*0.25+o*0.75"],
                            out=tmp_path / "ev", depth=100))
    fused = trec_scores(tmp_path / "ev" / "run.f.trec")

    def minmax(values: dict[str, float]) -> dict[str, float]:
        lo, hi = min(values.values()), max(values.values())
        return {d: (v - lo) / (hi - lo) if hi > lo else 0.0 for d, v in values.items()}

    checked = 0
    for q, c in cands.items():
        bm25 = minmax(dict(zip((d.docid for d in c.documents), c.scores)))
        ranks = minmax({d.docid: -float(i) for i, d in enumerate(c.documents)})
        mine = minmax(other[q])
        want = {d: 0.25 * bm25[d] + 0.75 * mine[d] for d in bm25}
        assert list(fused[q]) == sorted(want, key=lambda d: -want[d])
        for d, v in want.items():
            assert fused[q][d] == pytest.approx(v, abs=1e-5)
            checked += 1
        # with BM25's ranks in place of its scores the fusion would differ
        assert any(abs(bm25[d] - ranks[d]) > 1e-3 for d in bm25) or len(bm25) < 3
    assert checked >= 4
