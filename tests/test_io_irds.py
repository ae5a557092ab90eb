"""`irds:<id>` inputs through ir_datasets' own registry, over datasets built from local files with
`ir_datasets.create_dataset` (nothing can be downloaded here)."""

from __future__ import annotations

import uuid
from pathlib import Path

import ir_datasets
import pytest
from ir_datasets.formats import TrecScoredDocs
from ir_datasets.util import LocalDownload

from r2r_synth.errors import InputError
from r2r_synth.io.candidates import load_candidates

DOCS = {
    "d1": "cats are small domesticated felines that purr",
    "d2": "dogs are loyal domesticated canines that bark",
    "d3": "a flea lives on cats and dogs and its life cycle lasts weeks",
    "d4": "the stock market fell sharply on monday",
}
QUERIES = {"q1": "life cycle of a flea", "q2": "why do cats purr", "q3": "stock market news"}


def register(ds) -> str:
    """Register `ds` under a fresh id (the registry refuses to overwrite) and return the id."""
    name = f"r2r-synth-test/{uuid.uuid4().hex[:8]}"
    ir_datasets.registry.register(name, ds)
    return name


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    docs = tmp_path / "docs.tsv"
    docs.write_text("".join(f"{d}\t{t}\n" for d, t in DOCS.items()))
    queries = tmp_path / "queries.tsv"
    queries.write_text("".join(f"{q}\t{t}\n" for q, t in QUERIES.items()))
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("q1 0 d3 2\nq2 0 d1 1\nq2 0 d4 0\n")
    run = tmp_path / "run.trec"
    # A first-stage run that disagrees with BM25 on purpose (d2 first for q1), so the test can tell
    # which path made the candidates.
    run.write_text("q1 Q0 d2 1 9.0 r\nq1 Q0 d3 2 8.0 r\nq1 Q0 d1 3 7.0 r\nq2 Q0 d1 1 5.0 r\n")
    return {"docs": docs, "queries": queries, "qrels": qrels, "run": run}


def test_irds_without_scoreddocs_ranks_with_bm25(files):
    ds = ir_datasets.create_dataset(docs_tsv=files["docs"], queries_tsv=files["queries"], qrels_trec=files["qrels"])
    name = register(ds)
    cands = load_candidates(f"irds:{name}")
    assert [c.query.qid for c in cands] == ["q1", "q2", "q3"]
    assert cands[0].documents[0].docid == "d3"  # BM25's pick
    assert cands[0].documents[0].text == DOCS["d3"]
    assert cands[1].qrels == {"d1": 1, "d4": 0} and cands[2].qrels == {}
    assert [c.query.qid for c in load_candidates(f"irds:{name}", limit=2, depth=1)] == ["q1", "q2"]


def test_irds_scoreddocs_and_docs_store(files):
    base = ir_datasets.create_dataset(docs_tsv=files["docs"], queries_tsv=files["queries"], qrels_trec=files["qrels"])
    name = register(ir_datasets.Dataset(base, TrecScoredDocs(LocalDownload(files["run"]))))
    cands = load_candidates(f"irds:{name}", depth=2)
    assert [d.docid for d in cands[0].documents] == ["d2", "d3"] and cands[0].scores == [9.0, 8.0]
    assert cands[0].documents[0].text == DOCS["d2"]
    assert cands[0].qrels == {"d3": 2}
    # q3 is in the queries but not in the run: kept, with no candidates.
    assert cands[2].query.qid == "q3" and cands[2].documents == []


def test_irds_qrels_flag_overrides(files, tmp_path):
    name = register(ir_datasets.create_dataset(docs_tsv=files["docs"], queries_tsv=files["queries"]))
    qrels = tmp_path / "mine.txt"
    qrels.write_text("q3 Q0 d4 3\n")
    cands = load_candidates(f"irds:{name}", qrels=qrels)
    assert cands[2].qrels == {"d4": 3} and cands[0].qrels == {}


def test_irds_unknown_id_and_missing_parts(files):
    with pytest.raises(InputError, match=r"irds:no/such-dataset-xyz: not a known ir_datasets id") as e:
        load_candidates("irds:no/such-dataset-xyz")
    assert "ir-datasets.com" in str(e.value)
    with pytest.raises(InputError, match=r"irds: needs a dataset id after the colon"):
        load_candidates("irds:")
    name = register(ir_datasets.create_dataset(docs_tsv=files["docs"]))
    with pytest.raises(InputError, match=rf"irds:{name}: the dataset has no queries"):
        load_candidates(f"irds:{name}")


def test_irds_unreadable_files_become_input_errors(files, tmp_path):
    # What an offline machine sees for a dataset whose files were never downloaded.
    name = register(ir_datasets.create_dataset(docs_tsv=files["docs"], queries_tsv=tmp_path / "absent" / "q.tsv"))
    with pytest.raises(InputError, match=rf"irds:{name}: could not read its queries: FileNotFoundError") as e:
        load_candidates(f"irds:{name}")
    assert "IR_DATASETS_HOME" in str(e.value)
