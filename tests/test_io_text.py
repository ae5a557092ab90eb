"""Every reader in r2r_synth.io on files that are not UTF-8, broken `.gz` files, directories and
JSON too deep to parse: an InputError naming `path:line` and the fix, never a traceback."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from r2r_synth.errors import InputError
from r2r_synth.io.beir import read_corpus, read_queries
from r2r_synth.io.candidates import load_candidates
from r2r_synth.io.jsonl import iter_json_lines
from r2r_synth.io.r2r import read_r2r
from r2r_synth.io.text import first_line, iter_lines
from r2r_synth.io.trec import read_qrels, read_run, read_topics, read_trec_docs

GOOD_LINES = 2000  # ~40 KB: the bad byte lies well past the first buffered chunk (8 KB)


def rankgpt_line(i: int) -> str:
    return json.dumps({"query": f"query {i}", "hits": [{"qid": i, "docid": f"d{i}", "content": "text", "score": 1.0}]})


def candidates_line(i: int) -> str:
    return json.dumps({"query": {"qid": str(i), "text": "q"}, "documents": [{"docid": "a", "text": "t"}]})


def r2r_line(i: int) -> str:
    return json.dumps({"query": "q", "qid": i, "unsorted_docs": ["a"], "re_rank_id": [1]})


# (file name, the i-th good line, the bad line with "é" where the file is Latin-1, the reader)
READERS: dict[str, tuple[str, Callable[[int], str], str, Callable[[Path], object]]] = {
    "json lines": ("rows.jsonl", lambda i: json.dumps({"i": i}), '{"i": "café"}', lambda p: list(iter_json_lines(p))),
    "candidates jsonl": ("c.jsonl", candidates_line, '{"query": {"qid": "x", "text": "café"}}', load_candidates),
    "rankgpt jsonl": ("r.jsonl", rankgpt_line, '{"query": "café", "hits": []}', load_candidates),
    "rankgpt json": ("r.json", lambda i: ("[" if i == 0 else ",") + rankgpt_line(i),
                     ',{"query": "café", "hits": []}]', load_candidates),
    "trec qrels": ("qrels.txt", lambda i: f"q{i} Q0 d{i} 1", "q Q0 café 1", read_qrels),
    "beir qrels": ("test.tsv", lambda i: "query-id\tcorpus-id\tscore" if i == 0 else f"q{i}\td{i}\t1",
                   "q\tcafé\t1", read_qrels),
    "trec run": ("run.trec", lambda i: f"q Q0 d{i} {i + 1} 1.0 t", "q Q0 café 0 0.5 t", read_run),
    "tsv topics": ("topics.tsv", lambda i: f"{i}\tquery {i}", "x\tcafé", read_topics),
    "sgml topics": ("topics.trec", lambda i: f"<top><num>{i}</num><title>q</title></top>",
                    "<top><num>x</num><title>café</title></top>", read_topics),
    "trec documents": ("docs.trec", lambda i: f"<DOC><DOCNO>{i}</DOCNO>text</DOC>",
                       "<DOC><DOCNO>x</DOCNO>café</DOC>", read_trec_docs),
    "beir corpus": ("corpus.jsonl", lambda i: json.dumps({"_id": str(i), "text": "t"}),
                    '{"_id": "x", "text": "café"}', read_corpus),
    "beir queries": ("queries.jsonl", lambda i: json.dumps({"_id": str(i), "text": "t"}),
                     '{"_id": "x", "text": "café"}', read_queries),
    "r2r release": ("msmarco.jsonl", r2r_line, '{"query": "café", "qid": 1}', read_r2r),
}


def write_latin1_tail(path: Path, good: Callable[[int], str], bad: str, *, n_good: int) -> Path:
    """`n_good` UTF-8 lines, then `bad` encoded as Latin-1 (its "é" is the byte 0xe9, not UTF-8)."""
    data = "".join(good(i) + "\n" for i in range(n_good)).encode("utf-8") + bad.encode("latin-1") + b"\n"
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("reader", list(READERS))
def test_a_latin1_byte_deep_in_the_file_names_line_byte_and_column(tmp_path, reader, gz):
    name, good, bad, read = READERS[reader]
    path = write_latin1_tail(tmp_path / (name + (".gz" if gz else "")), good, bad, n_good=GOOD_LINES)
    column = bad.index("é") + 1
    with pytest.raises(InputError, match=rf"{path.name}:{GOOD_LINES + 1}: not valid UTF-8 \(byte 0xe9 at column {column}\)"
                       ) as e:
        read(path)
    fix = f"gunzip -c {path} | iconv -f latin1 -t utf-8 | gzip" if gz else f"iconv -f latin1 -t utf-8 {path}"
    assert fix in e.value.hint


@pytest.mark.parametrize("reader", list(READERS))
def test_a_latin1_byte_on_the_first_line(tmp_path, reader):
    # The first line is where the format is sniffed (candidates, topics): the error is the same.
    name, good, bad, read = READERS[reader]
    path = write_latin1_tail(tmp_path / name, good, bad, n_good=0)
    with pytest.raises(InputError, match=rf"{name}:1: not valid UTF-8 \(byte 0xe9 at column {bad.index('é') + 1}\)"):
        read(path)


def test_the_column_counts_characters_not_bytes(tmp_path):
    path = tmp_path / "rows.jsonl"
    prefix = '{"a": "über €", "b": "'  # 22 characters, 25 bytes
    path.write_bytes(prefix.encode() + b"\xe9" + b'"}\n')
    with pytest.raises(InputError, match=r"rows.jsonl:1: not valid UTF-8 \(byte 0xe9 at column 23\)"):
        list(iter_json_lines(path))


def test_a_utf16_file_gets_the_utf16_fix(tmp_path):
    path = tmp_path / "cands.json"
    path.write_bytes('[{"query": "q", "hits": []}]\n'.encode("utf-16"))  # BOM first, as PowerShell writes
    with pytest.raises(InputError, match=r"cands.json:1: not valid UTF-8 \(byte 0xff at column 1\)") as e:
        load_candidates(path)
    assert f"iconv -f utf-16 -t utf-8 {path} > fixed.json" in e.value.hint


def test_a_utf8_byte_order_mark_is_not_part_of_the_first_id(tmp_path):
    qrels = tmp_path / "qrels.txt"
    qrels.write_bytes("1 Q0 a 2\n".encode("utf-8-sig"))
    assert read_qrels(qrels) == {"1": {"a": 2}}
    cands = tmp_path / "cands.json"
    cands.write_bytes(("[" + rankgpt_line(1) + "]").encode("utf-8-sig"))
    assert load_candidates(cands, qrels=qrels)[0].qrels == {"a": 2}  # qid 1 is judged: it is "1", not "\ufeff1"


def test_a_gz_file_that_is_not_gzip(tmp_path):
    path = tmp_path / "corpus.jsonl.gz"
    path.write_text('{"_id": "1", "text": "plain text"}\n')
    with pytest.raises(InputError, match=r"corpus.jsonl.gz:1: not readable as gzip data \(Not a gzipped file") as e:
        read_corpus(path)
    assert "drop the .gz ending" in e.value.hint


def test_a_truncated_gz_file_names_the_line_it_breaks_off_at(tmp_path):
    path = tmp_path / "qrels.txt.gz"
    data = gzip.compress("".join(f"q{i} Q0 d{i} 1\n" for i in range(20000)).encode())
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"qrels.txt.gz:\d+: not readable as gzip data \(Compressed file ended") as e:
        read_qrels(path)
    line = int(re.search(r"gz:(\d+):", str(e.value)).group(1))
    assert 1 < line < 20000


def test_a_directory_where_a_file_is_expected(tmp_path):
    for read in (lambda p: list(iter_json_lines(p)), read_corpus, read_qrels, read_run, read_topics):
        with pytest.raises(InputError, match=rf"{tmp_path}: is a directory, not a file"):
            read(tmp_path)


@pytest.mark.parametrize(("name", "text"), [("deep.json", "[" * 100_000), ("deep.jsonl", '{"a": ' * 100_000)])
def test_json_nested_too_deeply(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text + "\n")
    with pytest.raises(InputError, match=rf"{name}:1: JSON nested too deeply to read"):
        load_candidates(path)


def test_iter_lines_keeps_newlines_and_counts_from_one(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"a\r\n\nb")
    assert list(iter_lines(path)) == [(1, "a\n"), (2, "\n"), (3, "b")]
    assert first_line(path) == "a"
