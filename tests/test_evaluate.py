"""evaluate / rerank: real files in, ir-measures out; a student trained in the test on a tiny BERT."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from r2r_synth.config import EvaluateConfig, TrainConfig
from r2r_synth.errors import ConfigError, InputError
from r2r_synth.evaluate import evaluate, read_documents, rerank_documents

REPO = Path(__file__).resolve().parents[1]
R2R = str(REPO / ".venv" / "bin" / "r2r-synth")

QUERIES = {"1": "how do solar panels work", "2": "best way to brew coffee"}


@pytest.fixture
def rankgpt(tmp_path) -> tuple[Path, Path]:
    entries = []
    qrels = []
    for qid, q in QUERIES.items():
        hits = [{"qid": int(qid), "docid": f"{qid}d{i}", "content": f"{q} document number {i}", "score": 10.0 - i}
                for i in range(4)]
        entries.append({"query": q, "hits": hits})
        qrels += [f"{qid} 0 {qid}d3 3", f"{qid} 0 {qid}d0 0", f"{qid} 0 {qid}d1 1"]
    (tmp_path / "cands.json").write_text(json.dumps(entries))
    (tmp_path / "qrels.txt").write_text("\n".join(qrels) + "\n")
    return tmp_path / "cands.json", tmp_path / "qrels.txt"


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory, tiny_bert) -> Path:
    pytest.importorskip("sentence_transformers")
    from r2r_synth.student.train import train

    tmp = tmp_path_factory.mktemp("student")
    rows = [{"query": f"query {i}", "qid": str(i), "unsorted_docs": [f"good {i}", f"bad {i}", f"meh {i}"],
             "re_rank_id": [1, 3, 2]} for i in range(4)]
    (tmp / "r2r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    train(TrainConfig(student="cross-encoder", corpus=[tmp / "r2r.jsonl"], out=tmp / "ce", base=str(tiny_bert),
                      max_steps=2, batch_size=2,
                      negatives=1, max_length=64, device="cpu"))
    return tmp / "ce"


def test_bm25_order_scored_with_ir_measures(rankgpt, tmp_path):
    cands, qrels = rankgpt
    ev = evaluate(EvaluateConfig(input=str(cands), qrels=qrels, systems=["bm25"], out=tmp_path / "ev"))
    row = ev.report["systems"]["bm25"]
    # The relevant d3 sits at rank 4, d1 (grade 1) at rank 2: RR@10 = 1/2 for both queries.
    assert row["RR@10"] == pytest.approx(0.5)
    assert 0 < row["nDCG@10"] < 1 and "R@100" not in row  # every system keeps every candidate: R@100 is off
    saved = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert saved["systems"]["bm25"]["nDCG@10"] == pytest.approx(row["nDCG@10"], abs=1e-4)
    assert saved["judged_queries"] == 2 and saved["measures"] == ["nDCG@10", "RR@10"]
    assert (tmp_path / "ev" / "evaluation.png").stat().st_size > 1000
    run = (tmp_path / "ev" / "run.bm25.trec").read_text().splitlines()
    assert run[0].split()[:4] == ["1", "Q0", "1d0", "1"]


def test_student_and_bm25_side_by_side(rankgpt, tmp_path, student_dir):
    cands, qrels = rankgpt
    ev = evaluate(EvaluateConfig(input=str(cands), qrels=qrels, systems=["bm25", f"ce={student_dir}"],
                                 out=tmp_path / "ev", measures=["nDCG@10", "P@1"]))
    rows = ev.report["systems"]
    assert set(rows) == {"bm25", "ce"} and rows["ce"]["spec"] == str(student_dir)
    assert rows["ce"]["pairs"] == 8 and rows["ce"]["pairs_per_s"] > 0 and rows["ce"]["median_query_s"] > 0
    assert set(rows["ce"]) >= {"nDCG@10", "P@1"}


def test_int8_student_system_beside_the_float_one(rankgpt, tmp_path, student_dir):
    cands, qrels = rankgpt
    ev = evaluate(EvaluateConfig(input=str(cands), qrels=qrels, systems=[f"ce={student_dir}",
                                 f"q8=student-int8:{student_dir}"], out=tmp_path / "ev", device="cpu"))
    rows = ev.report["systems"]
    assert rows["q8"]["spec"] == f"student-int8:{student_dir}" and rows["q8"]["pairs"] == rows["ce"]["pairs"] == 8
    runs = {n: (tmp_path / "ev" / f"run.{n}.trec").read_text().splitlines() for n in ("ce", "q8")}
    f32 = {tuple(line.split()[:3:2]): float(line.split()[4]) for line in runs["ce"]}
    q8 = {tuple(line.split()[:3:2]): float(line.split()[4]) for line in runs["q8"]}
    assert f32.keys() == q8.keys() and f32 != q8  # really quantized: the scores moved
    assert max(abs(f32[k] - q8[k]) for k in f32) < 0.5  # ...but only a little


def test_bi_encoder_system(rankgpt, tmp_path, tiny_bert):
    cands, qrels = rankgpt
    ev = evaluate(EvaluateConfig(input=str(cands), qrels=qrels, systems=[f"bi-encoder:{tiny_bert}"],
                                 out=tmp_path / "ev"))
    assert 0 <= ev.report["systems"][f"bi-encoder:{tiny_bert}"]["nDCG@10"] <= 1


def test_unknown_system_says_what_is_accepted(rankgpt, tmp_path):
    cands, qrels = rankgpt
    with pytest.raises(ConfigError, match="is not a known system and not a model directory"):
        evaluate(EvaluateConfig(input=str(cands), qrels=qrels, systems=["colbert"], out=tmp_path / "ev"))


def test_duplicate_names_are_refused(rankgpt, tmp_path):
    cands, qrels = rankgpt
    with pytest.raises(ConfigError, match="two systems share a name"):
        evaluate(EvaluateConfig(input=str(cands), qrels=qrels, systems=["bm25", "bm25"], out=tmp_path / "ev"))


def test_no_qrels_means_nothing_to_measure(rankgpt, tmp_path):
    cands, _ = rankgpt
    with pytest.raises(InputError, match="has gold labels"):
        evaluate(EvaluateConfig(input=str(cands), systems=["bm25"], out=tmp_path / "ev"))


def test_teacher_needs_a_model(rankgpt, tmp_path):
    cands, qrels = rankgpt
    with pytest.raises(ConfigError, match="names no model"):
        evaluate(EvaluateConfig(input=str(cands), qrels=qrels, systems=["teacher:"], out=tmp_path / "ev"))


def test_dl19_bm25_reproduces_the_published_figure(dl19, tmp_path):
    ev = evaluate(EvaluateConfig(input=str(dl19 / "bm25_top100.json"), qrels=dl19 / "qrels.txt", systems=["bm25"],
                                 out=tmp_path / "ev"))
    assert ev.report["systems"]["bm25"]["nDCG@10"] == pytest.approx(0.5058, abs=1e-4)
    assert ev.report["judged_queries"] == 43


def test_read_documents_jsonl_and_plain(tmp_path):
    f = tmp_path / "docs.jsonl"
    f.write_text('{"docid": "a", "title": "Otters", "text": "They swim."}\n\n{"text": "no id"}\n')
    assert read_documents(f) == [("a", "Otters. They swim."), ("3", "no id")]
    assert read_documents("<stdin>", "first line\nsecond line\n") == [("1", "first line"), ("2", "second line")]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"docid": "a"}\n', r"<stdin>:1: a JSON document needs a non-empty \"text\" field"),
        ('{"text": "x", "docid": "a"}\n{"text": "y", "docid": "a"}\n', r"<stdin>:2: docid 'a' appears twice"),
        ("{not json\n", r"<stdin>:1: not valid JSON"),
        ("\n\n", "no documents"),
    ],
)
def test_read_documents_bad_input(content, match):
    with pytest.raises(InputError, match=match):
        read_documents("<stdin>", content)


def test_rerank_documents_ranks_everything(student_dir):
    docs = [("a", "good 1"), ("b", "bad 1"), ("c", "something else")]
    ranked = rerank_documents(model=str(student_dir), query="query 1", documents=docs)
    assert sorted(r.docid for r in ranked) == ["a", "b", "c"]
    assert [r.rank for r in ranked] == [1, 2, 3] and ranked[0].score >= ranked[-1].score
    # a cross-encoder student explains with evidence: the sentence of each document it scores highest
    explained = rerank_documents(model=str(student_dir), query="query 1", documents=docs, explain=True)
    assert [r.evidence for r in explained] == [r.text for r in explained]  # one-sentence documents
    assert all(r.explanation is None for r in explained) and all(r.evidence is None for r in ranked)


def test_cli_rerank_json_from_stdin(student_dir):
    proc = subprocess.run([R2R, "rerank", "--model", str(student_dir), "--query", "query 1", "--docs", "-",
                           "--json", "--top", "2"], input="good 1\nbad 1\nmeh 1\n", check=False, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out) == 2 and {"rank", "docid", "score", "text"} <= set(out[0])


def test_cli_rerank_int8(student_dir):
    proc = subprocess.run([R2R, "rerank", "--model", str(student_dir), "--query", "query 1", "--docs", "-",
                           "--json", "--int8", "--device", "cpu"], input="good 1\nbad 1\n", check=False,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["text"] for r in json.loads(proc.stdout)) == ["bad 1", "good 1"]


def test_cli_bad_system_exits_2(rankgpt, tmp_path):
    cands, qrels = rankgpt
    proc = subprocess.run([R2R, "evaluate", "-i", str(cands), "--qrels", str(qrels), "--system", "nope",
                           "--out", str(tmp_path / "ev")], check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "not a known system" in proc.stderr


def test_teacher_system_through_litellm(rankgpt, tmp_path, openai_server):
    cands, qrels = rankgpt
    ev = evaluate(EvaluateConfig(input=str(cands), qrels=qrels, systems=["teacher:openai/loopback"],
                                 api_base=openai_server.url, api_key="sk-test-key-123456", programs_dir=tmp_path,
                                 out=tmp_path / "ev"))
    row = ev.report["systems"]["teacher:openai/loopback"]
    assert row["failed_calls"] == 0 and row["queries_left_out"] == 0 and row["pairs"] == 8 and 0 <= row["nDCG@10"] <= 1
    assert len(openai_server.requests) == 8  # one direct call per (query, document)
    saved = (tmp_path / "ev" / "evaluation.json").read_text()
    assert "sk-test-key-123456" not in saved and '"api_key": "***"' in saved
