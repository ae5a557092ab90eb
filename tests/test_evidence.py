"""Evidence for a ranking: sentences cut as verbatim slices of the document, and `rerank --explain` with
a bi-encoder student printing one evidence sentence per result, the document's sentence the student's own
cosine ranks highest (checked against the model loaded on its own)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from r2r_synth.errors import InputError
from r2r_synth.evaluate import rerank_documents
from r2r_synth.evaluate.evidence import evidence_sentences, split_sentences

REPO = Path(__file__).resolve().parents[1]
R2R = str(REPO / ".venv" / "bin" / "r2r-synth")

DOCS = [
    {"docid": "otters", "title": "River otters",
     "text": "River otters live in rivers, e.g. the Thames. They eat fish, crabs and frogs. Their fur is thick."},
    {"docid": "tax", "text": "Tax returns are due in April (see Fig. 2 of the guide). File early!\nLate filing costs more."},
    {"docid": "jazz", "text": "Jazz piano began in New Orleans around 1900"},
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One. Two! Three? four", ["One.", "Two!", "Three? four"]),  # a lower-case start is no new sentence
        ("Smith et al. Found it. Shown in Fig. 3 here.", ["Smith et al. Found it.", "Shown in Fig. 3 here."]),
        ('He said "Go." Then left.\n\nNext line', ['He said "Go."', "Then left.", "Next line"]),
        ("  no boundary at all  ", ["no boundary at all"]),
        (" \n ", []),
    ],
)
def test_sentences_are_verbatim_slices(text, expected):
    got = split_sentences(text)
    assert got == expected and all(s in text for s in got)


def test_evidence_is_the_best_scored_sentence_of_each_document():
    def score(query, texts):  # a real scorer's shape: one score per text, in order
        return [float(t.lower().count("fish")) - len(t) / 1000 for t in texts]

    docs = ["No fish here? Fish and fish. Fish.", "", "Nothing at all."]
    assert evidence_sentences(score, "fish", docs) == ["Fish and fish.", None, "Nothing at all."]
    with pytest.raises(RuntimeError, match="the scorer returned 1 scores for 3 sentences"):
        evidence_sentences(lambda q, t: [0.0], "q", ["A. B. C."])


@pytest.fixture(scope="module")
def bi_student(tmp_path_factory, tiny_bert) -> Path:
    """An untrained bi-encoder student (the base as it stands: a bi-encoder student starts there)."""
    from sentence_transformers import SentenceTransformer

    from r2r_synth.student.base import r2r_config, write_r2r_config

    out = tmp_path_factory.mktemp("bi") / "student"
    SentenceTransformer(str(tiny_bert), device="cpu").save(str(out))
    write_r2r_config(out, r2r_config("bi-encoder", base=str(tiny_bert)))
    return out


def test_cli_rerank_explain_prints_one_evidence_sentence_per_result_from_that_document(tmp_path, bi_student):
    from sentence_transformers import SentenceTransformer

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    query = "what do otters eat"
    args = [R2R, "rerank", "--model", str(bi_student), "-q", query, "--docs", str(docs), "--explain"]
    proc = subprocess.run([*args, "--json"], check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == len(DOCS)
    model = SentenceTransformer(str(bi_student), device="cpu")
    q = model.encode([query], normalize_embeddings=True)[0]
    for row in rows:
        sentences = split_sentences(row["text"])
        assert row["evidence"] in row["text"] and row["evidence"] in sentences
        cos = model.encode(sentences, normalize_embeddings=True) @ q
        assert row["evidence"] == sentences[int(cos.argmax())]
    table = subprocess.run(args, check=False, capture_output=True, text=True, timeout=300, env=_wide())
    assert table.returncode == 0, table.stderr
    assert table.stdout.count("evidence:") == len(DOCS)


def _wide() -> dict:
    import os

    return {**os.environ, "COLUMNS": "400"}


def test_rerank_without_explain_gives_no_evidence_and_an_empty_query_is_refused(bi_student):
    ranked = rerank_documents(model=str(bi_student), query="otters", documents=[("a", "One. Two."), ("b", "x")])
    assert all(r.evidence is None and r.explanation is None for r in ranked)
    with pytest.raises(InputError, match="the query is empty"):
        rerank_documents(model=str(bi_student), query=" ", documents=[("a", "x")], explain=True)
