"""TREC qrels / runs / topics / SGML documents: real files and malformed tiny ones."""

from __future__ import annotations

import gzip
from pathlib import Path
from urllib.parse import unquote

import ir_measures
import pytest
from conftest import shared_data

from r2r_synth.errors import InputError
from r2r_synth.io.trec import (
    iter_trec_docs,
    read_qrels,
    read_run,
    read_topics,
    read_trec_docs,
    write_run,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- qrels


def test_trec_qrels_read_as_strings_and_ints(tmp_path):
    q = read_qrels(write(tmp_path / "q.txt", "1 Q0 d1 2\n1 0 d2 0\n\n02 Q0 7 1\n"))
    assert q == {"1": {"d1": 2, "d2": 0}, "02": {"7": 1}}


def test_beir_qrels_header_is_skipped(tmp_path):
    q = read_qrels(write(tmp_path / "test.tsv", "query-id\tcorpus-id\tscore\n0\t31715818\t1\n0\t99\t0\n5\t1\t2\n"))
    assert q == {"0": {"31715818": 1, "99": 0}, "5": {"1": 2}}


def test_gzipped_qrels(tmp_path):
    p = tmp_path / "q.txt.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("1 Q0 d1 3\n")
    assert read_qrels(p) == {"1": {"d1": 3}}


def test_qrels_bad_grade_names_line(tmp_path):
    p = write(tmp_path / "qrels.txt", "1 Q0 d1 2\n1 Q0 d2 0\n1 Q0 d3 high\n")
    with pytest.raises(InputError, match=r"qrels.txt:3: relevance grade 'high' is not an integer"):
        read_qrels(p)


def test_qrels_wrong_column_count_names_line(tmp_path):
    p = write(tmp_path / "qrels.txt", "1 Q0 d1 2\n1 d2 0\n")
    with pytest.raises(InputError, match=r"qrels.txt:2: expected 4 columns like the first line, got 3"):
        read_qrels(p)


def test_qrels_conflicting_duplicate_names_line(tmp_path):
    p = write(tmp_path / "qrels.txt", "1 Q0 d1 2\n1 Q0 d1 2\n1 Q0 d1 0\n")
    with pytest.raises(InputError, match=r"qrels.txt:3: qid 1 docid d1 is judged twice, with grades 2 and 0"):
        read_qrels(p)


def test_qrels_missing_and_empty(tmp_path):
    with pytest.raises(InputError, match=r"nope.txt: no such file"):
        read_qrels(tmp_path / "nope.txt")
    with pytest.raises(InputError, match=r"empty.txt: no judgments found"):
        read_qrels(write(tmp_path / "empty.txt", "\n"))


def test_real_dl19_qrels(dl19):
    q = read_qrels(dl19 / "qrels.txt")
    assert len(q) == 43
    assert sum(len(v) for v in q.values()) == 9260
    assert {g for v in q.values() for g in v.values()} == {0, 1, 2, 3}


def test_real_scifact_beir_qrels():
    q = read_qrels(shared_data("scifact", "qrels.train.tsv"))
    assert len(q) == 809
    assert q["0"] == {"31715818": 1}


# --------------------------------------------------------------------------- runs


def test_run_roundtrip_ranks_by_score(tmp_path):
    run = {"q2": {"a": 1.0, "b": 3.5, "c": 2.0}, "q1": {"x": 0.1}}
    p = write_run(tmp_path / "out" / "run.trec", run, tag="bm25")
    lines = p.read_text().splitlines()
    assert lines[0] == "q2 Q0 b 1 3.500000 bm25"
    assert [ln.split()[2] for ln in lines] == ["b", "c", "a", "x"]
    assert read_run(p) == run
    assert not (tmp_path / "out" / "run.trec.tmp").exists()


def test_run_bad_score_names_line(tmp_path):
    p = write(tmp_path / "run.trec", "1 Q0 d1 1 2.5 t\n1 Q0 d2 2 oops t\n")
    with pytest.raises(InputError, match=r"run.trec:2: score 'oops' is not a number"):
        read_run(p)


def test_run_wrong_columns_and_duplicates(tmp_path):
    with pytest.raises(InputError, match=r"run.trec:1: expected 6 columns, got 3"):
        read_run(write(tmp_path / "run.trec", "1 d1 2.0\n"))
    with pytest.raises(InputError, match=r"dup.trec:2: docid d1 appears twice for qid 1"):
        read_run(write(tmp_path / "dup.trec", "1 Q0 d1 1 2 t\n1 Q0 d1 2 1 t\n"))


def test_run_ids_with_whitespace_or_percent_survive_a_roundtrip(tmp_path):
    run = {"q 1": {"doc one": 3.0, "tab\there": 2.0, "new\nline": 1.5, "100%": 1.0, "a%20b": 0.5}, "q2": {"x": 1.0}}
    p = write_run(tmp_path / "run.trec", run, tag="bm25")
    assert p.read_text().splitlines()[0] == "q%201 Q0 doc%20one 1 3.000000 bm25"
    assert read_run(p) == run
    theirs: dict[str, dict[str, float]] = {}
    for sd in ir_measures.read_trec_run(str(p)):  # six columns on every line, or it raises
        theirs.setdefault(unquote(sd.query_id), {})[unquote(sd.doc_id)] = sd.score
    assert theirs == run


def test_write_run_rejects_bad_tag(tmp_path):
    with pytest.raises(InputError, match="run tag 'my run' must be one non-empty word"):
        write_run(tmp_path / "r.trec", {"1": {"d": 1.0}}, tag="my run")


# --------------------------------------------------------------------------- topics and documents


def test_topics_tsv_and_trec_sgml(tmp_path):
    assert read_topics(write(tmp_path / "t.tsv", "10\tdo goldfish grow\n2\twhat is wifi\n")) == {
        "10": "do goldfish grow",
        "2": "what is wifi",
    }
    sgml = (
        "<top>\n<num> Number: 301\n<title> International Organized Crime\n\n<desc> Description:\nIdentify...\n</top>\n"
        "<top>\n<num>2</num><title>\nMATHEMATICAL ANALYSIS &amp; DESIGN\n</title>\n</top>\n"
    )
    assert read_topics(write(tmp_path / "t.trec", sgml)) == {
        "301": "International Organized Crime",
        "2": "MATHEMATICAL ANALYSIS & DESIGN",
    }


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("t.tsv", "1\tok\njust text\n", r"t.tsv:2: expected `qid<TAB>query text`, got 1"),
        ("t.trec", "<top>\n<num>1</num><title>a</title>\n</top>\n<top>\n<num>2</num>\n",
         r"t.trec:4: <top> block is never closed"),
        ("d.tsv", "1\ta\n1\tb\n", r"d.tsv:2: qid 1 appears twice"),
        ("e.tsv", "1\ta\n2\t \n", r"e.tsv:2: empty query text"),
        ("e.tsv", "\ta\n", r"e.tsv:1: empty qid"),
        ("n.trec", "<top><num>1</num><title>a</title></top>\n<top><num>Number:</num>\n<title>b</title></top>\n",
         r"n.trec:2: topic with an empty <num>"),
        ("t.trec", "<top><num>1</num><title></title></top>\n", r"t.trec:1: topic with an empty <title>"),
    ],
)
def test_topics_errors_name_line(tmp_path, name, text, message):
    with pytest.raises(InputError, match=message):
        read_topics(write(tmp_path / name, text))


def test_trec_docs_with_title_and_text_tags(tmp_path):
    p = write(
        tmp_path / "docs.trec",
        "<DOC>\n<DOCNO> d1 </DOCNO>\n<TITLE>A title</TITLE>\n<TEXT>\nbody &lt;here&gt;\nmore\n</TEXT>\n</DOC>\n"
        "<DOC><DOCNO>d2</DOCNO>one line</DOC>\n",
    )
    docs = read_trec_docs(p)
    assert list(docs) == ["d1", "d2"]
    assert docs["d1"].title == "A title" and docs["d1"].text == "body <here> more"
    assert docs["d2"].text == "one line" and docs["d2"].title is None


def test_trec_docs_errors_name_line(tmp_path):
    with pytest.raises(InputError, match=r"docs.trec:4: <DOC> without a <DOCNO>"):
        read_trec_docs(write(tmp_path / "docs.trec", "<DOC>\n<DOCNO>1</DOCNO>x\n</DOC>\n<DOC>\ntext\n</DOC>\n"))
    with pytest.raises(InputError, match=r"dup.trec:2: DOCNO 1 appears twice"):
        read_trec_docs(write(tmp_path / "dup.trec", "<DOC><DOCNO>1</DOCNO>a</DOC>\n<DOC><DOCNO>1</DOCNO>b</DOC>\n"))
    with pytest.raises(InputError, match=r"stray.trec:2: text outside a <doc>...</doc> block"):
        read_trec_docs(write(tmp_path / "stray.trec", "<DOC><DOCNO>1</DOCNO>a</DOC>\nstray\n"))


def test_real_vaswani_docs_topics_qrels():
    root = shared_data("vaswani")
    docs = read_trec_docs(root / "doc-text.trec")
    assert len(docs) == 11429
    assert docs["1"].text.startswith("compact memories have flexible capacities")
    topics = read_topics(root / "query-text.trec")
    assert len(topics) == 93
    assert topics["1"] == "MEASUREMENT OF DIELECTRIC CONSTANT OF LIQUIDS BY THE USE OF MICROWAVE TECHNIQUES"
    qrels = read_qrels(root / "qrels")
    assert len(qrels) == 93 and sum(len(v) for v in qrels.values()) == 2083
    first = next(iter_trec_docs(root / "doc-text.trec"))
    assert first[0] == 1
