"""`import`: R2R's released listwise corpus -> a run directory that publish/report/train read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from r2r_synth.errors import InputError
from r2r_synth.importer import import_r2r
from r2r_synth.io.jsonl import read_jsonl
from r2r_synth.schemas import ListwiseRecord, Manifest, Reject


def good_row(qid: str = "7", n: int = 3) -> dict:
    return {
        "query": f"query {qid}", "qid": qid, "sorted_docids": ["0"] * n, "re_rank_id": list(range(n, 0, -1)),
        "unsorted_docs": [f"passage {i}" for i in range(n)],
        "reason": {"ranked_passages": [
            {"identifier": i, "direct_reason": f"why {i}", "listwise_reason": f"vs others {i}",
             "direct_answer_sentence": f"answer {i}"} for i in range(n, 0, -1)]},
        "scores": ["0"] * n,
    }


def write_rows(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_import_msmarco_500_gives_500_queries_and_no_rejects(tmp_path, r2r_corpus):
    src = r2r_corpus / "msmarco_500.jsonl"
    res = import_r2r([src], out=tmp_path / "run", command="r2r-synth import msmarco_500.jsonl --out run")
    assert (res.records, res.queries, res.rejects) == (500, 500, 0)
    recs = list(read_jsonl(tmp_path / "run" / "listwise.jsonl", ListwiseRecord))
    assert len(recs) == 500 and len({r.query.qid for r in recs}) == 500
    assert (tmp_path / "run" / "rejects.jsonl").read_text() == ""
    m = Manifest.model_validate_json((tmp_path / "run" / "manifest.json").read_text())
    assert m.counts["listwise"].records == 500 and m.counts["listwise"].requested == 500
    assert m.teacher == "imported:r2r-gpt4" and m.extra["provenance"] == "imported" and m.cost is None
    assert m.extra["sources"][0]["records"] == 500
    # The first row, checked against the raw release: the permutation and the reasons land on the
    # passages they were written for.
    raw = json.loads(src.read_text().splitlines()[0])
    r = recs[0]
    assert r.query.text == raw["query"] and r.provenance.teacher.startswith("imported:")
    assert [d.text for d in r.documents] == raw["unsorted_docs"]
    by_id = {d.docid: d.text for d in r.documents}
    assert [by_id[d] for d in r.ranking] == [raw["unsorted_docs"][i - 1] for i in raw["re_rank_id"]]
    first = raw["reason"]["ranked_passages"][0]
    assert r.items[0].reason == first["direct_reason"]
    assert by_id[r.items[0].docid] == raw["unsorted_docs"][first["identifier"] - 1]


def test_duplicates_across_files_are_rejected_naming_the_first(tmp_path, r2r_corpus):
    res = import_r2r([r2r_corpus / "msmarco_500.jsonl", r2r_corpus / "msmarco_100.jsonl"], out=tmp_path / "run")
    rejects = list(read_jsonl(tmp_path / "run" / "rejects.jsonl", Reject))
    assert res.records + res.rejects == 600
    assert len(rejects) == res.rejects and res.reject_reasons.get("duplicate") == res.rejects
    assert all("msmarco_500.jsonl:" in r.reason and r.raw for r in rejects)


def test_bad_rows_become_rejects_with_file_line_and_raw(tmp_path):
    bad_perm = {**good_row("2"), "re_rank_id": [1, 1, 2]}
    no_query = {k: v for k, v in good_row("3").items() if k != "query"}
    bad_ident = good_row("4")
    bad_ident["reason"]["ranked_passages"][0]["identifier"] = 9
    src = write_rows(tmp_path / "r2r.jsonl", [good_row("1"), bad_perm, no_query, bad_ident, good_row("5")])
    res = import_r2r([src], out=tmp_path / "run")
    assert (res.records, res.rejects) == (2, 3)
    rejects = list(read_jsonl(tmp_path / "run" / "rejects.jsonl", Reject))
    assert [r.inputs["line"] for r in rejects] == [2, 3, 4]
    assert "r2r.jsonl:2:" in rejects[0].reason and "not a 1-based permutation" in rejects[0].reason
    assert "query" in rejects[1].reason
    assert "identifier 9 is outside 1..3" in rejects[2].reason
    assert json.loads(rejects[0].raw)["re_rank_id"] == [1, 1, 2]
    assert [r.inputs["qid"] for r in rejects] == ["2", "3", "4"]
    m = Manifest.model_validate_json((tmp_path / "run" / "manifest.json").read_text())
    assert m.counts["listwise"].rejects == 3 and m.extra["reject_reasons"] == {"invalid R2R row": 3}


def test_a_torn_line_is_a_reject_with_file_line_and_one_line_reason(tmp_path):
    src = write_rows(tmp_path / "broken.jsonl", [good_row("1"), '{"query": "cut sho', [1, 2],
                                                 {k: v for k, v in good_row("3").items() if k != "qid"}])
    res = import_r2r([src], out=tmp_path / "run")
    assert (res.records, res.rejects) == (1, 3)
    reasons = [r.reason for r in read_jsonl(tmp_path / "run" / "rejects.jsonl", Reject)]
    assert reasons[0].startswith(f"{src}:2: not valid JSON (")
    assert reasons[1] == f"{src}:3: expected a JSON object, got list"
    assert reasons[2] == f"{src}:4: not a valid R2R listwise row: qid: Field required"
    assert all("\n" not in r and "pydantic.dev" not in r for r in reasons)


@pytest.mark.parametrize(("rows", "match"), [
    (["{not json", {"_id": "d1", "text": "a BEIR corpus line"}],
     r"foreign.jsonl: none of its 2 lines is an R2R listwise row \(the first: .*foreign.jsonl:1: not valid JSON"),
    ([], r"foreign.jsonl: the file is empty; nothing was imported"),
])
def test_a_file_without_a_usable_row_exits_2_and_writes_nothing(tmp_path, rows, match):
    good = write_rows(tmp_path / "good.jsonl", [good_row("1")])
    src = write_rows(tmp_path / "foreign.jsonl", rows)
    with pytest.raises(InputError, match=match):
        import_r2r([good, src], out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_existing_run_needs_overwrite_and_name_must_say_imported(tmp_path):
    src = write_rows(tmp_path / "r2r.jsonl", [good_row("1")])
    import_r2r([src], out=tmp_path / "run")
    with pytest.raises(InputError, match="already holds a run"):
        import_r2r([src], out=tmp_path / "run")
    assert import_r2r([src], out=tmp_path / "run", overwrite=True).records == 1
    with pytest.raises(InputError, match="must start with 'imported:'"):
        import_r2r([src], out=tmp_path / "other", name="gpt-4")
    with pytest.raises(InputError, match="no such file"):
        import_r2r([tmp_path / "missing.jsonl"], out=tmp_path / "other")


def test_cli_import_then_publish_dry_run_loads(tmp_path, r2r_corpus):
    import datasets

    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "r2r_synth.cli", "import", str(r2r_corpus / "msmarco_100.jsonl"),
                           "--out", str(run)], check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "100 listwise records from 100 queries, 0 rejects" in proc.stdout
    m = Manifest.model_validate_json((run / "manifest.json").read_text())
    assert m.command.startswith("r2r-synth import ") and m.config["name"] == "imported:r2r-gpt4"
    proc = subprocess.run([sys.executable, "-m", "r2r_synth.cli", "publish", str(run), "--repo-id", "alice/r2r100",
                           "--license", "other", "--dry-run", "--out", str(tmp_path / "hub"),
                           "--split", "train=0.9,test=0.1"], check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ds = datasets.load_dataset(str(tmp_path / "hub"), name="listwise", cache_dir=str(tmp_path / "cache"))
    assert len(ds["train"]) + len(ds["test"]) == 100
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "**Imported** from `msmarco_100.jsonl`" in card and "imported:r2r-gpt4" in card


def test_cli_import_of_a_missing_file_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "r2r_synth.cli", "import", str(tmp_path / "nope.jsonl"),
                           "--out", str(tmp_path / "run")], check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "nope.jsonl" in proc.stderr
