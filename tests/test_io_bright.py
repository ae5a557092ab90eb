"""BRIGHT as an input: a local copy in the Hub's exact layout (examples/<domain>-00000-of-00001.parquet,
documents/<domain>-00000-of-00001.parquet, the Hub's columns) read by `datasets`, BM25 over the
domain's documents, `excluded_ids` left out, `gold_ids` as qrels; evaluate records the domain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r2r_synth.config import EvaluateConfig
from r2r_synth.errors import InputError
from r2r_synth.evaluate import evaluate
from r2r_synth.io.candidates import describe_input, load_candidates

DOCS = {
    "biology": [
        ("bio_flea_1.txt", "The flea life cycle: egg, larva, pupa, adult. A flea larva feeds on debris."),
        ("bio_flea_2.txt", "Adult fleas feed on blood; a flea can jump 100 times its length."),
        ("bio_cat_1.txt", "Cats purr through rapid twitching of the larynx muscles."),
        ("bio_cat_2.txt", "Purring cats: the vibration frequency is 25 to 150 hertz."),
        ("bio_misc.txt", "Photosynthesis turns light into chemical energy in the chloroplast."),
    ],
    "economics": [("eco_1.txt", "Inflation erodes the purchasing power of money."),
                  ("eco_2.txt", "Central banks raise rates to fight inflation.")],
}
EXAMPLES = {
    "biology": [
        {"query": "How long does a flea larva take to become an adult flea?", "reasoning": "life cycle stages",
         "id": "0", "excluded_ids": ["bio_flea_2.txt"], "gold_ids_long": ["bio_flea"], "gold_ids": ["bio_flea_1.txt"],
         "gold_answer": "N/A"},
        {"query": "Why do cats purr?", "reasoning": "larynx", "id": "1", "excluded_ids": ["N/A"],
         "gold_ids_long": ["bio_cat"], "gold_ids": ["bio_cat_1.txt", "bio_cat_2.txt"], "gold_answer": "N/A"},
    ],
    "economics": [{"query": "what fights inflation", "reasoning": "", "id": "0", "excluded_ids": ["N/A"],
                   "gold_ids_long": [], "gold_ids": ["eco_2.txt"], "gold_answer": "N/A"}],
}


@pytest.fixture
def bright(tmp_path) -> Path:
    """A local copy of xlangai/BRIGHT's `examples` and `documents` configs, as Parquet files named and
    typed as on the Hub."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "BRIGHT"
    for domain, docs_of in DOCS.items():
        (root / "documents").mkdir(parents=True, exist_ok=True)
        (root / "examples").mkdir(parents=True, exist_ok=True)
        docs = pa.table({"id": [d for d, _ in docs_of], "content": [t for _, t in docs_of]})
        pq.write_table(docs, root / "documents" / f"{domain}-00000-of-00001.parquet")
        rows = EXAMPLES[domain]
        strings, lists = ("query", "reasoning", "id", "gold_answer"), ("excluded_ids", "gold_ids_long", "gold_ids")
        schema = pa.schema([*((k, pa.string()) for k in strings[:3]), *((k, pa.list_(pa.string())) for k in lists),
                            ("gold_answer", pa.string())])
        table = pa.table({k: [r[k] for r in rows] for k in schema.names}, schema=schema)
        pq.write_table(table, root / "examples" / f"{domain}-00000-of-00001.parquet")
    return root


def test_a_local_copy_reads_one_domain(bright):
    cands = load_candidates(bright, split="biology")
    assert [c.query.qid for c in cands] == ["0", "1"]
    flea, cats = cands
    assert flea.qrels == {"bio_flea_1.txt": 1} and cats.qrels == {"bio_cat_1.txt": 1, "bio_cat_2.txt": 1}
    assert flea.documents[0].docid == "bio_flea_1.txt"
    assert "bio_flea_2.txt" not in [d.docid for d in flea.documents]  # excluded for this query
    assert {d.docid for d in cats.documents[:2]} == {"bio_cat_1.txt", "bio_cat_2.txt"}
    assert cats.scores is not None and cats.scores[0] > 0
    assert describe_input(bright, split="economics")["split"] == "economics"
    assert describe_input(bright, split="biology")["qrels"] == [
        f"{bright / 'examples' / 'biology-00000-of-00001.parquet'} (gold_ids)"]


def test_a_local_copy_needs_a_domain(bright):
    with pytest.raises(InputError, match=r"BRIGHT: a BRIGHT copy needs --split <domain> \(it holds biology, economics\)"):
        load_candidates(bright)
    with pytest.raises(InputError, match=r"no examples files for domain 'pony' \(domains here: biology, economics\)"):
        load_candidates(bright, split="pony")


def test_a_copy_of_another_layout_is_named(bright):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["0"], "question": ["q"]}), bright / "examples" / "biology-00000-of-00001.parquet")
    with pytest.raises(InputError, match=r"biology-00000-of-00001.parquet: not BRIGHT's layout: no column query, "
                                         r"gold_ids \(its columns: id, question\)"):
        load_candidates(bright, split="biology")


def test_the_hub_id_names_the_domain(monkeypatch):
    with pytest.raises(InputError, match=r"bright:: name one domain, e.g. bright:biology"):
        load_candidates("bright:")


def test_evaluate_records_the_domain_and_files(bright, tmp_path):
    evaluate(EvaluateConfig(input=str(bright), split="biology", systems=["bm25"], out=tmp_path / "ev"))
    saved = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert saved["split"] == "biology" and saved["judged_queries"] == 2
    assert saved["queries_files"] == [str(bright / "examples" / "biology-00000-of-00001.parquet")]
    assert saved["systems"]["bm25"]["nDCG@10"] > 0.5
