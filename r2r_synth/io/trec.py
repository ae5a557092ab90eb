"""TREC-style files: qrels, runs, topics and SGML document collections.

- qrels: TREC (`qid Q0 docid grade`, whitespace-separated; the second column is ignored) or BEIR
  (`query-id<TAB>corpus-id<TAB>score` with a header line). `read_qrels` takes either.
- runs: `qid Q0 docid rank score tag` (what trec_eval and ir-measures read); whitespace and `%` in
  ids are percent-encoded on writing and decoded on reading (see `write_run`).
- topics: `qid<TAB>text` TSV, or TREC `<top><num>..</num><title>..</title></top>` SGML.
- documents: TREC SGML, `<DOC><DOCNO>id</DOCNO> text </DOC>` (an optional `<TITLE>` becomes the title).

Every reader raises `InputError` naming `path:line`, what is wrong, and the fix. Files ending in
`.gz` are read transparently.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import quote, unquote

from r2r_synth.errors import InputError
from r2r_synth.io.text import first_line, iter_lines
from r2r_synth.schemas import Candidates, Document, Query

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]

QRELS_HINT = "qrels lines are `qid Q0 docid grade` (TREC) or `query-id<TAB>corpus-id<TAB>score` with a header (BEIR)"
RUN_HINT = "run lines are `qid Q0 docid rank score tag` (TREC run format, whitespace-separated)"

# What a TREC run's id cannot hold as is (`str.split()` splits on every Unicode whitespace) and the
# escape character itself.
_ID_SPECIAL = re.compile(r"[\s%]")


def _parse_int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        # Some qrels write grades as "1.0"; accept integral floats, nothing else.
        try:
            f = float(value)
        except ValueError:
            return None
        return int(f) if f.is_integer() else None


# --------------------------------------------------------------------------- qrels


def read_qrels(path: Path | str) -> Qrels:
    """Read TREC or BEIR qrels into `{qid: {docid: grade}}` (ids as strings, grades as ints).

    The format is decided per file: 4 columns is TREC (`qid Q0 docid grade`), 3 tab-separated columns
    is BEIR (`query-id corpus-id score`, whose header line is skipped). The same (qid, docid) judged
    twice with different grades is an error (which one would be right?); an exact repeat is harmless.
    """
    path = Path(path)
    qrels: Qrels = {}
    ncols: int | None = None
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        parts = [p.strip() for p in parts]
        if ncols is None:
            ncols = len(parts)
            if ncols not in (3, 4):
                raise InputError(
                    f"{path}:{lineno}: expected 4 columns (TREC qrels) or 3 (BEIR qrels), got {ncols}",
                    hint=QRELS_HINT,
                )
            if ncols == 3 and _parse_int(parts[2]) is None:
                continue  # the BEIR header, e.g. `query-id corpus-id score`
        if len(parts) != ncols:
            raise InputError(
                f"{path}:{lineno}: expected {ncols} columns like the first line, got {len(parts)}", hint=QRELS_HINT
            )
        qid, docid, grade_s = (parts[0], parts[1], parts[2]) if ncols == 3 else (parts[0], parts[2], parts[3])
        grade = _parse_int(grade_s)
        if grade is None:
            raise InputError(f"{path}:{lineno}: relevance grade {grade_s!r} is not an integer", hint=QRELS_HINT)
        if not qid or not docid:
            raise InputError(f"{path}:{lineno}: empty qid or docid", hint=QRELS_HINT)
        judged = qrels.setdefault(qid, {})
        if docid in judged and judged[docid] != grade:
            raise InputError(
                f"{path}:{lineno}: qid {qid} docid {docid} is judged twice, with grades {judged[docid]} and {grade}",
                hint="keep one judgment per (qid, docid)",
            )
        judged[docid] = grade
    if not qrels:
        raise InputError(f"{path}: no judgments found (the file is empty)", hint=QRELS_HINT)
    return qrels


# --------------------------------------------------------------------------- runs


def read_run(path: Path | str) -> Run:
    """Read a TREC run into `{qid: {docid: score}}`, queries and documents in file order.

    Ids are percent-decoded (`%20` -> space, `%25` -> `%`), undoing what `write_run` encodes; so an
    id written by another tool with `%` and two hex digits in it (`a%41`) is read decoded (`aA`).
    """
    path = Path(path)
    run: Run = {}
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 6:
            raise InputError(f"{path}:{lineno}: expected 6 columns, got {len(parts)}", hint=RUN_HINT)
        qid, _q0, docid, _rank, score_s, _tag = parts
        qid, docid = unquote(qid), unquote(docid)
        try:
            score = float(score_s)
        except ValueError:
            raise InputError(f"{path}:{lineno}: score {score_s!r} is not a number", hint=RUN_HINT) from None
        docs = run.setdefault(qid, {})
        if docid in docs:
            raise InputError(
                f"{path}:{lineno}: docid {docid} appears twice for qid {qid}",
                hint="a run ranks each document at most once per query",
            )
        docs[docid] = score
    if not run:
        raise InputError(f"{path}: no run lines found (the file is empty)", hint=RUN_HINT)
    return run


def ranked(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """Documents best first; ties broken by docid (descending, as trec_eval does) so order is stable."""
    return sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)


def _encode_id(value: str) -> str:
    return _ID_SPECIAL.sub(lambda m: quote(m.group(), safe=""), value)


def write_run(path: Path | str, run: Mapping[str, Mapping[str, float]], *, tag: str = "r2r-synth") -> Path:
    """Write `run` as a TREC run (ranks from 1, best first), atomically (temp file + rename).

    TREC columns are separated by whitespace, so an id cannot carry any: whitespace and `%` in qids
    and docids are percent-encoded (`a b` -> `a%20b`, tab `%09`, newline `%0A`, `%` -> `%25`).
    `read_run` decodes them; with other readers (`ir_measures.read_trec_run`, trec_eval) the ids
    come back encoded (`urllib.parse.unquote` decodes them), and every line keeps its six columns.
    """
    if not tag or any(c.isspace() for c in tag):
        raise InputError(f"run tag {tag!r} must be one non-empty word", hint="use e.g. tag='bm25'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for qid, docs in run.items():
            for rank, (docid, score) in enumerate(ranked(docs), start=1):
                fh.write(f"{_encode_id(qid)} Q0 {_encode_id(docid)} {rank} {float(score):.6f} {tag}\n")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- topics

_TAG = re.compile(r"<[^>]+>")


def _sgml_blocks(path: Path, open_tag: str, close_tag: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (first line number, lines) of each `<open_tag> ... </close_tag>` block (case-insensitive)."""
    start: int | None = None
    buf: list[str] = []
    for lineno, line in iter_lines(path):
        low = line.strip().lower()
        if start is None:
            if low.startswith(open_tag):
                start, buf = lineno, [line[line.lower().index(open_tag) + len(open_tag):]]
                if close_tag in low:
                    yield start, buf
                    start = None
            elif low:
                raise InputError(
                    f"{path}:{lineno}: text outside a {open_tag}...{close_tag} block",
                    hint=f"every entry must be wrapped in {open_tag} ... {close_tag}",
                )
            continue
        buf.append(line)
        if close_tag in low:
            yield start, buf
            start = None
    if start is not None:
        raise InputError(f"{path}:{start}: {open_tag} block is never closed", hint=f"add the missing {close_tag}")


def _field(block: str, tag: str) -> str | None:
    """Text of `<tag>` in an SGML block: up to its closing tag, or (TREC topics leave `<num>`,
    `<title>` unclosed) up to the next tag."""
    m = re.search(rf"<{tag}>(.*?)(?:</{tag}>|(?=<[a-z/]))", block, flags=re.DOTALL | re.IGNORECASE)
    if m is None:
        return None
    return " ".join(m.group(1).split())


def read_topics(path: Path | str) -> dict[str, str]:
    """Read topics into `{qid: text}` in file order: `qid<TAB>text` TSV or TREC `<top>` SGML (the
    `<title>` is the query; a `Number:` prefix in `<num>` is stripped)."""
    path = Path(path)
    topics: dict[str, str] = {}
    if first_line(path).lower().startswith("<top>"):
        for lineno, lines in _sgml_blocks(path, "<top>", "</top>"):
            block = "".join(lines)
            num, title = _field(block, "num"), _field(block, "title")
            if num is None or title is None:
                raise InputError(
                    f"{path}:{lineno}: topic without <num> or <title>", hint="each <top> needs <num>qid</num> and <title>"
                )
            qid, text = num.split(":")[-1].strip(), html.unescape(title)
            if not qid or not text:
                raise InputError(f"{path}:{lineno}: topic with an empty {'<num>' if not qid else '<title>'}",
                                 hint="each <top> needs <num>qid</num> and a <title> with the query text")
            _put_unique(topics, qid, text, path, lineno, "qid")
        return topics
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) != 2:
            raise InputError(
                f"{path}:{lineno}: expected `qid<TAB>query text`, got {len(parts)} tab-separated fields",
                hint="topics are one `qid<TAB>text` per line, or TREC <top> blocks",
            )
        if not parts[0] or not parts[1]:
            raise InputError(f"{path}:{lineno}: empty {'qid' if not parts[0] else 'query text'}",
                             hint="topics are one `qid<TAB>text` per line, both non-empty")
        _put_unique(topics, parts[0], parts[1], path, lineno, "qid")
    if not topics:
        raise InputError(f"{path}: no topics found (the file is empty)", hint="give one `qid<TAB>text` per line")
    return topics


def _put_unique(d: dict[str, str], key: str, value: str, path: Path, lineno: int, what: str) -> None:
    if key in d:
        raise InputError(f"{path}:{lineno}: {what} {key} appears twice", hint=f"each {what} must be unique")
    d[key] = value


# --------------------------------------------------------------------------- documents


def iter_trec_docs(path: Path | str) -> Iterator[tuple[int, Document]]:
    """Yield (line, Document) for each `<DOC>` of a TREC SGML file. The body is every line that is
    not DOCNO/TITLE, with SGML tags (e.g. `<TEXT>`) removed and entities unescaped."""
    path = Path(path)
    for lineno, lines in _sgml_blocks(path, "<doc>", "</doc>"):
        block = "".join(lines)
        docno = _field(block, "docno")
        if not docno:
            raise InputError(f"{path}:{lineno}: <DOC> without a <DOCNO>", hint="each <DOC> needs <DOCNO>id</DOCNO>")
        title = _field(block, "title")
        body = re.sub(r"<docno>.*?</docno>|<title>.*?</title>", " ", block, flags=re.DOTALL | re.IGNORECASE)
        body = html.unescape(" ".join(_TAG.sub(" ", body).split()))
        yield lineno, Document(docid=docno, text=body, title=html.unescape(title) if title else None)


def read_trec_docs(path: Path | str) -> dict[str, Document]:
    """All documents of a TREC SGML file, `{docid: Document}` in file order; a repeated DOCNO is an error."""
    docs: dict[str, Document] = {}
    for lineno, doc in iter_trec_docs(path):
        if doc.docid in docs:
            raise InputError(f"{path}:{lineno}: DOCNO {doc.docid} appears twice", hint="each DOCNO must be unique")
        docs[doc.docid] = doc
    return docs


# --------------------------------------------------------------------------- run + corpus


def candidates_from_run(
    run_path: Path | str,
    *,
    corpus: Path | str | Mapping,
    queries: Path | str | Mapping[str, str],
    qrels: Path | str | Qrels | None = None,
    depth: int | None = None,
) -> list[Candidates]:
    """Candidates from a TREC run plus the texts it points at (for `evaluate --input run.trec --corpus ...`).

    Args:
        run_path: a TREC run (`qid Q0 docid rank score tag`); queries keep the run's order, documents
            are ranked by score.
        corpus: a BEIR corpus.jsonl, a TREC SGML document file, a BEIR/TREC collection directory, or a
            mapping docid -> Document.
        queries: a BEIR queries.jsonl, a topics file (TSV or TREC SGML), or a mapping qid -> text.
        qrels: a qrels path or mapping, for gold labels.
        depth: keep the top K documents per query.

    Raises:
        InputError: a run docid is missing from the corpus or a qid from the queries (both name the
            run's line), or any file is malformed.
    """
    from r2r_synth.io import beir
    from r2r_synth.io.candidates import apply_qrels

    run_path = Path(run_path)
    run = read_run(run_path)
    docs = corpus if isinstance(corpus, Mapping) else beir.read_any_corpus(Path(corpus))
    texts = queries if isinstance(queries, Mapping) else beir.read_any_queries(Path(queries))
    gold = read_qrels(qrels) if isinstance(qrels, (str, Path)) else qrels

    def line_of(qid: str, docid: str | None = None) -> int:
        # Only on error: find the run line that names the missing id.
        for i, line in iter_lines(run_path):
            parts = [unquote(p) for p in line.split()]
            if parts and parts[0] == qid and (docid is None or parts[2] == docid):
                return i
        return 0

    out: list[Candidates] = []
    for qid, scored in run.items():
        if qid not in texts:
            raise InputError(f"{run_path}:{line_of(qid)}: qid {qid} is not among the queries", hint=RUN_HINT
                             + "; give the queries file of the collection the run was made on")
        order = ranked(scored)[:depth] if depth else ranked(scored)
        documents = []
        for docid, _ in order:
            d = docs.get(docid)
            if d is None:
                raise InputError(f"{run_path}:{line_of(qid, docid)}: docid {docid} is not in the corpus",
                                 hint="give the corpus the run was made on")
            documents.append(d if isinstance(d, Document) else Document(docid=docid, text=str(d)))
        out.append(Candidates(query=Query(qid=qid, text=texts[qid]), documents=documents,
                              scores=[s for _, s in order]))
    if gold is not None:
        out = apply_qrels(out, gold, qrels_path=qrels if isinstance(qrels, (str, Path)) else None)
    return out
