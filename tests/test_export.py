"""`r2r-synth export --format r2r`: a run's listwise records in R2R's training format, and back through
`import` (R2R's own release, and a corpus generated here against the loopback server)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from r2r_synth.errors import InputError
from r2r_synth.export import export_run
from r2r_synth.importer import import_r2r
from r2r_synth.rundir import RunDir

sys.path.insert(0, str(Path(__file__).parent))
from test_generate import cli
from test_listwise_generate import candidates, cfg, run, write_input

#: What differs between two imports of the same rows: when each record was imported.
WHEN = {"provenance": {"created_at"}}
#: The fields of a row that R2R's trainer (scripts/train/multi_task_load_data.py) reads.
TRAINER_FIELDS = ("query", "unsorted_docs", "re_rank_id", "reason")


def same_records(a: Path, b: Path) -> bool:
    ra, rb = RunDir(a).records("listwise"), RunDir(b).records("listwise")
    return [r.model_dump(exclude=WHEN) for r in ra] == [r.model_dump(exclude=WHEN) for r in rb]


def test_import_export_import_of_r2r_release_gives_the_same_records(r2r_corpus, tmp_path):
    src = r2r_corpus / "msmarco_500.jsonl"
    first = import_r2r([src], out=tmp_path / "a")
    res = export_run(tmp_path / "a", out=tmp_path / "r2r.jsonl")
    again = import_r2r([tmp_path / "r2r.jsonl"], out=tmp_path / "b")
    assert first.records == res.rows == again.records == 500 and again.rejects == 0 and res.queries == 500
    assert same_records(tmp_path / "a", tmp_path / "b")
    # Every field R2R's trainer reads is the release's own, row by row.
    orig = [json.loads(x) for x in src.read_text().splitlines()]
    out = [json.loads(x) for x in (tmp_path / "r2r.jsonl").read_text().splitlines()]
    assert [{k: r[k] for k in TRAINER_FIELDS} for r in orig] == [{k: r[k] for k in TRAINER_FIELDS} for r in out]
    assert [str(r["qid"]) for r in orig] == [r["qid"] for r in out]


def test_a_generated_listwise_run_exports_and_imports_with_its_docids_and_grades(openai_server, tmp_path):
    inp = write_input(tmp_path / "c.jsonl", candidates(2))
    openai_server.script("sand spits grow 1", {"flaw": "missing"})
    run(cfg(openai_server, tmp_path / "run", inp))
    res = export_run(tmp_path / "run", out=tmp_path / "r2r.jsonl")
    assert res.rows == 10 and res.queries == 2 and res.repaired == 1
    row = json.loads((tmp_path / "r2r.jsonl").read_text().splitlines()[0])
    assert set(TRAINER_FIELDS) <= set(row) and len(row["unsorted_docs"]) == 10
    assert sorted(row["re_rank_id"]) == list(range(1, 11))
    assert {"identifier", "direct_reason", "listwise_reason", "direct_answer_sentence", "relevance"} == \
        set(row["reason"]["ranked_passages"][0])
    import_r2r([tmp_path / "r2r.jsonl"], out=tmp_path / "back", name="imported:loopback")
    gen = {r.key: r for r in RunDir(tmp_path / "run").records("listwise")}
    back = RunDir(tmp_path / "back").records("listwise")
    assert len(back) == 10
    for b in back:
        g = next(r for r in gen.values() if [d.docid for d in r.documents] == [d.docid for d in b.documents])
        assert b.ranking == g.ranking and b.items == g.items  # docids, order, reasons and grades
        assert b.provenance.teacher == "imported:loopback" and b.window is None  # R2R's format has no window


def test_export_refuses_a_run_without_listwise_records(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "direct.jsonl").write_text("")
    with pytest.raises(InputError, match="holds no listwise records") as ei:
        export_run(run_dir, out=tmp_path / "x.jsonl")
    assert "generate --listwise" in str(ei.value) and not (tmp_path / "x.jsonl").exists()


def test_export_refuses_to_replace_a_file_unless_asked(r2r_corpus, tmp_path):
    import_r2r([r2r_corpus / "msmarco_100.jsonl"], out=tmp_path / "a")
    out = tmp_path / "x.jsonl"
    out.write_text("keep me\n")
    with pytest.raises(InputError, match="already exists"):
        export_run(tmp_path / "a", out=out)
    assert out.read_text() == "keep me\n"
    assert export_run(tmp_path / "a", out=out, overwrite=True).rows == 100


def test_cli_export_exit_codes(r2r_corpus, tmp_path, monkeypatch, capsys):
    import_r2r([r2r_corpus / "msmarco_100.jsonl"], out=tmp_path / "a")
    code, out, _ = cli(monkeypatch, capsys, "export", str(tmp_path / "a"), "--format", "r2r", "--out",
                       str(tmp_path / "x.jsonl"))
    assert code == 0 and "100 listwise rows from 100 queries" in out
    code, _, err = cli(monkeypatch, capsys, "export", str(tmp_path / "a"), "--out", str(tmp_path / "x.jsonl"))
    assert code == 2 and "already exists" in err and "--overwrite" in " ".join(err.split())
    code, _, _ = cli(monkeypatch, capsys, "export", str(tmp_path / "a"), "--format", "trec", "--out",
                     str(tmp_path / "y.jsonl"))
    assert code == 2 and not (tmp_path / "y.jsonl").exists()
