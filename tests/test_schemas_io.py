"""The data contract (schemas), JSONL reading/appending, and R2R's released format."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from r2r_synth.errors import InputError
from r2r_synth.io.jsonl import JsonlAppender, read_jsonl
from r2r_synth.io.r2r import iter_r2r, read_r2r
from r2r_synth.schemas import (
    Candidates,
    ComparisonAnswer,
    ComparisonRecord,
    DirectRecord,
    Document,
    Provenance,
    Query,
    request_key,
)

PROV = Provenance(teacher="openai/gpt-4o", program="direct", program_hash="p", prompt_hash="h")


def _direct(key="k1", relevance=2):
    return DirectRecord(
        key=key,
        query=Query(qid="1", text="q"),
        document=Document(docid="d1", text="t"),
        reasoning="because",
        relevance=relevance,
        score=0.7,
        provenance=PROV,
    )


def test_extra_field_in_a_row_names_file_and_line(tmp_path):
    path = tmp_path / "direct.jsonl"
    good = _direct().model_dump(mode="json")
    bad = dict(good, relevnce=3)
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(InputError, match=r"direct\.jsonl:2: not a valid DirectRecord record: relevnce: Extra inputs"):
        list(read_jsonl(path, DirectRecord))


def test_out_of_range_grade_is_rejected():
    with pytest.raises(ValueError, match="less than or equal to 3"):
        _direct(relevance=4)


def test_not_json_names_line(tmp_path):
    path = tmp_path / "c.jsonl"
    ok = Candidates(query=Query(qid="1", text="q"), documents=[Document(docid="a", text="x")])
    path.write_text(ok.model_dump_json() + "\n{oops\n")
    with pytest.raises(InputError, match=r"c\.jsonl:2: not valid JSON"):
        list(read_jsonl(path, Candidates))


def test_candidates_reject_duplicate_docids_and_score_mismatch():
    q = Query(qid="1", text="q")
    d = Document(docid="a", text="x")
    with pytest.raises(ValueError, match="docid 'a' appears twice"):
        Candidates(query=q, documents=[d, d])
    with pytest.raises(ValueError, match="scores has 2 entries but documents has 1"):
        Candidates(query=q, documents=[d], scores=[1.0, 2.0])


def test_comparison_swap_agreement_is_derived():
    rec = ComparisonRecord(
        key="k",
        query=Query(qid="1", text="q"),
        doc_a=Document(docid="a", text="x"),
        doc_b=Document(docid="b", text="y"),
        reasoning="r",
        preferred="A",
        confidence=0.9,
        swapped=ComparisonAnswer(reasoning="r2", preferred="B", confidence=0.6),
        provenance=PROV,
    )
    assert rec.swap_agrees is False


def test_request_key_is_content_addressed():
    k = {"kind": "direct", "inputs": {"qid": "1", "docid": "a"}, "program_hash": "p", "teacher": "t"}
    assert request_key(**k) == request_key(**k)
    assert request_key(**k) != request_key(**{**k, "teacher": "u"})
    assert request_key(**k) != request_key(**k, rollout_id=1)


def test_appender_cuts_a_torn_tail_and_stays_parseable(tmp_path):
    path = tmp_path / "direct.jsonl"
    line = _direct("k1").model_dump_json() + "\n"
    path.write_text(line + line[: len(line) // 2])  # a crash cut the second write short
    with JsonlAppender(path) as out:
        out.write(_direct("k2"))
    assert [r.key for r in read_jsonl(path, DirectRecord)] == ["k1", "k2"]


def test_a_torn_last_line_is_skipped_only_when_asked_and_only_at_the_end(tmp_path):
    path = tmp_path / "direct.jsonl"
    line = _direct("k1").model_dump_json() + "\n"
    path.write_text(line + line[: len(line) // 2])
    assert [r.key for r in read_jsonl(path, DirectRecord, tolerate_torn_tail=True)] == ["k1"]
    with pytest.raises(InputError, match=r"direct\.jsonl:2: not valid JSON"):
        list(read_jsonl(path, DirectRecord))
    path.write_text(line[: len(line) // 2] + "\n" + line)  # a broken line in the middle is never torn
    with pytest.raises(InputError, match=r"direct\.jsonl:1: not valid JSON"):
        list(read_jsonl(path, DirectRecord, tolerate_torn_tail=True))


def test_r2r_release_converts_with_positions(r2r_corpus):
    recs = read_r2r(r2r_corpus / "msmarco_100.jsonl")
    assert len(recs) == 100
    first = recs[0]
    assert first.query.qid == "1185869"
    # re_rank_id [2, 4, 3, 5, 1]: the teacher put the second passage first.
    assert first.ranking[0] == "1185869-2"
    assert first.items[0].docid == "1185869-2" and first.items[0].reason
    assert first.provenance.teacher.startswith("imported:")


def test_r2r_bad_row_is_reported_not_dropped(tmp_path):
    path = tmp_path / "r2r.jsonl"
    row = {"query": "q", "qid": "9", "unsorted_docs": ["a", "b"], "re_rank_id": [1, 1]}
    path.write_text(json.dumps(row) + "\n")
    (line, rec, err), = list(iter_r2r(path))
    assert rec is None and line == 1
    assert "not a 1-based permutation" in err
    with pytest.raises(InputError, match=r"r2r\.jsonl:1: not a valid R2R listwise row"):
        read_r2r(path)


def test_schema_command_prints_json_schema():
    out = subprocess.run(
        [sys.executable, "-m", "r2r_synth.cli", "schema", "direct"], capture_output=True, text=True, check=True
    ).stdout
    schema = json.loads(out)
    assert {"reasoning", "relevance", "score", "provenance"} <= set(schema["properties"])
